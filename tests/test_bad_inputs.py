"""Bad input files end in one clear error naming the file (line, column, key) or the layer,
what was expected and what was found; what Caffe accepts is still accepted (issue 17)."""
import io
import logging
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import blob_limits
from minicaffe.blob import Blob
from minicaffe.blob_limits import check_blob_size
from minicaffe.data.db import LMDBWriter
from minicaffe.data.imageset import read_image_list
from minicaffe.errors import BlobSizeError, LayerError, MiniCaffeError, PrototxtError
from minicaffe.io.protobinary import read_mean
from minicaffe.io.prototxt import read_prototxt
from minicaffe.net_weights import read_weights
from minicaffe.proto import caffe_pb2 as pb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, content):
    with open(path, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    return str(path)


def raw_datum(c, h, w, label=0):
    return pb.Datum(channels=c, height=h, width=w, data=bytes(c * h * w),
                    label=label).SerializeToString()


def lmdb(path, values):
    with LMDBWriter(str(path)) as w:
        for i, v in enumerate(values):
            w.put(b"%08d" % i, v)
    return str(path)


def net_file(tmp_path, layers):
    return write(tmp_path / "net.prototxt", layers)


def data_net(tmp_path, source, transform=""):
    return net_file(tmp_path, f'''
layer {{ name: "data" type: "Data" top: "data" top: "label" {transform}
  data_param {{ source: "{source}" batch_size: 2 backend: LMDB }} }}''')


def run_net(path, iterations=1):
    net = caffe.Net(path, caffe.TEST)
    for _ in range(iterations):
        net.forward()
    return net


INPUT_IP = '''
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "out"
  inner_product_param { num_output: 2 } }'''


# -- prototxt: Parse, not Merge ------------------------------------------------------------------
def test_non_repeated_field_twice_is_refused_with_line_and_column(tmp_path):
    path = write(tmp_path / "solver.prototxt",
                 'base_lr: 0.1\nlr_policy: "fixed"\nlr_policy: "step"\n')
    with pytest.raises(PrototxtError, match=rf'^{re.escape(path)}:3:\d+: .*"lr_policy"'):
        read_prototxt(path, pb.SolverParameter())


def test_nested_field_twice_is_refused(tmp_path):
    path = write(tmp_path / "net.prototxt", INPUT_IP.replace("num_output: 2",
                                                             "num_output: 2\n num_output: 3"))
    with pytest.raises(PrototxtError, match=rf"^{re.escape(path)}:5:\d+: .*num_output"):
        read_prototxt(path, pb.NetParameter())


def test_repeated_fields_may_repeat(tmp_path):
    path = write(tmp_path / "s.prototxt", 'test_iter: 1\ntest_iter: 2\nstepvalue: 3\n'
                 'stepvalue: 5\n')
    p = read_prototxt(path, pb.SolverParameter())
    assert list(p.test_iter) == [1, 2] and list(p.stepvalue) == [3, 5]


def test_parse_clears_what_was_there():
    # Parse semantics: the message holds the text's fields only, never leftovers.
    from minicaffe.io.prototxt import parse_text
    p = pb.SolverParameter(base_lr=0.5, max_iter=7)
    parse_text("max_iter: 3", p)
    assert p.max_iter == 3 and not p.HasField("base_lr")


def test_binary_file_given_as_prototxt_says_what_it_holds(tmp_path):
    model = pb.NetParameter(name="n")
    lp = model.layer.add(name="ip", type="InnerProduct")
    lp.blobs.add().data.extend([0.5, 0.25])
    path = write(tmp_path / "w.caffemodel", model.SerializeToString())
    with pytest.raises(PrototxtError, match=rf"^{re.escape(path)}: not a text prototxt: it "
                                            r"holds a caffe.NetParameter \(.caffemodel\)"):
        read_prototxt(path, pb.NetParameter())


def test_invalid_utf8_in_a_string_is_accepted_as_caffe_does(tmp_path):
    path = write(tmp_path / "n.prototxt", b'name: "caf\xe9"\n')
    assert read_prototxt(path, pb.NetParameter()).name.startswith("caf")


# -- LMDB ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("position", [0, 1])
def test_lmdb_value_not_a_datum_names_source_key_and_bytes(tmp_path, position):
    values = [raw_datum(1, 2, 2)] * 4
    values[position] = b"\xff\xfe\x00junk"
    src = lmdb(tmp_path / "db", values)
    with pytest.raises(LayerError, match=rf"Data layer 'data': LMDB {re.escape(src)}: record "
                                         rf"'0000000{position}' is not a caffe.Datum .*"
                                         r"7 bytes starting ff fe 00 6a"):
        run_net(data_net(tmp_path, src))


def test_lmdb_value_of_another_message_is_not_a_datum(tmp_path):
    src = lmdb(tmp_path / "db", [pb.NetParameter(name="x").SerializeToString()] * 2)
    with pytest.raises(LayerError, match="record '00000000' is not a caffe.Datum"):
        run_net(data_net(tmp_path, src))


def test_lmdb_records_of_different_sizes_name_both_keys(tmp_path):
    src = lmdb(tmp_path / "db", [raw_datum(1, 2, 2), raw_datum(1, 3, 3)] * 2)
    with pytest.raises(LayerError, match=r"'00000000' is \(1, 2, 2\), '00000001' is "
                                         r"\(1, 3, 3\)"):
        run_net(data_net(tmp_path, src))


def test_lmdb_records_of_different_sizes_with_crop_are_accepted(tmp_path):
    # Caffe crops each record; sizes may differ when every one is at least the crop.
    src = lmdb(tmp_path / "db", [raw_datum(1, 4, 4, 1), raw_datum(1, 3, 3, 2)] * 2)
    net = run_net(data_net(tmp_path, src, "transform_param { crop_size: 2 }"))
    assert net.blobs["data"].data.shape == (2, 1, 2, 2)
    assert sorted(net.blobs["label"].data.tolist()) == [1.0, 2.0]


def test_lmdb_record_with_too_few_bytes_names_its_key(tmp_path):
    bad = pb.Datum(channels=1, height=2, width=2, data=b"abc").SerializeToString()
    src = lmdb(tmp_path / "db", [raw_datum(1, 2, 2), bad])
    with pytest.raises(LayerError, match=r"record '00000001' of LMDB .* holds 3 data bytes but "
                                         r"its shape 1x2x2 needs 4"):
        run_net(data_net(tmp_path, src))


def test_lmdb_encoded_record_that_is_no_image(tmp_path):
    bad = pb.Datum(encoded=True, data=b"notanimage").SerializeToString()
    src = lmdb(tmp_path / "db", [bad, bad])
    with pytest.raises(LayerError, match=r"could not decode first record '00000000' of .*"
                                         r"not an image of a known format, starting 6e 6f"):
        run_net(data_net(tmp_path, src))


@pytest.mark.parametrize("kind, message", [
    ("missing", r"LMDB .*missing: no such directory"),
    ("leveldb", r"is a LevelDB database: LevelDB is not supported"),
    ("file", r"is not an LMDB database: it is a file"),
    ("empty", r"is an empty LMDB"),
])
def test_lmdb_sources_that_are_not_one(tmp_path, kind, message):
    src = str(tmp_path / kind)
    if kind == "leveldb":
        os.makedirs(src)
        write(os.path.join(src, "CURRENT"), "MANIFEST-000001\n")
    elif kind == "file":
        write(src, "x")
    elif kind == "empty":
        lmdb(src, [])
    with pytest.raises(LayerError, match=rf"^Data layer 'data': .*{message}"):
        run_net(data_net(tmp_path, src))


# -- sizes ---------------------------------------------------------------------------------------
def test_blob_count_limit_is_int_max(monkeypatch):
    monkeypatch.setattr(blob_limits, "physical_memory", lambda: 1 << 60)
    assert check_blob_size((2 ** 31 - 1,), np.float32) == 2 ** 31 - 1   # checked, not allocated
    with pytest.raises(BlobSizeError, match=r"blob shape 2 x 1073741824 holds 2147483648 "
                                            r"values: blob size exceeds INT_MAX \(2147483647\)"):
        check_blob_size((2, 2 ** 30), np.float32)


def test_blob_larger_than_physical_memory_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(blob_limits, "physical_memory", lambda: 1000)
    assert Blob((250,)).count == 250                                   # 1000 bytes fit
    with pytest.raises(BlobSizeError, match=r"blob shape 251 needs .* GiB, more than this "
                                            r"machine's physical memory"):
        Blob((251,))
    with pytest.raises(BlobSizeError):
        Blob((126,), dtype=np.float64)                                 # 1008 bytes


def test_out_of_memory_allocating_a_blob_names_its_shape():
    class FullDevice:
        @staticmethod
        def zeros(n, dtype):
            raise MemoryError("out of memory")
    with pytest.raises(BlobSizeError, match=r"blob shape 4 x 256: out of device memory "
                                            r"allocating 0.0 GiB"):
        Blob((4, 256), xp=FullDevice)


def test_blob_of_1e12_values_fails_at_once():
    t = time.perf_counter()
    with pytest.raises(BlobSizeError, match="exceeds INT_MAX"):
        Blob((10 ** 6, 10 ** 6))
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("layers, layer", [
    ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 '
     'dim: 8 dim: 8 } } }\nlayer { name: "conv" type: "Convolution" bottom: "data" top: "c" '
     'convolution_param { num_output: 100000000 kernel_size: 3 } }', "Convolution layer 'conv'"),
    ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1000000000000 } '
     '} }', "Input layer 'in'"),
])
def test_huge_layer_fails_within_a_second_naming_the_layer(tmp_path, layers, layer):
    path = net_file(tmp_path, layers)
    t = time.perf_counter()
    with pytest.raises(LayerError, match=rf"^{layer}: blob shape .* exceeds INT_MAX"):
        caffe.Net(path, caffe.TEST)
    assert time.perf_counter() - t < 1.0


# -- weights and mean files ----------------------------------------------------------------------
def _solverstate():
    st = pb.SolverState(iter=5, current_step=2)
    st.history.add().data.extend([1.0, 2.0])
    return st.SerializeToString()


def _blobproto():
    bp = pb.BlobProto()
    bp.shape.dim.extend([1, 3, 2, 2])
    bp.data.extend([0.0] * 12)
    return bp.SerializeToString()


@pytest.mark.parametrize("content, holds", [
    (_solverstate(), r"it holds a caffe.SolverState \(.solverstate\)"),
    (pb.SolverState(iter=5, learned_net="x.caffemodel").SerializeToString(),
     r"it holds a caffe.SolverState \(.solverstate\)"),
    (_blobproto(), r"it holds a caffe.BlobProto \(.binaryproto, e.g. a mean file\)"),
    (b"", r"it holds nothing \(an empty file\)"),
])
def test_weights_file_without_layers_says_what_it_holds(tmp_path, content, holds):
    path = write(tmp_path / "w.caffemodel", content)
    # Those that parse as a NetParameter (with no layers) and those that do not, alike.
    with pytest.raises(MiniCaffeError, match=rf"^{re.escape(path)}: not a (.caffemodel: it has "
                                             rf"no layers|valid binary NetParameter \(.*\)); "
                                             rf"{holds}$"):
        read_weights(path)


@pytest.mark.parametrize("content, holds", [
    (bytes(range(200, 256)) * 4, r"224 bytes of no known Caffe message, starting c8 c9 ca"),
    (INPUT_IP, r"text, not a binary message \(a prototxt\?\), starting '\\nlayer"),
])
def test_weights_file_that_does_not_parse(tmp_path, content, holds):
    path = write(tmp_path / "w.caffemodel", content)
    with pytest.raises(MiniCaffeError, match=rf"^{re.escape(path)}: not a valid binary "
                                             rf"NetParameter \(.*\); it holds {holds}"):
        read_weights(path)


def test_weights_path_that_is_a_directory(tmp_path):
    with pytest.raises(MiniCaffeError, match="is a directory, expected a binary caffemodel"):
        read_weights(str(tmp_path))


def test_netparameter_without_layers_only_warns(tmp_path, caplog):
    # Nothing there to copy, but it is what it claims to be: Caffe accepts it.
    path = write(tmp_path / "w.caffemodel", pb.NetParameter(name="empty").SerializeToString())
    with caplog.at_level(logging.WARNING, logger="minicaffe"):
        src, _ = read_weights(path)
    assert src.name == "empty" and "without layers" in caplog.text


def _ip_weights(tmp_path, name, *shapes):
    model = pb.NetParameter(name="other")
    lp = model.layer.add(name=name, type="InnerProduct")
    for shape in shapes:
        b = lp.blobs.add()
        b.shape.dim.extend(shape)
        b.data.extend([0.25] * int(np.prod(shape)))
    return write(tmp_path / f"{name}.caffemodel", model.SerializeToString())


def test_weights_for_another_net(tmp_path, caplog):
    net = caffe.Net(net_file(tmp_path, INPUT_IP), caffe.TEST)
    with caplog.at_level(logging.WARNING, logger="minicaffe"):
        net.copy_from(_ip_weights(tmp_path, "zzz", (2, 3), (2,)))
    assert "no layer name matches the net" in caplog.text
    with pytest.raises(MiniCaffeError, match=r"layer 'ip' has 1 blobs in the weights file "
                                             r"\[\(2, 3\)\] but 2 in the net \[\(2, 3\), \(2,\)\]"):
        net.copy_from(_ip_weights(tmp_path, "ip", (2, 3)))
    with pytest.raises(MiniCaffeError, match=r"param 0 of layer 'ip': shape mismatch, source "
                                             r"\(2, 4\) vs target \(2, 3\)"):
        net.copy_from(_ip_weights(tmp_path, "ip", (2, 4), (2,)))


def test_matching_weights_still_copy(tmp_path, caplog):
    net = caffe.Net(net_file(tmp_path, INPUT_IP), caffe.TEST)
    with caplog.at_level(logging.WARNING, logger="minicaffe"):
        net.copy_from(_ip_weights(tmp_path, "ip", (2, 3), (2,)))
    assert "no layer name matches" not in caplog.text
    np.testing.assert_array_equal(net.params["ip"][0].data, np.full((2, 3), 0.25))


def test_mean_file_that_is_a_caffemodel(tmp_path):
    path = _ip_weights(tmp_path, "ip", (2, 3))
    with pytest.raises(MiniCaffeError, match=rf"^{re.escape(path)}: not a BlobProto "
                                             r"\(.binaryproto\): it holds a caffe.NetParameter"):
        read_mean(path)


# -- image lists and HDF5 lists ------------------------------------------------------------------
def _png(h, w):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("bad, found", [
    ("missing.png", "no such file"),
    ("text.png", r"not an image file of a known format \(5 bytes\)"),
    ("dir.png", "is a directory"),
    ("trunc.png", "truncated"),
])
@pytest.mark.parametrize("line", [1, 3])
def test_unreadable_listed_image_names_list_and_line(tmp_path, bad, found, line):
    write(tmp_path / "ok.png", _png(4, 4))
    write(tmp_path / "text.png", "hello")
    png = _png(64, 64)
    write(tmp_path / "trunc.png", png[:len(png) // 2])
    os.makedirs(tmp_path / "dir.png")
    names = ["ok.png", "ok.png", "ok.png"]
    names[line - 1] = bad
    lst = write(tmp_path / "list.txt", "".join(f"{n} 0\n" for n in names))
    path = net_file(tmp_path, f'''layer {{ name: "img" type: "ImageData" top: "data"
      top: "label" image_data_param {{ source: "{lst}" batch_size: 2
      root_folder: "{tmp_path}/" }} }}''')
    with pytest.raises(LayerError, match=rf"^ImageData layer 'img': {re.escape(lst)}:{line}: "
                                         rf"could not load image .*{bad}: .*{found}"):
        run_net(path, iterations=2)


def test_image_list_paths_keep_undecodable_bytes(tmp_path):
    lst = write(tmp_path / "list.txt", b"caf\xe9.png 1\nsub dir/\xff\xfe.jpg 2\n")
    got = read_image_list(lst)
    assert [os.fsencode(p) for p, _ in got] == [b"caf\xe9.png", b"sub dir/\xff\xfe.jpg"]
    assert [label for _, label in got] == [1, 2]


@pytest.mark.parametrize("content, message", [
    (b"a.png 0\n\x00\x01\x02 7\n", r":2: binary data, expected a text file"),
    (b"a.png 0\nb.png \xe9t\xe9\n", r":2: label '\\xe9t\\xe9' is not an integer"),
])
def test_image_list_that_is_not_text(tmp_path, content, message):
    lst = write(tmp_path / "list.txt", content)
    with pytest.raises(MiniCaffeError, match=rf"^{re.escape(lst)}{message}"):
        read_image_list(lst)


def test_image_list_that_is_a_directory(tmp_path):
    with pytest.raises(MiniCaffeError, match="is a directory, expected a text file"):
        read_image_list(str(tmp_path))


def test_hdf5_list_naming_a_missing_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "ok.h5", "w") as f:
        f["data"] = np.zeros((2, 3), np.float32)
    lst = write(tmp_path / "list.txt", f"{tmp_path}/ok.h5\n{tmp_path}/gone.h5\n")
    path = net_file(tmp_path, f'''layer {{ name: "h" type: "HDF5Data" top: "data"
      hdf5_data_param {{ source: "{lst}" batch_size: 2 }} }}''')
    with pytest.raises(LayerError, match=rf"failed opening HDF5 file .*gone.h5 \(listed in "
                                         rf"{re.escape(lst)}\): no such file"):
        run_net(path, iterations=2)


# -- Python layers -------------------------------------------------------------------------------
@pytest.mark.parametrize("source, message", [
    ("x = 1\n\nraise RuntimeError('boom at import')\n",
     r"importing python_param.module '{mod}' failed: .*{mod}.py:3: RuntimeError: boom at import"),
    ("def (\n", r"importing python_param.module '{mod}' failed: .*{mod}.py:1: SyntaxError"),
    ("import minicaffe\n", r"module '{mod}' \(.*\) has no class 'L'"),
])
def test_python_layer_module_that_fails(tmp_path, monkeypatch, source, message):
    mod = f"bad_mod_{abs(hash(source)) % 10 ** 8}"
    write(tmp_path / f"{mod}.py", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = net_file(tmp_path, f'''
layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ dim: 1 }} }} }}
layer {{ name: "py" type: "Python" bottom: "data" top: "o"
  python_param {{ module: "{mod}" layer: "L" }} }}''')
    with pytest.raises(LayerError, match="^Python layer 'py': " + message.format(mod=mod)):
        caffe.Net(path, caffe.TEST)
    sys.modules.pop(mod, None)


# -- the command: exit 1, one line, no traceback -------------------------------------------------
def test_cli_bad_inputs_exit_1_with_one_line(tmp_path):
    net = net_file(tmp_path, INPUT_IP)
    solver = write(tmp_path / "solver.prototxt",
                   f'net: "{net}"\nbase_lr: 0.1\nlr_policy: "fixed"\nlr_policy: "step"\n')
    big = write(tmp_path / "big.prototxt", INPUT_IP.replace("num_output: 2",
                                                            "num_output: 1000000000"))
    state = write(tmp_path / "x.solverstate", _solverstate())
    cases = [(["train", "--solver", solver], rf"{re.escape(solver)}:4:\d+: .*lr_policy"),
             (["time", "--model", big], r"InnerProduct layer 'ip': .*exceeds INT_MAX"),
             (["test", "--model", net, "--weights", state], r"SolverState \(.solverstate\)")]
    env = dict(os.environ, PYTHONPATH=ROOT)
    for argv, message in cases:
        r = subprocess.run([sys.executable, "-m", "minicaffe", *argv], capture_output=True,
                           text=True, env=env, timeout=60)
        errors = [line for line in r.stderr.splitlines() if line.startswith("minicaffe:")]
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert len(errors) == 1 and re.search(message, errors[0]), r.stderr


def test_an_input_reshaped_past_the_size_limit_names_the_layer(tmp_path):
    import minicaffe as caffe
    from minicaffe.errors import LayerError
    model = tmp_path / "n.prototxt"
    model.write_text('layer { name: "in" type: "Input" top: "x" '
                     'input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\n'
                     'layer { name: "conv" type: "Convolution" bottom: "x" top: "y" '
                     'convolution_param { num_output: 100000 kernel_size: 1 } }\n')
    net = caffe.Net(str(model), caffe.TEST)
    net.blobs["x"].reshape(1, 1, 200, 200)      # conv's top: 100000 x 200 x 200 > INT_MAX
    with pytest.raises(LayerError, match=r"Convolution layer 'conv'.*INT_MAX"):
        net.forward()

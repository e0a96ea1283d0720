"""CIFAR-10 tooling: download (against a local HTTP server), --from tarball / folder, conversion
to LMDBs as Caffe's convert_cifar_data, the mean image, and the bundled sample."""
import hashlib
import http.server
import io
import os
import tarfile
import threading

import numpy as np
import pytest

from minicaffe.data import cifar10 as c10
from minicaffe.data import cifar10_batches as batches
from minicaffe.data import cifar10_lmdb as c10_lmdb
from minicaffe.data import download as dl
from minicaffe.data import db as dbm
from minicaffe.errors import MiniCaffeError
from minicaffe.io import read_mean
from minicaffe.layer import create_layer
from minicaffe.blob import Blob
from minicaffe.proto import caffe_pb2

from gradcheck import layer_param

N = 4  # records per batch file in the tiny data sets


@pytest.fixture
def tiny(monkeypatch):
    """Shrink the 'full' layout to N records per batch file so tests stay small."""
    monkeypatch.setattr(batches, "BATCH_RECORDS", N)


def batch_bytes(seed, n=N):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    images = rng.integers(0, 256, (n, batches.IMAGE_BYTES), dtype=np.uint8)
    rec = np.concatenate([labels[:, None], images], axis=1)
    return rec.tobytes(), labels, images.reshape(n, 3, 32, 32)


def tiny_files(n_train_files=5, n=N):
    files = {f"data_batch_{i}.bin": batch_bytes(i, n) for i in range(1, n_train_files + 1)}
    files["test_batch.bin"] = batch_bytes(99, n)
    return files


def write_tarball(path, files, meta=True):
    with tarfile.open(path, "w:gz") as tar:
        for name, (data, _, _) in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if meta:
            m = "\n".join(c10.CLASSES).encode() + b"\n"
            info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
            info.size = len(m)
            tar.addfile(info, io.BytesIO(m))
    return str(path)


def md5(data):
    return hashlib.md5(data).hexdigest()


# -- local HTTP server --------------------------------------------------------------------------
@pytest.fixture
def server():
    routes = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in routes:
                self.send_error(404)
                return
            body, cut = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:cut] if cut is not None else body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def serve(path, body, cut=None):
        routes[path] = (body, cut)
        return base + path
    yield serve
    httpd.shutdown()
    httpd.server_close()


def test_download_checksum_match(tmp_path, server):
    body = os.urandom(300_000)
    url = server("/ok.tar.gz", body)
    dest = tmp_path / "out" / "f.tar.gz"
    dl.download(url, str(dest), md5=md5(body), progress=False, chunk=65536, log=lambda m: None)
    assert dest.read_bytes() == body
    assert not os.path.exists(f"{dest}.part")


def test_download_checksum_mismatch(tmp_path, server):
    body = os.urandom(10_000)
    url = server("/bad.tar.gz", body)
    dest = tmp_path / "f.tar.gz"
    with pytest.raises(MiniCaffeError, match="checksum mismatch"):
        dl.download(url, str(dest), md5="0" * 32, progress=False, log=lambda m: None)
    assert not dest.exists() and not os.path.exists(f"{dest}.part")


def test_download_interrupted(tmp_path, server):
    body = os.urandom(200_000)
    url = server("/cut.tar.gz", body, cut=50_000)
    dest = tmp_path / "f.tar.gz"
    with pytest.raises(MiniCaffeError, match="interrupted"):
        dl.download(url, str(dest), md5=md5(body), progress=False, chunk=8192,
                     log=lambda m: None)
    assert not dest.exists() and not os.path.exists(f"{dest}.part")
    assert os.listdir(tmp_path) == []


def test_download_unreachable_mentions_from(tmp_path, server):
    url = server("/x", b"x").replace("/x", "/missing")
    with pytest.raises(MiniCaffeError, match="--from"):
        dl.download(url, str(tmp_path / "f"), progress=False, log=lambda m: None)


def test_main_downloads_and_converts(tmp_path, server, tiny, capsys):
    files = tiny_files()
    tb = write_tarball(tmp_path / "c.tar.gz", files)
    body = open(tb, "rb").read()
    url = server("/cifar-10-binary.tar.gz", body)
    out = tmp_path / "out"
    rc = c10.main_cifar10(["--out", str(out), "--url", url, "--md5", md5(body), "--no-progress"])
    assert rc == 0
    assert (out / c10.TARBALL_NAME).read_bytes() == body
    assert dbm.num_entries(str(out / c10_lmdb.TRAIN_DB)) == 5 * N
    assert dbm.num_entries(str(out / c10_lmdb.TEST_DB)) == N
    # a second run finds the work done
    capsys.readouterr()
    assert c10.main_cifar10(["--out", str(out), "--url", url, "--md5", md5(body)]) == 0
    assert "already prepared" in capsys.readouterr().out
    # a wrong checksum on download is an error (exit status 1), nothing converted
    out2 = tmp_path / "out2"
    assert c10.main_cifar10(["--out", str(out2), "--url", url, "--md5", "1" * 32,
                             "--no-progress"]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (out2 / c10_lmdb.TRAIN_DB).exists()


# -- conversion ---------------------------------------------------------------------------------
def check_converted(out, files, train_names):
    train = list(dbm.iter_datums(str(out / c10_lmdb.TRAIN_DB)))
    n_train = sum(len(files[n][1]) for n in train_names)
    assert [k for k, _ in train] == [b"%05d" % i for i in range(n_train)]
    exp_images = np.concatenate([files[n][2] for n in train_names])
    exp_labels = np.concatenate([files[n][1] for n in train_names])
    for i, (_, d) in enumerate(train):
        assert (d.channels, d.height, d.width) == (3, 32, 32) and not d.encoded
        assert d.label == exp_labels[i]
        assert d.data == exp_images[i].tobytes()  # raw CHW bytes as stored in the file
    test = list(dbm.iter_datums(str(out / c10_lmdb.TEST_DB)))
    assert [k for k, _ in test] == [b"%05d" % i for i in range(len(files["test_batch.bin"][1]))]
    for i, (_, d) in enumerate(test):
        assert d.label == files["test_batch.bin"][1][i]
        assert d.data == files["test_batch.bin"][2][i].tobytes()
    mean = read_mean(str(out / c10_lmdb.MEAN_FILE))
    assert mean.shape == (3, 32, 32)
    np.testing.assert_allclose(mean, exp_images.astype(np.float64).mean(axis=0), rtol=1e-6)
    bp = caffe_pb2.BlobProto()
    bp.ParseFromString((out / c10_lmdb.MEAN_FILE).read_bytes())
    assert (bp.num, bp.channels, bp.height, bp.width) == (1, 3, 32, 32)


def test_convert_tiny_tarball_as_caffe(tmp_path, tiny, capsys):
    files = tiny_files()
    tb = write_tarball(tmp_path / "c.tar.gz", files)
    out = tmp_path / "out"
    assert c10.main_cifar10(["--from", tb, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "differs from the official" in text and "verifying the structure and sizes" in text
    check_converted(out, files, list(batches.TRAIN_FILES))
    assert (out / batches.META_FILE).read_text().split() == list(c10.CLASSES)


def test_convert_extracted_folder(tmp_path, tiny, capsys):
    files = tiny_files()
    folder = tmp_path / "x" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for n, (data, _, _) in files.items():
        (folder / n).write_bytes(data)
    out = tmp_path / "out"
    # the parent folder works as well as the batches folder itself
    assert c10.main_cifar10(["--from", str(tmp_path / "x"), "--out", str(out),
                             "--no-progress"]) == 0
    assert "no checksum" in capsys.readouterr().out
    check_converted(out, files, list(batches.TRAIN_FILES))


def test_official_md5_is_reported(tmp_path, tiny, capsys):
    files = tiny_files()
    tb = write_tarball(tmp_path / "c.tar.gz", files)
    c10.prepare_cifar10(str(tmp_path / "out"), tb, md5=dl.md5_file(tb), progress=False)
    assert "matches the official" in capsys.readouterr().out


def test_structure_errors(tmp_path, tiny):
    files = tiny_files()
    raw = {n: v[0] for n, v in files.items()}
    with pytest.raises(MiniCaffeError, match="data_batch_3.bin is missing"):
        batches.verify_layout({k: v for k, v in raw.items() if k != "data_batch_3.bin"})
    bad = dict(raw, **{"test_batch.bin": raw["test_batch.bin"][:-1]})
    with pytest.raises(MiniCaffeError, match="test_batch.bin has .* bytes, expected"):
        batches.verify_layout(bad)
    lab = bytearray(raw["data_batch_1.bin"])
    lab[batches.RECORD_BYTES] = 10
    with pytest.raises(MiniCaffeError, match="label 10"):
        batches.verify_layout(dict(raw, **{"data_batch_1.bin": bytes(lab)}))
    not_tar = tmp_path / "x.tar.gz"
    not_tar.write_bytes(b"hello")
    with pytest.raises(MiniCaffeError, match="not a readable tarball"):
        batches.load_batches(str(not_tar))


def test_sample_layout_needs_sample_flag(tmp_path, tiny, capsys):
    files = tiny_files(n_train_files=1, n=6)
    files["test_batch.bin"] = batch_bytes(98, 3)
    tb = write_tarball(tmp_path / "s.tar.gz", files)
    out = tmp_path / "out"
    assert c10.main_cifar10(["--from", tb, "--out", str(out), "--no-progress"]) == 1
    assert "pass --sample" in capsys.readouterr().err
    assert c10.main_cifar10(["--from", tb, "--out", str(out), "--sample", "--no-progress"]) == 0
    assert "reduced sample" in capsys.readouterr().out
    check_converted(out, files, ["data_batch_1.bin"])


# -- the bundled sample -------------------------------------------------------------------------
def test_bundled_sample_layout():
    d = batches.bundled_sample_dir()
    assert d is not None
    assert os.path.getsize(os.path.join(d, "data_batch_1.bin")) == 2000 * batches.RECORD_BYTES
    assert os.path.getsize(os.path.join(d, "test_batch.bin")) == 500 * batches.RECORD_BYTES
    x, y = batches.read_records(os.path.join(d, "data_batch_1.bin"))
    assert x.shape == (2000, 3, 32, 32)
    counts = np.bincount(y, minlength=10)
    assert counts.min() > 100  # every class present
    assert 100 < x.mean() < 150 and x.std() > 40  # real images, not noise or zeros


def test_bundled_sample_converts_and_feeds_a_data_layer(tmp_path):
    out = tmp_path / "sample"
    assert c10.main_cifar10(["--sample", "--out", str(out), "--no-progress"]) == 0
    assert dbm.num_entries(str(out / c10_lmdb.TRAIN_DB)) == 2000
    assert dbm.num_entries(str(out / c10_lmdb.TEST_DB)) == 500
    x, y = batches.read_records(os.path.join(batches.bundled_sample_dir(), "test_batch.bin"))
    mean = read_mean(str(out / c10_lmdb.MEAN_FILE))
    p = layer_param(f'name: "cifar" type: "Data" top: "data" top: "label" '
                    f'transform_param {{ mean_file: "{out / c10_lmdb.MEAN_FILE}" scale: 0.00390625 }} '
                    f'data_param {{ source: "{out / c10_lmdb.TEST_DB}" batch_size: 100 '
                    f'backend: LMDB }}', caffe_pb2.TEST)
    layer = create_layer(p)
    top = [Blob(), Blob()]
    layer.setup([], top)
    for b in range(6):  # wraps after 5 batches
        layer.forward([], top)
        idx = np.arange(b * 100, b * 100 + 100) % 500
        np.testing.assert_array_equal(top[1].data, y[idx])
        np.testing.assert_allclose(top[0].data, (x[idx].astype(np.float32) - mean) / 256,
                                   rtol=1e-6, atol=1e-6)
    layer.close()

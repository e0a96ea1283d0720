"""Data pipeline: LMDB of Datums, DataTransformer, image I/O, Data / ImageData / HDF5Data layers,
convert_imageset and compute_image_mean."""
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image

import minicaffe
from minicaffe.blob import Blob
from minicaffe.data import db as dbm
from minicaffe.data.image import decode_image, encode_image, read_image, resize_bilinear
from minicaffe.data.imageset import convert_imageset, read_image_list
from minicaffe.data.mean import compute_image_mean
from minicaffe.data.data_transformer import DataTransformer
from minicaffe.errors import LayerError, MiniCaffeError
from minicaffe.io import read_mean
from minicaffe.layer import create_layer
from minicaffe.proto import caffe_pb2

from gradcheck import layer_param

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


# -- helpers ------------------------------------------------------------------------------------
def write_db(path, arrays, labels=None, encoded=None):
    """An LMDB with keys %05d; arrays are (C,H,W) uint8 / float; encoded='png' stores PNG."""
    with dbm.LMDBWriter(str(path), commit_every=3) as w:
        for i, a in enumerate(arrays):
            lab = i if labels is None else labels[i]
            if encoded:
                d = caffe_pb2.Datum(data=encode_image(a, encoded), label=int(lab), encoded=True)
            else:
                d = dbm.array_to_datum(a, lab)
            w.put(b"%05d" % i, d.SerializeToString())
    return str(path)


def indexed_images(n, shape=(3, 4, 5)):
    """Image i is filled with a pattern that encodes i (pixel = (10*i + position) % 256)."""
    size = int(np.prod(shape))
    return [((10 * i + np.arange(size)) % 256).astype(np.uint8).reshape(shape) for i in range(n)]


def make_layer(text, phase=TRAIN, num_top=2):
    p = layer_param(text, phase)
    layer = create_layer(p)
    top = [Blob() for _ in range(num_top)]
    layer.setup([], top)
    return layer, top


def forward(layer, top):
    layer.reshape([], top)
    layer.forward([], top)
    return [np.array(t.data, copy=True) for t in top]


def caffe_transform_loop(x, mean, mean_values, scale, crop, h_off, w_off, mirror):
    """Caffe's per-pixel DataTransformer::Transform for one (C,H,W) image, written as loops."""
    c_, h_, w_ = x.shape
    ch = crop or h_
    cw = crop or w_
    out = np.zeros((c_, ch, cw), np.float32)
    for c in range(c_):
        for h in range(ch):
            for w in range(cw):
                v = np.float32(x[c, h_off + h, w_off + w])
                if mean is not None:
                    v = np.float32(v - np.float32(mean[c, h_off + h, w_off + w]))
                elif mean_values is not None:
                    mv = mean_values[0] if len(mean_values) == 1 else mean_values[c]
                    v = np.float32(v - np.float32(mv))
                v = np.float32(v * np.float32(scale))
                out[c, h, (cw - 1 - w) if mirror else w] = v
    return out


def tparam(**kw):
    p = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if k == "mean_value":
            p.mean_value.extend(v)
        else:
            setattr(p, k, v)
    return p


def write_mean(path, mean):
    from minicaffe.data.mean import mean_to_blobproto
    from minicaffe.io import write_binary
    write_binary(mean_to_blobproto(mean), str(path))
    return str(path)


# -- LMDB and Datums ----------------------------------------------------------------------------
def test_lmdb_roundtrip_in_key_order(tmp_path):
    imgs = indexed_images(7)
    path = tmp_path / "db"
    # write out of order: the reader must give sorted keys
    with dbm.LMDBWriter(str(path), commit_every=2, map_size=1 << 16) as w:  # forces map growth
        for i in [3, 0, 6, 1, 5, 2, 4]:
            w.put("%05d" % i, dbm.array_to_datum(imgs[i], i).SerializeToString())
    assert dbm.num_entries(str(path)) == 7
    got = list(dbm.iter_datums(str(path)))
    assert [k for k, _ in got] == [b"%05d" % i for i in range(7)]
    for i, (_, d) in enumerate(got):
        assert (d.channels, d.height, d.width, d.label) == (3, 4, 5, i)
        assert not d.encoded
        np.testing.assert_array_equal(dbm.datum_to_array(d), imgs[i])


def _mapped_rss(file_path):
    """Resident bytes of this process's maps of ``file_path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:     # a mapping's header line
                inside = len(head) == 6 and head[5] == file_path
            elif inside and line.startswith("Rss:"):
                total += int(head[1]) * 1024
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux memory maps")
@pytest.mark.parametrize("drop", [True, False])
def test_lmdb_readers_keep_resident_set_flat(tmp_path, monkeypatch, drop):
    # Caffe's RSS grows to the database size (LMDB's memory map); ours drops passed pages.
    rs = np.random.RandomState(5)
    values = [rs.bytes(32 << 10) for _ in range(700)]          # ~22 MiB of records
    path = str(tmp_path / "big")
    with dbm.LMDBWriter(path, commit_every=100) as w:
        for i, v in enumerate(values):
            w.put("%05d" % i, v)
    if not drop:
        monkeypatch.setattr(dbm, "DROP_PAGES_BYTES", 1 << 40)
    data_file = os.path.join(os.path.realpath(path), "data.mdb")
    cursor = dbm.LoopingCursor(path)
    try:
        got = [cursor.next() for _ in range(2 * len(values))]  # two epochs
        looping_rss = _mapped_rss(data_file)
    finally:
        cursor.close()
    assert got == values + values                              # nothing read changes
    assert [v for _, v in dbm.iter_items(path)] == values
    one_pass_rss = _mapped_rss(data_file)
    dbm.close_env(path)
    if drop:
        assert looping_rss <= dbm.DROP_PAGES_BYTES + (1 << 20), looping_rss
        assert one_pass_rss <= dbm.DROP_PAGES_BYTES + (1 << 20), one_pass_rss
    else:   # the measurement itself sees the growth the dropping prevents
        assert looping_rss >= 20 << 20, looping_rss


def test_datum_float_data_and_errors():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    d = dbm.array_to_datum(a, 3)
    assert len(d.data) == 0 and len(d.float_data) == 24
    np.testing.assert_array_equal(dbm.datum_to_array(d), a)
    bad = caffe_pb2.Datum(channels=3, height=2, width=2, data=b"\0" * 11)
    with pytest.raises(MiniCaffeError, match="11 data bytes"):
        dbm.datum_to_array(bad)


def test_encoded_datum_decodes_to_bgr():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)       # red
    rgb[1, 2] = (0, 0, 200)       # blue
    import io
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    d = caffe_pb2.Datum(data=buf.getvalue(), encoded=True, label=1)
    chw = dbm.datum_to_array(d)
    assert chw.shape == (3, 2, 3)
    assert tuple(chw[:, 0, 0]) == (0, 0, 255)     # BGR: red lands in channel 2
    assert tuple(chw[:, 1, 2]) == (200, 0, 0)
    grey = dbm.datum_to_array(d, color=False)
    assert grey.shape == (1, 2, 3)
    assert abs(int(grey[0, 0, 0]) - round(0.299 * 255)) <= 1
    # a grey PNG decodes natively to one channel, forced colour to three equal channels
    g = np.arange(6, dtype=np.uint8).reshape(1, 2, 3) * 40
    gd = caffe_pb2.Datum(data=encode_image(g, "png"), encoded=True)
    np.testing.assert_array_equal(dbm.datum_to_array(gd), g)
    np.testing.assert_array_equal(dbm.datum_to_array(gd, color=True), np.repeat(g, 3, axis=0))
    # encode/decode roundtrip keeps BGR
    x = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_image(x, "png")), x)


def test_resize_bilinear_matches_opencv_geometry():
    x = np.array([[[0, 100], [200, 40]]], np.uint8)
    # upscale 2x2 -> 4x4: OpenCV INTER_LINEAR source coordinate (d + 0.5) / 2 - 0.5
    out = resize_bilinear(x, 4, 4)

    def ref(y, xx):
        def taps(d, n_src, n_dst):
            s = (d + 0.5) * n_src / n_dst - 0.5
            i0 = int(np.floor(s))
            f = s - i0
            if i0 < 0:
                i0, f = 0, 0.0
            if i0 >= n_src - 1:
                i0, f = n_src - 1, 0.0
            return i0, min(i0 + 1, n_src - 1), f
        y0, y1, fy = taps(y, 2, 4)
        x0, x1, fx = taps(xx, 2, 4)
        v = x[0].astype(float)
        r = (1 - fy) * ((1 - fx) * v[y0, x0] + fx * v[y0, x1]) + \
            fy * ((1 - fx) * v[y1, x0] + fx * v[y1, x1])
        return int(np.floor(r + 0.5))
    expect = np.array([[ref(i, j) for j in range(4)] for i in range(4)])
    np.testing.assert_array_equal(out[0], expect)
    assert out[0, 0, 0] == 0 and out[0, 0, 1] == 25  # 0.75*0 + 0.25*100
    # downscale by 2: each output pixel is the mean of a 2x2 block (centre between 4 pixels)
    y = np.arange(16, dtype=np.uint8).reshape(1, 4, 4) * 10
    np.testing.assert_array_equal(resize_bilinear(y, 2, 2)[0],
                                  np.floor(y[0].reshape(2, 2, 2, 2).mean(axis=(1, 3)) + 0.5))


# -- DataTransformer ----------------------------------------------------------------------------
def test_transform_scale_and_mean_values_hand_computed():
    x = np.array([[[[0, 10], [20, 255]], [[1, 2], [3, 4]]]], np.uint8)  # (1, 2, 2, 2)
    t = DataTransformer(tparam(scale=0.5), TRAIN)
    np.testing.assert_array_equal(t.transform(x)[0], x[0].astype(np.float32) * 0.5)
    t = DataTransformer(tparam(mean_value=[10, 1], scale=2), TRAIN)
    expect = np.array([[[-20, 0], [20, 490]], [[0, 2], [4, 6]]], np.float32)
    np.testing.assert_array_equal(t.transform(x)[0], expect)
    t = DataTransformer(tparam(mean_value=[2]), TRAIN)  # one value for every channel
    np.testing.assert_array_equal(t.transform(x)[0], x[0].astype(np.float32) - 2)
    out = t.transform(x)
    assert out.dtype == np.float32


def test_transform_mean_file_crop_mirror_against_caffe_loop(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (4, 3, 6, 7), dtype=np.uint8)
    mean = rng.uniform(0, 255, (3, 6, 7)).astype(np.float32)
    mf = write_mean(tmp_path / "mean.binaryproto", mean)
    t = DataTransformer(tparam(mean_file=mf, crop_size=4, scale=0.0078125, mirror=True), TRAIN)
    mirror = np.array([0, 1, 1, 0], bool)
    h_off = np.array([0, 2, 1, 2])
    w_off = np.array([3, 0, 2, 1])
    out = t.transform(x, choices=(mirror, h_off, w_off))
    assert out.shape == (4, 3, 4, 4)
    for i in range(4):
        ref = caffe_transform_loop(x[i], mean, None, 0.0078125, 4, h_off[i], w_off[i], mirror[i])
        np.testing.assert_array_equal(out[i], ref)
    # one hand-checked value: image 1 is mirrored, so top (0, 0, 0) comes from column w_off+3
    assert out[1, 0, 0, 0] == np.float32((np.float32(x[1, 0, 2, 3]) - mean[0, 2, 3]) * 0.0078125)


def test_transform_float_data_and_mean_values_crop_mirror():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    t = DataTransformer(tparam(mean_value=[0.5, -1], crop_size=3, mirror=True, scale=3), TRAIN)
    choices = (np.array([1, 0, 1]), np.array([0, 1, 2]), np.array([2, 2, 0]))
    out = t.transform(x, choices=choices)
    for i in range(3):
        ref = caffe_transform_loop(x[i], None, [0.5, -1], 3, 3, choices[1][i], choices[2][i],
                                   bool(choices[0][i]))
        np.testing.assert_allclose(out[i], ref, rtol=1e-6)


def test_transform_random_choices_train_test_and_seed():
    x = np.stack(indexed_images(64, (1, 8, 8)))
    t = DataTransformer(tparam(crop_size=5), TEST)
    out = t.transform(x)  # centre crop: offset (8 - 5) // 2 = 1
    np.testing.assert_array_equal(out, x[:, :, 1:6, 1:6].astype(np.float32))

    def run(seed):
        gen = np.random.default_rng(seed)
        return DataTransformer(tparam(crop_size=5, mirror=True), TRAIN, rng=gen).transform(x)
    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # every output is some crop of its input, possibly mirrored, with varied offsets / flips
    seen_offsets, flips = set(), 0
    for i in range(64):
        hit = None
        for ho in range(4):
            for wo in range(4):
                crop = x[i, :, ho:ho + 5, wo:wo + 5].astype(np.float32)
                if np.array_equal(a[i], crop):
                    hit = (ho, wo, False)
                elif np.array_equal(a[i], crop[..., ::-1]):
                    hit = (ho, wo, True)
        assert hit is not None
        seen_offsets.add(hit[:2])
        flips += hit[2]
    assert len(seen_offsets) > 5 and 10 < flips < 54


def test_transform_mirror_applies_in_test_phase_like_caffe():
    # Caffe: do_mirror = param.mirror() && Rand(2), whatever the phase
    x = np.stack(indexed_images(40, (1, 3, 4)))
    out = DataTransformer(tparam(mirror=True), TEST, rng=np.random.default_rng(0)).transform(x)
    flipped = [np.array_equal(out[i], x[i, :, :, ::-1]) for i in range(40)]
    kept = [np.array_equal(out[i], x[i]) for i in range(40)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 40


def test_transform_list_of_different_sizes_with_crop():
    a = np.arange(36, dtype=np.uint8).reshape(1, 6, 6)
    b = np.arange(20, dtype=np.uint8).reshape(1, 4, 5)
    t = DataTransformer(tparam(crop_size=4), TEST)
    out = t.transform([a, b])
    np.testing.assert_array_equal(out[0], a[:, 1:5, 1:5])
    np.testing.assert_array_equal(out[1], b[:, 0:4, 0:4])
    with pytest.raises(LayerError, match="different output shapes"):
        DataTransformer(tparam(), TEST).transform([a, b])


def test_transform_errors(tmp_path):
    mf = write_mean(tmp_path / "m.binaryproto", np.zeros((3, 4, 4), np.float32))
    with pytest.raises(LayerError, match="mean_file and mean_value"):
        DataTransformer(tparam(mean_file=mf, mean_value=[1]), TRAIN)
    with pytest.raises(LayerError, match="force_color and force_gray"):
        DataTransformer(tparam(force_color=True, force_gray=True), TRAIN)
    x = np.zeros((1, 3, 5, 5), np.uint8)
    with pytest.raises(LayerError, match=r"mean_file shape \(3, 4, 4\).*\(3, 5, 5\)"):
        DataTransformer(tparam(mean_file=mf), TRAIN).transform(x)
    with pytest.raises(LayerError, match="1 mean_value or as many as channels"):
        DataTransformer(tparam(mean_value=[1, 2]), TRAIN).transform(x)
    with pytest.raises(LayerError, match="crop_size 6 is larger"):
        DataTransformer(tparam(crop_size=6), TRAIN).transform(x)
    with pytest.raises(LayerError, match="cannot read mean_file"):
        DataTransformer(tparam(mean_file=str(tmp_path / "missing")), TRAIN)


# -- Data layer ---------------------------------------------------------------------------------
def data_layer_text(source, batch=3, extra="", transform="", backend="backend: LMDB"):
    return (f'name: "d" type: "Data" top: "data" top: "label" '
            f'transform_param {{ {transform} }} '
            f'data_param {{ source: "{source}" batch_size: {batch} {backend} {extra} }}')


def test_data_layer_prefetch_order_and_wraparound(tmp_path):
    imgs = indexed_images(7)
    src = write_db(tmp_path / "db", imgs, labels=[10 + i for i in range(7)])
    layer, top = make_layer(data_layer_text(src, batch=3))
    assert top[0].shape == (3, 3, 4, 5) and top[1].shape == (3,)
    assert layer._prefetcher is not None
    deadline = time.time() + 5
    while layer._prefetcher._full.qsize() < 4 and time.time() < deadline:
        time.sleep(0.01)
    assert layer._prefetcher._full.qsize() == 4  # 4 batches prefetched before any forward
    order = []
    for _ in range(5):
        data, label = forward(layer, top)
        idx = [int(v) - 10 for v in label]
        for d, i in zip(data, idx):
            np.testing.assert_array_equal(d, imgs[i].astype(np.float32))
        order += idx
    assert order == [i % 7 for i in range(15)]  # in key order, wrapping at the end
    layer.close()


def test_data_layer_without_prefetch_and_single_top(tmp_path):
    imgs = indexed_images(4)
    src = write_db(tmp_path / "db", imgs)
    layer, top = make_layer(data_layer_text(src, batch=3, extra="prefetch: 0"), num_top=1)
    assert layer._prefetcher is None
    (d1,) = forward(layer, top)
    (d2,) = forward(layer, top)
    np.testing.assert_array_equal(d1, np.stack(imgs[:3]).astype(np.float32))
    np.testing.assert_array_equal(d2, np.stack([imgs[3], imgs[0], imgs[1]]).astype(np.float32))


def test_data_layer_transform_and_reproducible_with_seed(tmp_path):
    imgs = indexed_images(10, (3, 8, 8))
    src = write_db(tmp_path / "db", imgs)
    mean = np.stack(imgs).astype(np.float64).mean(axis=0).astype(np.float32)
    mf = write_mean(tmp_path / "mean.binaryproto", mean)
    text = data_layer_text(src, batch=4, transform=f'mean_file: "{mf}" crop_size: 5 '
                                                   'mirror: true scale: 0.25')

    def run():
        minicaffe.set_random_seed(11)
        layer, top = make_layer(text)
        outs = [forward(layer, top) for _ in range(3)]
        layer.close()
        return outs
    a, b = run(), run()
    for (da, la), (db_, lb) in zip(a, b):
        np.testing.assert_array_equal(da, db_)
        np.testing.assert_array_equal(la, lb)
    # each output is (crop(x) - crop(mean)) * 0.25, possibly mirrored
    for data, label in a:
        for d, i in zip(data, label.astype(int)):
            ok = False
            for ho in range(4):
                for wo in range(4):
                    for m in (False, True):
                        ref = caffe_transform_loop(imgs[i], mean, None, 0.25, 5, ho, wo, m)
                        ok = ok or np.array_equal(d, ref)
            assert ok
    # TEST phase: centre crop and no randomness without mirror
    test_text = data_layer_text(src, batch=2, transform=f'mean_file: "{mf}" crop_size: 5')
    layer, top = make_layer(test_text, phase=TEST)
    data, _ = forward(layer, top)
    np.testing.assert_array_equal(data[1], caffe_transform_loop(imgs[1], mean, None, 1, 5, 1, 1,
                                                                False))
    layer.close()


def test_data_layer_rand_skip(tmp_path):
    src = write_db(tmp_path / "db", indexed_images(9))
    starts = set()
    for seed in range(12):
        minicaffe.set_random_seed(seed)
        layer, top = make_layer(data_layer_text(src, batch=4, extra="rand_skip: 5"))
        _, label = forward(layer, top)
        layer.close()
        s = int(label[0])
        assert 0 <= s < 5
        assert list(label.astype(int)) == [(s + k) % 9 for k in range(4)]
        starts.add(s)
    assert len(starts) > 1


def test_data_layer_encoded_and_force_gray(tmp_path):
    imgs = [np.random.default_rng(i).integers(0, 256, (3, 4, 4), dtype=np.uint8) for i in range(3)]
    src = write_db(tmp_path / "db", imgs, encoded="png")
    layer, top = make_layer(data_layer_text(src, batch=3))
    data, label = forward(layer, top)
    np.testing.assert_array_equal(data, np.stack(imgs).astype(np.float32))
    layer.close()
    layer, top = make_layer(data_layer_text(src, batch=2, transform="force_gray: true"))
    data, _ = forward(layer, top)
    assert data.shape == (2, 1, 4, 4)
    b, g, r = imgs[0].astype(float)
    assert np.abs(data[0, 0] - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 1.0
    layer.close()


def test_data_layer_backend_errors(tmp_path):
    src = write_db(tmp_path / "db", indexed_images(2))
    with pytest.raises(LayerError, match="LevelDB is not supported.*LMDB"):
        make_layer(data_layer_text(src, backend="backend: LEVELDB"))
    # backend left at its (LEVELDB) default is accepted when the source is an LMDB
    layer, top = make_layer(data_layer_text(src, batch=2, backend=""))
    forward(layer, top)
    layer.close()
    (tmp_path / "ldb").mkdir()
    (tmp_path / "ldb" / "CURRENT").write_text("MANIFEST-000001\n")
    with pytest.raises(LayerError, match="LevelDB is not supported"):
        make_layer(data_layer_text(str(tmp_path / "ldb"), backend=""))
    with pytest.raises(LayerError, match="no such directory"):
        make_layer(data_layer_text(str(tmp_path / "nope")))
    with pytest.raises(LayerError, match="batch_size must be positive"):
        make_layer(data_layer_text(src, batch=0))


def test_data_layer_in_net_with_computed_mean(tmp_path):
    imgs = indexed_images(6, (3, 4, 4))
    src = write_db(tmp_path / "db", imgs)
    mf = str(tmp_path / "mean.binaryproto")
    mean = compute_image_mean(src, mf)
    np.testing.assert_allclose(mean, np.stack(imgs).astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_array_equal(read_mean(mf), mean)
    bp = caffe_pb2.BlobProto()
    bp.ParseFromString(open(mf, "rb").read())
    assert (bp.num, bp.channels, bp.height, bp.width) == (1, 3, 4, 4)  # compute_image_mean's form
    from google.protobuf import text_format
    net_param = text_format.Parse(
        'layer { ' + data_layer_text(src, batch=6, transform=f'mean_file: "{mf}"') + ' }',
        caffe_pb2.NetParameter())
    net = minicaffe.Net(net_param, minicaffe.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data,
                               np.stack(imgs).astype(np.float32) - mean[None], rtol=1e-6)
    np.testing.assert_array_equal(net.blobs["label"].data, np.arange(6))


# -- ImageData ----------------------------------------------------------------------------------
def write_images(folder, n, size=(6, 5), mode="RGB"):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        shape = (size[0], size[1], 3) if mode == "RGB" else size
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        name = f"img {i}.png"  # a space in the name: the label follows the last space
        Image.fromarray(arr, mode).save(os.path.join(folder, name))
        names.append(name)
    return names


def bgr(path):
    return np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)[::-1]


def test_image_list_parsing(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("a b.png 3\n\nc.jpg 1\n")
    assert read_image_list(str(f)) == [("a b.png", 3), ("c.jpg", 1)]
    f.write_text("a.png x\n")
    with pytest.raises(MiniCaffeError, match=r"list.txt:1: label 'x'"):
        read_image_list(str(f))


def test_image_data_layer_order_resize_shuffle(tmp_path):
    folder = tmp_path / "imgs"
    names = write_images(folder, 5)
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    text = (f'name: "im" type: "ImageData" top: "data" top: "label" '
            f'image_data_param {{ source: "{lst}" root_folder: "{folder}/" batch_size: 2 }}')
    layer, top = make_layer(text, phase=TEST)
    order = []
    for _ in range(4):
        data, label = forward(layer, top)
        for d, i in zip(data, label.astype(int)):
            np.testing.assert_array_equal(d, bgr(folder / names[i]).astype(np.float32))
        order += list(label.astype(int))
    assert order == [0, 1, 2, 3, 4, 0, 1, 2]
    layer.close()
    # resize and grey
    text = (f'name: "im" type: "ImageData" top: "data" top: "label" '
            f'image_data_param {{ source: "{lst}" root_folder: "{folder}" batch_size: 1 '
            f'new_height: 3 new_width: 4 is_color: false }}')
    layer, top = make_layer(text, phase=TEST)
    data, label = forward(layer, top)
    assert data.shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(data[0], read_image(str(folder / names[0]), 3, 4, False))
    layer.close()

    # shuffle: a permutation per epoch, reproducible with the seed
    def labels(seed):
        minicaffe.set_random_seed(seed)
        text = (f'name: "im" type: "ImageData" top: "data" top: "label" '
                f'image_data_param {{ source: "{lst}" root_folder: "{folder}/" batch_size: 5 '
                f'shuffle: true }}')
        layer, top = make_layer(text)
        out = [tuple(forward(layer, top)[1].astype(int)) for _ in range(3)]
        layer.close()
        return out
    a = labels(3)
    assert a == labels(3)
    assert all(sorted(e) == [0, 1, 2, 3, 4] for e in a)
    assert len(set(a)) > 1 or a != labels(4)
    with pytest.raises(LayerError, match="new_height and new_width"):
        make_layer(text.replace("new_width: 4", ""))


def test_image_data_worker_error_reaches_forward(tmp_path):
    folder = tmp_path / "imgs"
    names = write_images(folder, 2)
    lst = tmp_path / "list.txt"
    lst.write_text(f"{names[0]} 0\nmissing.png 1\n")
    text = (f'name: "im" type: "ImageData" top: "data" top: "label" '
            f'image_data_param {{ source: "{lst}" root_folder: "{folder}/" batch_size: 2 }}')
    layer, top = make_layer(text)
    for _ in range(2):  # the failure is reported again on the next call, not a hang
        with pytest.raises(LayerError, match="ImageData layer 'im'.*missing.png"):
            forward(layer, top)


# -- HDF5Data -----------------------------------------------------------------------------------
def test_hdf5_data_layer(tmp_path):
    h5py = pytest.importorskip("h5py")
    files = []
    rows = 0
    for k, n in enumerate([3, 4]):
        p = tmp_path / f"f{k}.h5"
        with h5py.File(p, "w") as f:
            f["data"] = (np.arange(n * 6, dtype=np.float64).reshape(n, 2, 3) + 100 * k)
            f["label"] = np.arange(rows, rows + n, dtype=np.int32)
        rows += n
        files.append(str(p))
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(files) + "\n")
    text = (f'name: "h" type: "HDF5Data" top: "data" top: "label" '
            f'hdf5_data_param {{ source: "{lst}" batch_size: 5 }}')
    layer, top = make_layer(text)
    assert top[0].shape == (5, 2, 3) and top[1].shape == (5,)
    d1, l1 = forward(layer, top)
    d2, l2 = forward(layer, top)
    assert list(l1) == [0, 1, 2, 3, 4] and list(l2) == [5, 6, 0, 1, 2]
    np.testing.assert_array_equal(d1[3], np.arange(6).reshape(2, 3) + 100)  # row 0 of file 1
    assert d1.dtype == np.float32
    # shuffle: each epoch covers every row once
    minicaffe.set_random_seed(2)
    layer, top = make_layer(text.replace("batch_size: 5", "batch_size: 7 shuffle: true"))
    seen = [sorted(forward(layer, top)[1].astype(int)) for _ in range(2)]
    assert seen == [list(range(7))] * 2
    with pytest.raises(LayerError, match="no dataset 'lbl'"):
        make_layer(text.replace('top: "label"', 'top: "lbl"'))
    with pytest.raises(LayerError, match="does not transform data"):
        make_layer(text + " transform_param { scale: 2 }")


# -- convert_imageset ---------------------------------------------------------------------------
def test_convert_imageset_list_raw_encoded_resize(tmp_path):
    folder = tmp_path / "imgs"
    names = write_images(folder, 3)
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{n} {i + 1}\n" for i, n in enumerate(names)))
    raw = str(tmp_path / "raw_lmdb")
    assert convert_imageset(str(folder) + "/", str(lst), raw) == 3
    items = list(dbm.iter_datums(raw))
    assert [k for k, _ in items] == [b"%08d_%s" % (i, n.encode()) for i, n in enumerate(names)]
    for (_, d), n, i in zip(items, names, range(3)):
        assert not d.encoded and d.label == i + 1 and (d.channels, d.height, d.width) == (3, 6, 5)
        np.testing.assert_array_equal(dbm.datum_to_array(d), bgr(folder / n))
    enc = str(tmp_path / "enc_lmdb")
    convert_imageset(str(folder) + "/", str(lst), enc, encoded=True)
    d = next(dbm.iter_datums(enc))[1]
    assert d.encoded and d.data == (folder / names[0]).read_bytes()  # the file as it is
    small = str(tmp_path / "small_lmdb")
    convert_imageset(str(folder), str(lst), small, gray=True, resize_height=3, resize_width=2,
                     encoded=True, encode_type="png")
    d = next(dbm.iter_datums(small))[1]
    np.testing.assert_array_equal(dbm.datum_to_array(d),
                                  read_image(str(folder / names[0]), 3, 2, False))


def test_convert_imageset_folder_of_classes_and_shuffle(tmp_path):
    root = tmp_path / "root"
    write_images(root / "cat", 2)
    write_images(root / "dog", 3)
    db = str(tmp_path / "db")
    assert convert_imageset(str(root), None, db, shuffle=True,
                            rng=np.random.default_rng(0)) == 5
    items = list(dbm.iter_datums(db))
    keys = [k.decode() for k, _ in items]
    assert sorted(d.label for _, d in items) == [0, 0, 1, 1, 1]
    for k, d in items:
        assert k.decode().split("_", 1)[1].startswith("cat/" if d.label == 0 else "dog/")
    names = [k.split("_", 1)[1] for k in keys]  # keys sort by line index: the shuffled order
    assert names != sorted(names)

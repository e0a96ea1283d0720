"""minicaffe.io (Transformer, images, Datum/BlobProto arrays), Classifier, and the
upgrade_net_proto_text tool (V1 nets read transparently and written upgraded)."""
import importlib.util
import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

import minicaffe as caffe
from minicaffe import io as cio
from minicaffe.classifier import Classifier
from minicaffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- Transformer ------------------------------------------------------------------------------
def make_transformer(shape=(1, 3, 2, 3)):
    t = cio.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_matches_hand_computation():
    rs = np.random.RandomState(0)
    img = rs.rand(2, 3, 3).astype(np.float32)          # H x W x K (RGB)
    keep = img.copy()
    out = make_transformer().preprocess("data", img)
    expected = np.empty((3, 2, 3))
    mean = [10.0, 20.0, 30.0]
    for c in range(3):                                  # output channel c = input channel 2-c
        for y in range(2):
            for x in range(3):
                expected[c, y, x] = (img[y, x, 2 - c] * 255.0 - mean[c]) * 0.5
    assert out.dtype == np.float32 and out.shape == (3, 2, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(img, keep)            # the caller's image is not modified
    back = make_transformer().deprocess("data", out)
    np.testing.assert_allclose(back, img, atol=1e-6)


def test_preprocess_elementwise_mean_and_resize():
    t = cio.Transformer({"data": (1, 1, 4, 4)})
    t.set_transpose("data", (2, 0, 1))
    mean = np.arange(16, dtype=np.float32).reshape(4, 4)     # H x W mean → 1 x H x W
    t.set_mean("data", mean)
    img = np.array([[1.0, 3.0], [5.0, 7.0]], np.float32)[:, :, None]   # 2 x 2 x 1
    out = t.preprocess("data", img)
    # Bilinear 2 → 4 with pixel centres aligned: a, .75a+.25b, .25a+.75b, b per axis.
    w = np.array([[1, 0], [.75, .25], [.25, .75], [0, 1]])
    up = w @ img[:, :, 0] @ w.T
    np.testing.assert_allclose(out[0], up - mean, atol=1e-6)


def test_resize_keeps_constant_images_and_nearest():
    c = np.full((3, 5, 2), 0.25, np.float32)
    np.testing.assert_array_equal(cio.resize_image(c, (7, 4)), np.full((7, 4, 2), 0.25))
    im = np.arange(4, dtype=np.float32).reshape(2, 2, 1)
    near = cio.resize_image(im, (4, 4), interp_order=0)[:, :, 0]
    np.testing.assert_array_equal(near, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3],
                                         [2, 2, 3, 3]])


def test_transformer_rejects_mismatches():
    t = cio.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(ValueError, match="channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="mean"):
        t.set_mean("data", np.zeros(2))
    with pytest.raises(ValueError, match="incompatible"):
        t.set_mean("data", np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="transpose"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(KeyError, match="not one of the net inputs"):
        t.set_raw_scale("label", 2)


# -- images -----------------------------------------------------------------------------------
def test_load_image_modes(tmp_path):
    rs = np.random.RandomState(1)
    rgb = rs.randint(0, 256, (5, 4, 3)).astype(np.uint8)
    gray = rs.randint(0, 256, (5, 4)).astype(np.uint8)
    rgba = rs.randint(0, 256, (5, 4, 4)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    im = cio.load_image(str(tmp_path / "rgb.png"))
    assert im.dtype == np.float32 and im.shape == (5, 4, 3)
    np.testing.assert_allclose(im, rgb / 255.0, atol=1e-7)
    g3 = cio.load_image(str(tmp_path / "gray.png"))
    np.testing.assert_allclose(g3, np.repeat(gray[:, :, None], 3, axis=2) / 255.0, atol=1e-7)
    g1 = cio.load_image(str(tmp_path / "gray.png"), color=False)
    assert g1.shape == (5, 4, 1)
    a = cio.load_image(str(tmp_path / "rgba.png"))
    np.testing.assert_allclose(a, rgba[:, :, :3] / 255.0, atol=1e-7)


def test_oversample_crops_corners_center_and_mirrors():
    rs = np.random.RandomState(2)
    ims = [rs.rand(6, 7, 2).astype(np.float32) for _ in range(2)]
    crops = cio.oversample(ims, (4, 3))
    assert crops.shape == (20, 4, 3, 2)
    for n, im in enumerate(ims):
        starts = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]   # centre: (3-2, 3.5-1.5)
        for k, (y, x) in enumerate(starts):
            np.testing.assert_array_equal(crops[10 * n + k], im[y:y + 4, x:x + 3])
            np.testing.assert_array_equal(crops[10 * n + 5 + k], im[y:y + 4, x:x + 3][:, ::-1])


# -- Datum / BlobProto -------------------------------------------------------------------------
def test_datum_round_trips():
    u8 = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = cio.array_to_datum(u8, label=7)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 7)
    assert d.data == u8.tobytes() and not len(d.float_data)
    back = cio.datum_to_array(caffe_pb2.Datum.FromString(d.SerializeToString()))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, u8)
    f = np.linspace(-1, 1, 6).reshape(1, 2, 3)
    d = cio.array_to_datum(f)
    assert not d.data and len(d.float_data) == 6 and not d.HasField("label")
    np.testing.assert_allclose(cio.datum_to_array(d), f)
    with pytest.raises(ValueError, match="3-D"):
        cio.array_to_datum(np.zeros((2, 2)))


def test_encoded_datum_decodes_to_bgr():
    rgb = np.random.RandomState(3).randint(0, 256, (3, 5, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    d = caffe_pb2.Datum(data=buf.getvalue(), encoded=True, label=1)
    arr = cio.datum_to_array(d)
    np.testing.assert_array_equal(arr, rgb[:, :, ::-1].transpose(2, 0, 1))


def test_blobproto_arrays():
    a = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    diff = -a
    bp = cio.array_to_blobproto(a, diff)
    assert list(bp.shape.dim) == [1, 2, 3]
    np.testing.assert_array_equal(cio.blobproto_to_array(bp), a)
    np.testing.assert_array_equal(cio.blobproto_to_array(bp, return_diff=True), diff)
    legacy = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2, data=[1, 2, 3, 4])
    assert cio.blobproto_to_array(legacy).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="diff shape"):
        cio.array_to_blobproto(a, np.zeros(3))


# -- Classifier ----------------------------------------------------------------------------------
DEPLOY = '''
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 4 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
'''


def test_classifier_oversampled_prediction(tmp_path):
    model = tmp_path / "deploy.prototxt"
    model.write_text(DEPLOY)
    rs = np.random.RandomState(4)
    W = rs.standard_normal((3, 48)).astype(np.float32) * 0.1
    b = rs.standard_normal(3).astype(np.float32)
    net = caffe.Net(str(model), caffe.TEST)
    net.params["ip"][0].data[...] = W
    net.params["ip"][1].data[...] = b
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))

    mean = np.array([0.1, 0.2, 0.3])
    clf = Classifier(str(model), str(weights), image_dims=(6, 6), mean=mean, raw_scale=2.0,
                     channel_swap=(2, 1, 0))
    images = [rs.rand(6, 6, 3).astype(np.float32) for _ in range(3)]   # already 6 x 6

    def expected_for(img, crops):
        probs = []
        for (y, x, flip) in crops:
            c = img[y:y + 4, x:x + 4]
            c = c[:, ::-1] if flip else c
            v = c.transpose(2, 0, 1)[::-1] * 2.0 - mean[:, None, None]
            z = W @ v.ravel() + b
            e = np.exp(z - z.max())
            probs.append(e / e.sum())
        return np.mean(probs, axis=0)

    pred = clf.predict(images)                     # 30 crops, run in batches of 4
    assert pred.shape == (3, 3)
    corners = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]
    crops = [(y, x, f) for f in (False, True) for (y, x) in corners]
    for img, p in zip(images, pred):
        np.testing.assert_allclose(p, expected_for(img, crops), rtol=1e-4, atol=1e-6)
    centre = clf.predict(images, oversample=False)
    for img, p in zip(images, centre):
        np.testing.assert_allclose(p, expected_for(img, [(1, 1, False)]), rtol=1e-4, atol=1e-6)
    assert tuple(clf.blobs["data"].shape) == (4, 3, 4, 4)     # input shape restored


# -- V1 nets: read transparently, and upgraded by the tool -----------------------------------
V1_NET = '''
name: "old"
input: "data"
input_dim: 2 input_dim: 1 input_dim: 5 input_dim: 5
layers {
  name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 2 kernel_size: 3
                      weight_filler { type: "gaussian" std: 0.5 } }
}
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "ip" type: INNER_PRODUCT bottom: "conv" top: "ip"
         inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layers { name: "prob" type: SOFTMAX bottom: "ip" top: "prob" }
'''


def _upgrade_tool():
    path = os.path.join(ROOT, "tools", "upgrade_net_proto_text.py")
    spec = importlib.util.spec_from_file_location("upgrade_net_proto_text", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_v1_net_upgraded_and_run(tmp_path, caplog, capsys):
    old = tmp_path / "old.prototxt"
    old.write_text(V1_NET)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        net_old = caffe.Net(str(old), caffe.TEST)
    assert "upgraded V1" in caplog.text
    assert [l.type for l in net_old.layers] == ["Input", "Convolution", "ReLU", "InnerProduct",
                                                "Softmax"]

    tool = _upgrade_tool()
    new = tmp_path / "new.prototxt"
    assert tool.main([str(old), str(new)]) == 0
    assert "Wrote upgraded" in capsys.readouterr().out
    param = caffe.io.read_prototxt(str(new), caffe_pb2.NetParameter())
    assert not len(param.layers) and not len(param.input)
    conv = param.layer[1]
    assert conv.type == "Convolution"
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert list(param.layer[0].input_param.shape[0].dim) == [2, 1, 5, 5]

    # Same weights, same outputs from the old and the upgraded definition.
    weights = tmp_path / "w.caffemodel"
    net_old.save(str(weights))
    net_new = caffe.Net(str(new), str(weights), caffe.TEST)
    x = np.random.RandomState(5).standard_normal((2, 1, 5, 5)).astype(np.float32)
    a = net_old.forward(data=x)["prob"].copy()
    b = net_new.forward(data=x)["prob"]
    np.testing.assert_array_equal(a, b)
    assert np.allclose(a.sum(1), 1)

    # An up-to-date file is copied unchanged.
    again = tmp_path / "again.prototxt"
    assert tool.main([str(new), str(again)]) == 0
    assert "already in the latest format" in capsys.readouterr().out
    assert again.read_text() == new.read_text()


def test_v1_caffemodel_upgraded_by_tool(tmp_path):
    v1 = caffe_pb2.NetParameter(name="w")
    layer = v1.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    layer.blobs.add().CopyFrom(cio.array_to_blobproto(np.ones((3, 4), np.float32)))
    src = tmp_path / "old.caffemodel"
    src.write_bytes(v1.SerializeToString())
    dst = tmp_path / "new.caffemodel"
    assert _upgrade_tool().main([str(src), str(dst)]) == 0
    out = caffe_pb2.NetParameter.FromString(dst.read_bytes())
    assert out.layer[0].type == "InnerProduct" and len(out.layer[0].blobs) == 1

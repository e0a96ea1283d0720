"""The pycaffe surface on a small conv net: Convolution (bias_term false), Pooling, ReLU,
InnerProduct, SoftmaxWithLoss and Accuracy, forward and backward, and weights I/O."""
import numpy as np
import pytest

import minicaffe as caffe

NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 5 kernel_size: 3 pad: 1 bias_term: false
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip1" bottom: "label" top: "acc"
        include { phase: TEST } }
"""


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "tiny.prototxt"
    p.write_text(NET)
    return str(p)


def feed(net, seed=0):
    rs = np.random.RandomState(seed)
    net.blobs["data"].data[...] = rs.standard_normal((4, 3, 8, 8))
    net.blobs["label"].data[...] = [0, 1, 2, 1]


def test_forward_backward_through_pycaffe_api(model):
    caffe.set_mode_cpu()
    net = caffe.Net(model, caffe.TRAIN)
    assert list(net.params) == ["conv1", "ip1"]
    assert len(net.params["conv1"]) == 1                     # bias_term: false
    assert net.params["conv1"][0].data.shape == (5, 3, 3, 3)
    assert net.blobs["pool1"].data.shape == (4, 5, 4, 4)     # ceil((8-3)/2)+1 = 4
    assert net.inputs == ["data", "label"] and net.outputs == ["loss"]
    assert [l.type for l in net.layers] == ["Input", "Convolution", "Pooling", "ReLU",
                                            "InnerProduct", "SoftmaxWithLoss"]
    feed(net)
    loss = float(net.forward()["loss"])
    assert np.isfinite(loss) and loss > 0
    net.backward()
    # The whole-net gradient of a few weights against central differences of the loss.
    w = net.params["conv1"][0]
    analytic = w.diff.copy()
    eps = 2e-3  # small enough not to cross a max-pooling or ReLU kink
    for idx in [(0, 0, 0, 0), (2, 1, 1, 2), (4, 2, 2, 1)]:
        old = w.data[idx]
        w.data[idx] = old + eps
        lp = float(net.forward()["loss"])
        w.data[idx] = old - eps
        lm = float(net.forward()["loss"])
        w.data[idx] = old
        num = (lp - lm) / (2 * eps)
        assert abs(num - analytic[idx]) < 2e-3 + 2e-2 * abs(num), (idx, num, analytic[idx])


def test_test_phase_accuracy_and_weights_round_trip(model, tmp_path):
    train = caffe.Net(model, caffe.TRAIN)
    path = str(tmp_path / "tiny.caffemodel")
    train.save(path)
    test = caffe.Net(model, path, caffe.TEST)
    for name in train.params:
        for a, b in zip(train.params[name], test.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    feed(test)
    out = test.forward()
    assert set(out) == {"loss", "acc"}
    scores = test.blobs["ip1"].data
    want = float((scores.argmax(1) == test.blobs["label"].data).mean())
    assert float(out["acc"]) == pytest.approx(want)
    # reshape the input, then the net
    test.blobs["data"].reshape(2, 3, 8, 8)
    test.blobs["label"].reshape(2)
    test.reshape()
    assert test.blobs["ip1"].data.shape == (2, 3)
    test.forward(data=np.zeros((2, 3, 8, 8)), label=np.zeros(2))


def test_unimplemented_type_is_named(tmp_path):
    p = tmp_path / "x.prototxt"
    p.write_text('layer { name: "w" type: "NoSuchLayer" top: "d" }')
    with pytest.raises(caffe.LayerError, match="layer 'w': unknown layer type 'NoSuchLayer'"):
        caffe.Net(str(p), caffe.TRAIN)


def test_forward_all_batches_and_pads(model):
    net = caffe.Net(model, caffe.TEST)
    rs = np.random.RandomState(3)
    data = rs.standard_normal((10, 3, 8, 8)).astype(np.float32)
    out = net.forward_all(blobs=["ip1"], data=data, label=np.zeros(10))
    assert out["ip1"].shape == (10, 3)
    # Image 9 alone (batch of 4: images 8, 9 and two padding images) equals a direct forward.
    net.blobs["data"].data[...] = data[6:10]
    net.forward()
    np.testing.assert_allclose(out["ip1"][6:10], net.blobs["ip1"].data, rtol=1e-5, atol=1e-6)
    assert "Convolution" in caffe.layer_type_list()

"""MemoryData: batches served and wrapped, Caffe's checks on the arrays, whole nets from
prototxt (also in GPU mode on the stand-in device)."""
import numpy as np
import pytest

import minicaffe as caffe
from gradcheck import layer_param, rand
from minicaffe.blob import Blob
from minicaffe.errors import LayerError, ShapeError
from minicaffe.layer import create_layer
from minicaffe.proto import caffe_pb2


def set_input_arrays(net, data, labels):
    """The proposed Net.set_input_arrays (pycaffe): the first layer must be MemoryData."""
    if not net.layers or net.layers[0].type != "MemoryData":
        raise LayerError("set_input_arrays may only be called if the first layer is a "
                         "MemoryData layer")
    net.layers[0].reset(data, labels)


def feed(net, data, labels):
    method = getattr(type(net), "set_input_arrays", None)
    return method(net, data, labels) if method else set_input_arrays(net, data, labels)


# --- MemoryData ------------------------------------------------------------------------------
MEMORY = 'type: "MemoryData" memory_data_param { batch_size: 2 channels: 3 height: 2 width: 1 }'


def memory_layer():
    layer = create_layer(layer_param(MEMORY))
    top = [Blob(), Blob()]
    layer.setup([], top)
    return layer, top


def test_memory_data_serves_batches_and_wraps():
    layer, top = memory_layer()
    assert top[0].shape == (2, 3, 2, 1) and top[1].shape == (2,)
    data = np.arange(6 * 6, dtype=np.float32).reshape(6, 3, 2, 1)
    labels = np.arange(6, dtype=np.float32) + 10
    layer.reset(data, labels)
    for step in range(5):
        layer.reshape([], top)
        layer.forward([], top)
        first = (2 * step) % 6
        np.testing.assert_array_equal(top[0].data, data[first:first + 2])
        assert top[1].shape == (2, 1, 1, 1)
        np.testing.assert_array_equal(top[1].data.ravel(), labels[first:first + 2])
    # reset starts from the first item again; the arrays are kept, not copied (as in Caffe).
    labels4 = np.ascontiguousarray(labels[:4].reshape(4, 1, 1, 1))
    data4 = data[:4].copy()
    layer.reset(data4, labels4)
    data4[0] = -1
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data[0], -np.ones((3, 2, 1)))


def test_memory_data_errors():
    layer, top = memory_layer()
    with pytest.raises(LayerError, match="MemoryData layer 'under_test'.*set_input_arrays"):
        layer.forward([], top)
    good = np.zeros((4, 3, 2, 1), np.float32)
    lab = np.zeros(4, np.float32)
    with pytest.raises(LayerError, match="float32"):
        layer.reset(good.astype(np.float64), lab)
    with pytest.raises(LayerError, match="C contiguous"):
        layer.reset(np.zeros((3, 2, 1, 4), np.float32).transpose(3, 0, 1, 2), lab)
    with pytest.raises(ShapeError, match="4-d"):
        layer.reset(good.reshape(4, 6), lab)
    with pytest.raises(ShapeError, match=r"\(4, 2, 2, 1\)"):
        layer.reset(np.zeros((4, 2, 2, 1), np.float32), lab)
    with pytest.raises(ShapeError, match="same first dimension"):
        layer.reset(good, np.zeros(2, np.float32))
    with pytest.raises(ShapeError, match="multiple of batch size 2"):
        layer.reset(np.zeros((3, 3, 2, 1), np.float32), np.zeros(3, np.float32))
    with pytest.raises(LayerError, match="positive in memory_data_param"):
        memory = 'type: "MemoryData" memory_data_param { batch_size: 2 channels: 3 }'
        create_layer(layer_param(memory)).setup([], [Blob(), Blob()])


NET = """
name: "extra"
force_backward: true
layer { name: "mem" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 2 height: 5 width: 5 } }
layer { name: "cols" type: "Im2col" bottom: "data" top: "cols"
        convolution_param { kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "spp" type: "SPP" bottom: "cols" top: "spp" spp_param { pyramid_height: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "spp" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "keep" type: "Filter" bottom: "ip" bottom: "label" top: "kept" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_net_from_prototxt_with_memory_data(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    net = caffe.Net(str(path), caffe.TRAIN)
    assert net.blobs["cols"].data.shape == (2, 18, 3, 3)
    assert net.blobs["spp"].data.shape == (2, 18 * 5)
    assert net.blobs["kept"].data.shape == (2, 3)      # all rows before any selector data
    data = rand((4, 2, 5, 5), 12).astype(np.float32)
    labels = np.array([0, 2, 1, 0], np.float32)
    feed(net, data, labels)
    for first in (0, 2):
        loss = net.forward_backward()
        assert np.isfinite(loss)
        np.testing.assert_array_equal(net.blobs["data"].data, data[first:first + 2])
        kept = [i for i in range(2) if labels[first + i] != 0]
        np.testing.assert_array_equal(net.blobs["kept"].data, net.blobs["ip"].data[kept])
    assert np.abs(net.params["ip"][0].diff).sum() > 0
    assert np.abs(net.blobs["data"].diff).sum() > 0     # through SPP and Im2col


def test_net_in_gpu_mode_on_the_stand_in_device(tmp_path):
    """The same net in GPU mode on test_blob_sync's stand-in device (CuPy's rules: no NumPy
    array may enter a device operation) gives the CPU results."""
    from minicaffe import backend
    import test_blob_sync as fake
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    data = rand((4, 2, 5, 5), 14).astype(np.float32)
    labels = np.array([1, 0, 2, 2], np.float32)

    def run():
        caffe.set_random_seed(3)
        net = caffe.Net(str(path), caffe.TRAIN)
        feed(net, data, labels)
        out = []
        for _ in range(2):
            loss = float(net.forward_backward())
            out.append([loss, net.blobs["kept"].data.copy(), net.blobs["spp"].data.copy(),
                        net.params["ip"][0].diff.copy(), net.blobs["data"].diff.copy()])
        return out

    cpu = run()
    backend.use_device_module(fake.FAKE)
    fake._STRICT[0] = True
    caffe.set_mode_gpu()
    try:
        gpu = run()
    finally:
        fake._STRICT[0] = False
        backend.use_device_module(None)
        caffe.set_mode_cpu()
        fake._forget_device_scratch()
    for c, g in zip(cpu, gpu):
        for a, b in zip(c, g):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_set_input_arrays_needs_memory_data_first():
    p = caffe_pb2.NetParameter()
    lp = p.layer.add(name="in", type="Input", top=["x"])
    lp.input_param.shape.add(dim=[1, 2])
    net = caffe.Net(p, caffe.TEST)
    with pytest.raises(LayerError, match="MemoryData"):
        feed(net, np.zeros((1, 1, 1, 2), np.float32), np.zeros(1, np.float32))

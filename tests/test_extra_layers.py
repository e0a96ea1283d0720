"""Filter, HDF5Output, Im2col, MemoryData and SPP: values against loops written here, gradients
by finite differences, Caffe's shape rules, whole nets from prototxt and error checks."""
import math

import numpy as np
import pytest

import minicaffe as caffe
from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.blob import Blob
from minicaffe.errors import LayerError, ShapeError
from minicaffe.layer import create_layer
from minicaffe.proto import caffe_pb2


def forward(text, arrays, num_top=1):
    layer, bottom, top = setup_layer(layer_param(text), arrays, num_top=num_top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def rand(shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


def distinct(shape, seed=0):
    """Values far enough apart that a finite-difference step never changes a max's winner."""
    n = int(np.prod(shape))
    return (np.random.RandomState(seed).permutation(n) * 0.1).reshape(shape)


def set_input_arrays(net, data, labels):
    """The proposed Net.set_input_arrays (pycaffe): the first layer must be MemoryData."""
    if not net.layers or net.layers[0].type != "MemoryData":
        raise LayerError("set_input_arrays may only be called if the first layer is a "
                         "MemoryData layer")
    net.layers[0].reset(data, labels)


def feed(net, data, labels):
    method = getattr(type(net), "set_input_arrays", None)
    return method(net, data, labels) if method else set_input_arrays(net, data, labels)


# --- Filter ----------------------------------------------------------------------------------
SELECTOR = np.array([1, 0, 0, 2.5, 0, -1.0])


def test_filter_forward_picks_selected_rows_in_order():
    x1, x2 = rand((6, 3, 2), 1), rand((6, 4), 2)
    layer, bottom, top = setup_layer(layer_param('type: "Filter"'),
                                     [x1, x2, SELECTOR.reshape(6, 1, 1, 1)], num_top=2)
    # At setup there is no selector data yet: Caffe gives the tops every row.
    assert top[0].shape == (6, 3, 2) and top[1].shape == (6, 4)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    keep = [i for i in range(6) if SELECTOR[i] != 0]
    assert keep == [0, 3, 5]
    assert top[0].shape == (3, 3, 2) and top[1].shape == (3, 4)
    for r, i in enumerate(keep):
        np.testing.assert_array_equal(top[0].data[r], x1[i])
        np.testing.assert_array_equal(top[1].data[r], x2[i])


def test_filter_backward_scatters_and_zeroes():
    x = rand((6, 2), 3)
    layer, bottom, top = forward('type: "Filter"', [x, SELECTOR])
    dy = rand((3, 2), 4)
    top[0].diff[...] = dy
    bottom[0].diff[...] = 7.0      # backward overwrites
    layer.backward(top, [True, False], bottom)
    expect = np.zeros((6, 2))
    for r, i in enumerate([0, 3, 5]):
        expect[i] = dy[r]
    np.testing.assert_array_equal(bottom[0].diff, expect)


@pytest.mark.parametrize("shapes,selector", [
    ([(6, 3, 2), (6, 4)], SELECTOR.reshape(6, 1)),
    ([(5, 2, 3, 2)], np.array([0, 1, 1, 0, 1.0])),
    ([(4, 3)], np.ones((4, 1, 1, 1))),
])
def test_filter_gradients(shapes, selector):
    arrays = [rand(s, k) for k, s in enumerate(shapes)] + [selector]
    k = len(shapes)
    check_gradients('type: "Filter"', arrays, num_top=k, check_bottom=list(range(k)))


def test_filter_selects_nothing():
    layer, bottom, top = forward('type: "Filter"', [rand((3, 2)), np.zeros(3)])
    assert top[0].shape == (0, 2)
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.zeros((3, 2)))


def test_filter_errors():
    with pytest.raises(LayerError, match="Filter layer 'under_test'.*2 tops"):
        setup_layer(layer_param('type: "Filter"'), [rand((3, 2)), rand((3, 2)), np.ones(3)],
                    num_top=1)
    with pytest.raises(ShapeError, match=r"singletons.*\(3, 2\)"):
        setup_layer(layer_param('type: "Filter"'), [rand((3, 2)), np.ones((3, 2))])
    with pytest.raises(ShapeError, match=r"bottom 0 .*\(4, 2\).*\(3\)"):
        setup_layer(layer_param('type: "Filter"'), [rand((4, 2)), np.ones(3)])
    layer, bottom, top = forward('type: "Filter"', [rand((3, 2)), np.ones(3)])
    with pytest.raises(LayerError, match="selector"):
        layer.backward(top, [True, True], bottom)


# --- Im2col ----------------------------------------------------------------------------------
def im2col_ref(x, kernel, stride, pad, dilation):
    """Caffe's im2col by direct loops: row c*kh*kw + i*kw + j, column (oh, ow)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, c * kh * kw, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = ch * kh * kw + i * kw + j
                    for y in range(oh):
                        for z in range(ow):
                            r, s = y * sh - ph + i * dh, z * sw - pw + j * dw
                            if 0 <= r < h and 0 <= s < w:
                                out[b, row, y, z] = x[b, ch, r, s]
    return out


IM2COL_CASES = [
    ("kernel_size: 3", (3, 3), (1, 1), (0, 0), (1, 1)),
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), (1, 1)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 2", (2, 3), (1, 2),
     (0, 2), (1, 1)),
    ("kernel_size: 2 dilation: 2 pad: 1 stride: 2", (2, 2), (2, 2), (1, 1), (2, 2)),
    ("kernel_size: 3 kernel_size: 2 stride: 3 stride: 1 dilation: 1 dilation: 2 pad: 2 pad: 0",
     (3, 2), (3, 1), (2, 0), (1, 2)),
]


@pytest.mark.parametrize("text,kernel,stride,pad,dilation", IM2COL_CASES)
def test_im2col_forward_matches_loops(text, kernel, stride, pad, dilation):
    x = rand((2, 3, 7, 6), 5)
    _, _, top = forward(f'type: "Im2col" convolution_param {{ {text} }}', [x])
    ref = im2col_ref(x, kernel, stride, pad, dilation)
    assert top[0].shape == ref.shape
    np.testing.assert_array_equal(top[0].data, ref)


@pytest.mark.parametrize("text,kernel,stride,pad,dilation", IM2COL_CASES)
def test_im2col_gradients(text, kernel, stride, pad, dilation):
    check_gradients(f'type: "Im2col" convolution_param {{ {text} }}', [rand((2, 2, 6, 5), 6)])


def test_im2col_backward_is_col2im_sum():
    """Each pixel's gradient is the sum of the column entries it was copied to."""
    x = rand((1, 2, 5, 5), 7)
    layer, bottom, top = forward('type: "Im2col" convolution_param { kernel_size: 3 pad: 1 }',
                                 [x])
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    # With stride 1, pad 1 and a 3x3 kernel a pixel is used once per window that covers it:
    # 3 x 3 inside, 2 x 3 on an edge, 2 x 2 in a corner.
    counts = np.array([[4, 6, 6, 6, 4], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6],
                       [4, 6, 6, 6, 4]], float)
    np.testing.assert_array_equal(bottom[0].diff, np.broadcast_to(counts, (1, 2, 5, 5)))


def test_im2col_axis_and_leading_dims():
    x = rand((2, 3, 2, 5, 4), 8)
    text = 'type: "Im2col" convolution_param { kernel_size: 2 axis: 2 }'
    _, _, top = forward(text, [x])
    assert top[0].shape == (2, 3, 8, 4, 3)
    ref = im2col_ref(x.reshape(6, 2, 5, 4), (2, 2), (1, 1), (0, 0), (1, 1))
    np.testing.assert_array_equal(top[0].data.reshape(6, 8, 4, 3), ref)
    check_gradients(text, [x])


def test_im2col_errors():
    with pytest.raises(ShapeError, match=r"Im2col layer 'under_test'.*\(1, 1, 2, 2\)"):
        forward('type: "Im2col" convolution_param { kernel_size: 3 }', [rand((1, 1, 2, 2))])
    with pytest.raises(LayerError, match="Im2col layer.*2-D spatial"):
        forward('type: "Im2col" convolution_param { kernel_size: 3 }', [rand((1, 1, 5))])
    with pytest.raises(LayerError, match="not both"):
        forward('type: "Im2col" convolution_param { kernel_size: 3 kernel_h: 2 kernel_w: 2 }',
                [rand((1, 1, 5, 5))])
    with pytest.raises(LayerError, match="kernel_size"):
        forward('type: "Im2col" convolution_param { stride: 2 }', [rand((1, 1, 5, 5))])


# --- SPP -------------------------------------------------------------------------------------
def pool_ref(x, kernel, stride, pad, method):
    """Caffe's pooling by loops (window clipped to the image for MAX, to the padded image for
    the AVE divisor; a last window starting in the padding is dropped)."""
    n, c, h, w = x.shape
    out_dims = []
    for size, k, s, p in zip((h, w), kernel, stride, pad):
        o = int(math.ceil((size + 2 * p - k) / s)) + 1
        if any(pad) and (o - 1) * s >= size + p:
            o -= 1
        out_dims.append(o)
    y = np.zeros((n, c) + tuple(out_dims))
    for a in range(out_dims[0]):
        for b in range(out_dims[1]):
            r0, c0 = a * stride[0] - pad[0], b * stride[1] - pad[1]
            r1, c1 = min(r0 + kernel[0], h + pad[0]), min(c0 + kernel[1], w + pad[1])
            size = (r1 - r0) * (c1 - c0)
            win = x[:, :, max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)]
            if method == "MAX":
                y[:, :, a, b] = win.max(axis=(2, 3))
            else:
                y[:, :, a, b] = win.sum(axis=(2, 3)) / size
    return y


def spp_ref(x, height, method):
    n, c, h, w = x.shape
    parts = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        y = pool_ref(x, (kh, kw), (kh, kw), (ph, pw), method)
        if height == 1:
            return y
        parts.append(y.reshape(n, -1))
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(1, (2, 3, 5, 4)), (2, (2, 2, 6, 7)),
                                          (3, (1, 2, 9, 8)), (3, (2, 1, 4, 4))])
def test_spp_forward_matches_loops(method, height, shape):
    x = rand(shape, 9)
    text = f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {method} }}'
    _, _, top = forward(text, [x])
    ref = spp_ref(x, height, method)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)


def test_spp_shapes():
    # 4x4 input, three levels: 1 + 4 + 16 bins per channel.
    _, _, top = forward('type: "SPP" spp_param { pyramid_height: 3 }', [rand((2, 3, 4, 4))])
    assert top[0].shape == (2, 3 * 21)
    # pyramid_height 1: the single pooling output itself, not flattened.
    _, _, top = forward('type: "SPP" spp_param { pyramid_height: 1 }', [rand((2, 3, 4, 4))])
    assert top[0].shape == (2, 3, 1, 1)


def test_spp_follows_input_size_changes():
    layer, bottom, top = forward('type: "SPP" spp_param { pyramid_height: 2 pool: AVE }',
                                 [rand((1, 2, 6, 6))])
    x = rand((1, 2, 9, 5), 10)
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, spp_ref(x, 2, "AVE"), rtol=1e-12)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(1, (2, 2, 5, 4)), (2, (2, 2, 5, 6)),
                                          (3, (1, 2, 8, 9))])
def test_spp_gradients(method, height, shape):
    check_gradients(f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {method} }}',
                    [distinct(shape, 11)])


def test_spp_errors():
    with pytest.raises(ShapeError, match=r"SPP layer 'under_test'.*4 axes.*\(2, 3, 4\)"):
        forward('type: "SPP" spp_param { pyramid_height: 2 }', [rand((2, 3, 4))])
    # 2x2 input, level 2 (4x4 bins): kernel 1 with pad 1, which pooling cannot do.
    with pytest.raises(ShapeError, match=r"SPP layer 'under_test'.*level 2.*\(1, 1, 2, 2\)"):
        forward('type: "SPP" spp_param { pyramid_height: 3 }', [rand((1, 1, 2, 2))])
    with pytest.raises(LayerError, match="pyramid_height"):
        forward('type: "SPP"', [rand((1, 1, 4, 4))])
    with pytest.raises(LayerError, match="STOCHASTIC"):
        forward('type: "SPP" spp_param { pyramid_height: 1 pool: STOCHASTIC }',
                [rand((1, 1, 4, 4))])


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


# --- HDF5Output ------------------------------------------------------------------------------
def test_hdf5_output_writes_data_and_label(tmp_path):
    h5py = pytest.importorskip("h5py")
    fn = tmp_path / "out.h5"
    text = f'type: "HDF5Output" hdf5_output_param {{ file_name: "{fn}" }}'
    x, y = rand((3, 4), 13), np.arange(3.0)
    layer, bottom, top = setup_layer(layer_param(text), [x, y], num_top=0)
    assert fn.exists()
    with h5py.File(fn, "r") as f:
        assert list(f.keys()) == []
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    with h5py.File(fn, "r") as f:
        assert f["data"].shape == (3, 4, 1, 1) and f["label"].shape == (3, 1, 1, 1)
        np.testing.assert_array_equal(f["data"][...].reshape(3, 4), x)
        np.testing.assert_array_equal(f["label"][...].ravel(), y)
    bottom[0].data[...] = 2 * x                  # a second forward replaces the datasets
    layer.forward(bottom, top)
    with h5py.File(fn, "r") as f:
        np.testing.assert_array_equal(f["data"][...].reshape(3, 4), 2 * x)


def test_hdf5_output_errors(tmp_path):
    pytest.importorskip("h5py")
    fn = tmp_path / "out.h5"
    text = f'type: "HDF5Output" hdf5_output_param {{ file_name: "{fn}" }}'
    with pytest.raises(ShapeError, match=r"HDF5Output layer 'under_test'.*\(3, 4\).*\(2\)"):
        setup_layer(layer_param(text), [rand((3, 4)), np.zeros(2)], num_top=0)
    with pytest.raises(LayerError, match="file_name"):
        setup_layer(layer_param('type: "HDF5Output"'), [rand((3, 4)), np.zeros(3)], num_top=0)
    with pytest.raises(LayerError, match="exactly 2 bottom"):
        setup_layer(layer_param(text), [rand((3, 4))], num_top=0)
    bad = tmp_path / "no_such_dir" / "x.h5"
    with pytest.raises(LayerError, match="cannot create HDF5 file"):
        setup_layer(layer_param(f'type: "HDF5Output" hdf5_output_param {{ file_name: "{bad}" }}'),
                    [rand((3, 4)), np.zeros(3)], num_top=0)

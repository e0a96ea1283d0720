"""Convolution / Deconvolution: forward against direct loops, gradients, shapes, errors."""
import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.errors import LayerError

pytestmark = pytest.mark.usefixtures("kernel_path")

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def conv_text(settings, kind="Convolution", fillers=FILLERS):
    return f'name: "c1" type: "{kind}" convolution_param {{ {settings} {fillers} }}'


def naive_conv(x, w, b, stride, pad, dilation, group):
    """Direct definition: y[n, m, oy, ox] = b[m] + sum over the group's channels and the kernel."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    mg = m // group
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    y = np.zeros((n, m, oh, ow))
    for ni in range(n):
        for mi in range(m):
            g = mi // mg
            for oy in range(oh):
                for ox in range(ow):
                    s = 0.0 if b is None else b[mi]
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                yy = oy * stride[0] - pad[0] + i * dilation[0]
                                xx = ox * stride[1] - pad[1] + j * dilation[1]
                                if 0 <= yy < h and 0 <= xx < wd:
                                    s += w[mi, ci, i, j] * x[ni, g * cg + ci, yy, xx]
                    y[ni, mi, oy, ox] = s
    return y


def naive_deconv(x, w, b, stride, pad, dilation, group):
    """Direct definition of the transposed convolution: every input pixel scatters its
    weighted kernel into the output (weights (C, num_output/group, kh, kw))."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // group
    oh = stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - 2 * pad[0]
    ow = stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1 - 2 * pad[1]
    y = np.zeros((n, og * group, oh, ow))
    for ni in range(n):
        for ci in range(c):
            g = ci // cg
            for iy in range(h):
                for ix in range(wd):
                    for o in range(og):
                        for i in range(kh):
                            for j in range(kw):
                                yy = iy * stride[0] - pad[0] + i * dilation[0]
                                xx = ix * stride[1] - pad[1] + j * dilation[1]
                                if 0 <= yy < oh and 0 <= xx < ow:
                                    y[ni, g * og + o, yy, xx] += w[ci, o, i, j] * x[ni, ci, iy, ix]
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


# settings, input shape, stride, pad, dilation, group
CASES = {
    "plain": ("num_output: 3 kernel_size: 3", (2, 2, 5, 6), (1, 1), (0, 0), (1, 1), 1),
    "stride2_pad1": ("num_output: 3 kernel_size: 3 stride: 2 pad: 1",
                     (2, 2, 6, 7), (2, 2), (1, 1), (1, 1), 1),
    "dilation2": ("num_output: 2 kernel_size: 3 dilation: 2 pad: 2",
                  (1, 3, 7, 6), (1, 1), (2, 2), (2, 2), 1),
    "group2": ("num_output: 4 kernel_size: 3 pad: 1 group: 2", (2, 4, 5, 5), (1, 1), (1, 1), (1, 1), 2),
    "rect": ("num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
             (2, 2, 7, 5), (2, 1), (1, 0), (1, 1), 1),
    "repeated_fields": ("num_output: 2 kernel_size: 2 kernel_size: 3 stride: 1 stride: 2 "
                        "pad: 0 pad: 1 dilation: 2 dilation: 1",
                        (1, 2, 6, 7), (1, 2), (0, 1), (2, 1), 1),
    "5x5_pad2": ("num_output: 2 kernel_size: 5 pad: 2", (2, 3, 6, 6), (1, 1), (2, 2), (1, 1), 1),
    # stride 1 but pad > d(k-1): the input gradient cannot be a flipped-kernel convolution
    "pad_exceeds_kernel": ("num_output: 2 kernel_size: 3 pad: 3", (1, 2, 4, 5), (1, 1), (3, 3),
                           (1, 1), 1),
}


def forward_case(cases, case, kind, seed):
    """``cases[case]`` run forward on seeded input: x, the layer, its top, the geometry."""
    settings, shape, stride, pad, dilation, group = cases[case]
    x = np.random.RandomState(seed).standard_normal(shape)
    layer, bottom, top = setup_layer(layer_param(conv_text(settings, kind)), [x])
    layer.forward(bottom, top)
    return x, layer, top, (stride, pad, dilation, group)


@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_forward_matches_direct_loops(case):
    x, layer, top, geometry = forward_case(CASES, case, "Convolution", seed=0)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, naive_conv(x, w, b, *geometry),
                               rtol=1e-10, atol=1e-10)


def check_case_gradients(cases, case, kind, seed):
    settings, shape = cases[case][:2]
    check_gradients(conv_text(settings, kind), [np.random.RandomState(seed).standard_normal(shape)])


@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_gradients(case):
    check_case_gradients(CASES, case, "Convolution", seed=1)


def test_conv_without_bias_has_one_blob_and_right_gradients():
    text = conv_text("num_output: 3 kernel_size: 3 stride: 2 pad: 1 bias_term: false",
                     fillers='weight_filler { type: "gaussian" }')
    x = np.random.RandomState(2).standard_normal((2, 2, 5, 5))
    layer = check_gradients(text, [x])
    assert len(layer.blobs) == 1
    assert layer.blobs[0].shape == (3, 2, 3, 3)
    bottom, top = _bt(layer, x)
    layer.forward(bottom, top)
    ref = naive_conv(x, layer.blobs[0].data, None, (2, 2), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-10)


def _bt(layer, *arrays):
    from gradcheck import make_blobs
    from minicaffe.blob import Blob
    bottom = make_blobs(arrays)
    top = [Blob(dtype=np.float64) for _ in arrays]
    layer.reshape(bottom, top)
    return bottom, top


def test_conv_two_bottom_top_pairs_share_weights():
    text = conv_text("num_output: 2 kernel_size: 3 pad: 1 stride: 2")
    rs = np.random.RandomState(3)
    x0, x1 = rs.standard_normal((2, 2, 5, 5)), rs.standard_normal((2, 2, 5, 5))
    layer = check_gradients(text, [x0, x1], num_top=2)
    bottom, top = _bt(layer, x0, x1)
    layer.forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    for xi, t in zip((x0, x1), top):
        np.testing.assert_allclose(t.data, naive_conv(xi, w, b, (2, 2), (1, 1), (1, 1), 1),
                                   rtol=1e-10, atol=1e-10)


def test_conv_two_pairs_weight_gradient_is_sum_of_both():
    text = conv_text("num_output: 2 kernel_size: 3")
    rs = np.random.RandomState(4)
    x0, x1 = rs.standard_normal((1, 2, 4, 4)), rs.standard_normal((1, 2, 4, 4))

    def grads(arrays):
        layer, bottom, top = setup_layer(layer_param(text), arrays, num_top=len(arrays))
        layer.forward(bottom, top)
        for t in top:
            t.diff[...] = 1.0
        for p in layer.blobs:
            p.diff[...] = 0
        layer.backward(top, [True] * len(arrays), bottom)
        return [p.diff.copy() for p in layer.blobs]

    both, only0, only1 = grads([x0, x1]), grads([x0]), grads([x1])
    for k in range(2):
        np.testing.assert_allclose(both[k], only0[k] + only1[k], rtol=1e-12)


def test_conv_axis_2_folds_leading_axes_into_the_batch():
    x = np.random.RandomState(5).standard_normal((2, 3, 2, 5, 4))
    text = conv_text("num_output: 3 kernel_size: 3 pad: 1 axis: 2")
    layer, bottom, top = setup_layer(layer_param(text), [x])
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 3, 5, 4)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    ref = naive_conv(x.reshape(6, 2, 5, 4), w, b, (1, 1), (1, 1), (1, 1), 1).reshape(2, 3, 3, 5, 4)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-10)
    check_gradients(text, [x])


def test_conv_output_shapes_follow_caffe_formula():
    for settings, shape, want in [
        ("num_output: 32 kernel_size: 5 pad: 2", (1, 3, 32, 32), (1, 32, 32, 32)),
        ("num_output: 4 kernel_size: 3 stride: 2", (1, 1, 32, 32), (1, 4, 15, 15)),
        ("num_output: 4 kernel_size: 3 stride: 2 pad: 1", (1, 1, 32, 32), (1, 4, 16, 16)),
        ("num_output: 4 kernel_size: 3 dilation: 3", (1, 1, 10, 11), (1, 4, 4, 5)),
        ("num_output: 4 kernel_h: 1 kernel_w: 5 stride_h: 3 stride_w: 2", (2, 1, 10, 11),
         (2, 4, 4, 4)),
    ]:
        _, _, top = setup_layer(layer_param(conv_text(settings)), [np.zeros(shape)])
        assert top[0].shape == want, settings


def test_conv_weight_shape_with_group_and_default_fillers():
    text = 'name: "c1" type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 group: 3 }'
    layer, _, _ = setup_layer(layer_param(text), [np.zeros((1, 9, 4, 4))])
    assert [b.shape for b in layer.blobs] == [(6, 3, 3, 3), (6,)]
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()   # constant 0


def test_conv_reshape_with_new_spatial_size_and_batch():
    text = conv_text("num_output: 2 kernel_size: 3 pad: 1 stride: 2")
    layer, _, _ = setup_layer(layer_param(text), [np.zeros((2, 2, 6, 6))])
    x = np.random.RandomState(6).standard_normal((3, 2, 9, 7))
    bottom, top = _bt(layer, x)
    layer.forward(bottom, top)
    ref = naive_conv(x, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-10)


def test_conv_wrong_channels_names_layer_and_shapes():
    layer, _, _ = setup_layer(layer_param(conv_text("num_output: 2 kernel_size: 3")),
                              [np.zeros((1, 3, 5, 5))])
    with pytest.raises(LayerError, match=r"'c1'.*\(1, 4, 5, 5\)"):
        _bt(layer, np.zeros((1, 4, 5, 5)))


def test_conv_bottoms_of_different_shapes_rejected():
    with pytest.raises(LayerError, match=r"'c1'.*same shape"):
        setup_layer(layer_param(conv_text("num_output: 2 kernel_size: 3")),
                    [np.zeros((1, 3, 5, 5)), np.zeros((1, 3, 6, 5))], num_top=2)


@pytest.mark.parametrize("settings, shape, pattern", [
    ("num_output: 3 kernel_size: 3 group: 2", (1, 4, 5, 5), "multiple of group"),
    ("num_output: 4 kernel_size: 3 group: 2", (1, 3, 5, 5), "multiple of group"),
    ("num_output: 4", (1, 3, 5, 5), "kernel_size"),
    ("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3", (1, 3, 5, 5), "not both"),
    ("num_output: 4 kernel_size: 7", (1, 3, 5, 5), "does not fit"),
    ("num_output: 4 kernel_size: 3", (1, 3, 5, 5, 5), "spatial"),
    ("kernel_size: 3", (1, 3, 5, 5), "num_output"),
])
def test_conv_bad_settings_fail_with_layer_name(settings, shape, pattern):
    with pytest.raises(LayerError, match=rf"Convolution layer 'c1'.*{pattern}"):
        setup_layer(layer_param(conv_text(settings)), [np.zeros(shape)])


# -- Deconvolution -----------------------------------------------------------------------------
DECONV_CASES = {
    "stride2_pad1": ("num_output: 3 kernel_size: 3 stride: 2 pad: 1", (2, 2, 3, 4), (2, 2), (1, 1),
                     (1, 1), 1),
    "group2_rect": ("num_output: 4 kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 group: 2",
                    (1, 4, 3, 3), (2, 1), (0, 0), (1, 1), 2),
    "dilation": ("num_output: 2 kernel_size: 3 dilation: 2 pad: 1", (1, 2, 3, 3), (1, 1), (1, 1),
                 (2, 2), 1),
}


@pytest.mark.parametrize("case", sorted(DECONV_CASES))
def test_deconv_forward_matches_direct_loops(case):
    x, layer, top, geometry = forward_case(DECONV_CASES, case, "Deconvolution", seed=7)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert w.shape[0] == x.shape[1]      # (C, num_output/group, kh, kw)
    np.testing.assert_allclose(top[0].data, naive_deconv(x, w, b, *geometry),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", sorted(DECONV_CASES))
def test_deconv_gradients(case):
    check_case_gradients(DECONV_CASES, case, "Deconvolution", seed=8)


def test_deconv_two_pairs_and_no_bias():
    text = conv_text("num_output: 2 kernel_size: 2 stride: 2 bias_term: false", "Deconvolution",
                     'weight_filler { type: "gaussian" }')
    rs = np.random.RandomState(9)
    layer = check_gradients(text, [rs.standard_normal((1, 2, 3, 3)), rs.standard_normal((1, 2, 3, 3))],
                            num_top=2)
    assert len(layer.blobs) == 1


def test_deconv_output_size_inverts_conv():
    text = conv_text("num_output: 8 kernel_size: 4 stride: 2 pad: 1", "Deconvolution")
    _, _, top = setup_layer(layer_param(text), [np.zeros((2, 3, 16, 16))])
    assert top[0].shape == (2, 8, 32, 32)


def test_conv_weights_given_with_the_layer_are_used_and_checked():
    w = np.arange(2 * 1 * 2 * 2, dtype=float) - 3.0
    blobs = ('blobs { shape { dim: 2 dim: 1 dim: 2 dim: 2 } '
             + " ".join(f"data: {v}" for v in w) + ' } blobs { shape { dim: 2 } data: 0.5 data: -1 }')
    text = f'name: "c1" type: "Convolution" convolution_param {{ num_output: 2 kernel_size: 2 }} {blobs}'
    x = np.random.RandomState(10).standard_normal((1, 1, 3, 4))
    layer, bottom, top = setup_layer(layer_param(text), [x])
    layer.forward(bottom, top)
    want = naive_conv(x, w.reshape(2, 1, 2, 2), np.array([0.5, -1.0]), (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-6)
    with pytest.raises(LayerError, match=r"'c1'.*\(2, 1, 2, 2\).*\(2, 1, 3, 3\)"):
        setup_layer(layer_param(text.replace("kernel_size: 2", "kernel_size: 3")), [x])


# -- chunked batches (TEST phase, or columns over the keep budget) ------------------------------
@pytest.fixture
def tiny_chunks(monkeypatch):
    """Columns of at most ~1 image per chunk, and never kept from forward to backward."""
    from minicaffe.layers import convolution
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)
    monkeypatch.setattr(convolution, "KEEP_COLS_BYTES", 0)


@pytest.mark.parametrize("case", ["5x5_pad2", "stride2_pad1", "group2", "pad_exceeds_kernel",
                                  "dilation2", "plain"])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_conv_in_chunks_matches_direct_loops_and_gradients(tiny_chunks, case, phase):
    settings, shape, stride, pad, dilation, group = CASES[case]
    shape = (3,) + shape[1:]
    x = np.random.RandomState(11).standard_normal(shape)
    text = conv_text(settings) + f" phase: {phase}"
    layer, bottom, top = setup_layer(layer_param(text), [x])
    assert layer.chunk == 1 and not layer.keep_cols
    layer.forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, naive_conv(x, w, b, stride, pad, dilation, group),
                               rtol=1e-10, atol=1e-10)
    check_gradients(text, [x])


@pytest.mark.parametrize("case", ["5x5_pad2", "dilation2", "group2", "stride2_pad1"])
def test_conv_weight_gradient_alone_in_chunks(tiny_chunks, case):
    # Without an input gradient the weight gradient comes from the input's own columns;
    # with one (stride 1) it comes from the columns of the flipped response gradient.
    settings, shape = CASES[case][:2]
    x = np.random.RandomState(13).standard_normal((3,) + shape[1:])
    check_gradients(conv_text(settings), [x], check_bottom=[])


def test_conv_two_pairs_in_chunks(tiny_chunks):
    rs = np.random.RandomState(14)
    x0, x1 = rs.standard_normal((2, 2, 5, 5)), rs.standard_normal((2, 2, 5, 5))
    check_gradients(conv_text("num_output: 2 kernel_size: 3 pad: 1"), [x0, x1], num_top=2)
    check_gradients(conv_text("num_output: 2 kernel_size: 3 pad: 1"), [x0, x1], num_top=2,
                    check_bottom=[1])


@pytest.fixture
def whole_batch_path(kernel_path):
    if kernel_path == "compiled":
        pytest.skip("about the whole-batch path (the array one here)")


def test_conv_keeps_whole_batch_columns_only_when_backward_would_rebuild_them(whole_batch_path):
    x = np.zeros((4, 2, 6, 6))
    text = conv_text("num_output: 2 kernel_size: 3")
    train, bottom, top = setup_layer(layer_param(text), [x])
    test, _, _ = setup_layer(layer_param(text + " phase: TEST"), [x])
    strided, sb, st = setup_layer(layer_param(conv_text("num_output: 2 kernel_size: 3 stride: 2")),
                                  [x])
    # A bottom that may need a gradient: the weight gradient comes from its flipped columns.
    assert not train.keep_cols
    assert strided.keep_cols and strided.chunk == 4   # strided: no flipped columns
    train.bottom_need_backward = (False,)             # set by Net (a first layer, as conv1)
    train.reshape(bottom, top)
    assert train.keep_cols and train.chunk == 4
    test.bottom_need_backward = (False,)
    test.reshape(bottom, top)
    assert not test.keep_cols
    train.param_propagate_down = [False, True]        # lr_mult 0 on the weights
    train.reshape(bottom, top)
    assert not train.keep_cols
    train.param_propagate_down = [True, True]
    train.keeps_backward_state = False                # Net.set_forward_only
    train.reshape(bottom, top)
    assert not train.keep_cols


def test_net_tells_layers_which_bottoms_need_gradients(whole_batch_path):
    from minicaffe.net import Net
    from minicaffe.proto import caffe_pb2
    from google.protobuf import text_format
    text = """
    layer { name: "in" type: "Input" top: "x" top: "y"
            input_param { shape { dim: 2 dim: 2 dim: 6 dim: 6 } shape { dim: 2 dim: 2 dim: 6 dim: 6 } } }
    layer { name: "c1" type: "Convolution" bottom: "x" top: "c1"
            convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
    layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
            convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "c2" bottom: "y" top: "loss" }
    """
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe_pb2.TRAIN)
    c1, c2 = net.layer_by_name["c1"], net.layer_by_name["c2"]
    assert c1.bottom_need_backward == (False,) and c2.bottom_need_backward == (True,)
    net.forward()
    assert c1.keep_cols and not c2.keep_cols


@pytest.mark.parametrize("case", sorted(DECONV_CASES))
def test_deconv_in_chunks(tiny_chunks, case):
    settings, shape, stride, pad, dilation, group = DECONV_CASES[case]
    shape = (3,) + shape[1:]
    x = np.random.RandomState(12).standard_normal(shape)
    text = conv_text(settings, "Deconvolution")
    layer, bottom, top = setup_layer(layer_param(text), [x])
    assert layer.chunk == 1
    layer.forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, naive_deconv(x, w, b, stride, pad, dilation, group),
                               rtol=1e-10, atol=1e-10)
    check_gradients(text, [x])


# -- per-image path (NumPy with the numba kernels: engines/conv_per_image.py) ---------------------------------
@pytest.fixture
def per_image(kernel_path):
    from minicaffe.engines import cpu_threads
    if kernel_path != "compiled" or not cpu_threads.available():
        pytest.skip("the per-image path needs the numba kernels and threadpoolctl")
    yield cpu_threads
    cpu_threads.set_workers(None)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("case", ["5x5_pad2", "stride2_pad1", "group2", "dilation2", "rect"])
def test_per_image_path_matches_direct_loops_and_gradients(per_image, workers, case):
    per_image.set_workers(workers)
    settings, shape, stride, pad, dilation, group = CASES[case]
    x = np.random.RandomState(15).standard_normal((5,) + shape[1:])   # 5 images: uneven parts
    layer, bottom, top = setup_layer(layer_param(conv_text(settings)), [x])
    assert layer.per_image and not layer.keep_cols
    layer.forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, naive_conv(x, w, b, stride, pad, dilation, group),
                               rtol=1e-10, atol=1e-10)
    check_gradients(conv_text(settings), [x])
    check_gradients(conv_text(settings), [x], check_bottom=[])    # weights only


# Rows wider than KW*Cg: the columns are built in Caffe's (c, i, j) x (oh, ow) order.
WIDE_CASES = {
    "rgb_5x5": ("num_output: 4 kernel_size: 5 pad: 2", (3, 3, 5, 18), (1, 1), (2, 2), (1, 1), 1),
    "stride_w2": ("num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_w: 1",
                  (3, 2, 5, 30), (1, 2), (0, 1), (1, 1), 1),
    "dilated_group": ("num_output: 4 kernel_size: 3 dilation: 2 pad: 2 group: 2",
                      (3, 4, 6, 16), (1, 1), (2, 2), (2, 2), 2),
}


@pytest.mark.parametrize("case", sorted(WIDE_CASES))
def test_per_image_caffe_order_columns(per_image, case):
    from minicaffe.engines import conv_per_image as conv_cpu
    per_image.set_workers(2)
    settings, shape, stride, pad, dilation, group = WIDE_CASES[case]
    x = np.random.RandomState(19).standard_normal(shape)
    layer, bottom, top = setup_layer(layer_param(conv_text(settings)), [x])
    assert layer.per_image and conv_cpu.caffe_order(layer)
    layer.forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, naive_conv(x, w, b, stride, pad, dilation, group),
                               rtol=1e-10, atol=1e-10)
    check_gradients(conv_text(settings), [x], check_bottom=[])   # dW from these columns
    check_gradients(conv_text(settings), [x])


def test_per_image_path_float32_and_blas_threads_restored(per_image):
    from threadpoolctl import threadpool_info
    held = {lib["filepath"] for lib in per_image._blas().info()}
    before = [lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in held]
    per_image.set_workers(2)
    x = np.random.RandomState(16).standard_normal((4, 3, 9, 9)).astype(np.float32)
    text = conv_text("num_output: 4 kernel_size: 5 pad: 2")
    layer, bottom, top = setup_layer(layer_param(text), [x], dtype=np.float32)
    layer.forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    want = naive_conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                      (1, 1), (2, 2), (1, 1), 1)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-4, atol=1e-4)
    after = [lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in held]
    assert after == before


def test_per_image_results_do_not_depend_on_the_thread_count(per_image):
    rs = np.random.RandomState(17)
    x = rs.standard_normal((11, 4, 7, 7)).astype(np.float32)
    dy = rs.standard_normal((11, 6, 7, 7)).astype(np.float32)
    text = conv_text("num_output: 6 kernel_size: 3 pad: 1 group: 2")
    got = []
    for workers in (1, 2, 3):
        per_image.set_workers(workers)
        layer, bottom, top = setup_layer(layer_param(text), [x], dtype=np.float32)
        if not got:
            weights = [b.data.copy() for b in layer.blobs]
        for b, w in zip(layer.blobs, weights):
            b.data[...] = w
        layer.forward(bottom, top)
        top[0].diff[...] = dy
        layer.blobs[0].diff[...] = 0
        layer.backward(top, [True], bottom)
        got.append((top[0].data.copy(), layer.blobs[0].diff.copy(), bottom[0].diff.copy()))
    for other in got[1:]:
        for a, b in zip(got[0], other):
            np.testing.assert_array_equal(a, b)

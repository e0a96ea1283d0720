"""STOCHASTIC pooling against Caffe's GPU kernels written out as per-window loops.

A finite-difference gradient check does not apply to TRAIN: the output is a sampled pixel, a
piecewise-constant choice whose threshold moves with the inputs, so a small step can change
the chosen pixel (a jump) and the derivative Caffe defines is the routing to the chosen pixel,
not a derivative of an expectation. Backward is checked against that routing instead.
"""
import math

import numpy as np
import pytest

import minicaffe as caffe
from gradcheck import layer_param, setup_layer
from minicaffe import backend
from minicaffe.errors import LayerError
from minicaffe.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def pool_text(settings):
    return f'name: "sp" type: "Pooling" pooling_param {{ pool: STOCHASTIC {settings} }}'


def windows(shape, kernel, stride):
    """Caffe's STOCHASTIC windows: (ph, pw, rows, cols), no padding, clipped to the image,
    output size ceil((size - k) / s) + 1."""
    h, w = shape[2:]
    out_h = math.ceil((h - kernel[0]) / stride[0]) + 1
    out_w = math.ceil((w - kernel[1]) / stride[1]) + 1
    for ph in range(out_h):
        for pw in range(out_w):
            h0, w0 = ph * stride[0], pw * stride[1]
            yield ph, pw, range(h0, min(h0 + kernel[0], h)), range(w0, min(w0 + kernel[1], w))


def out_shape(shape, kernel, stride):
    last = list(windows(shape, kernel, stride))[-1]
    return shape[:2] + (last[0] + 1, last[1] + 1)


def loop_test_forward(x, kernel, stride):
    """StoPoolForwardTest: sum of squares over FLT_MIN + sum, one window at a time."""
    y = np.zeros(out_shape(x.shape, kernel, stride))
    for a in range(x.shape[0]):
        for b in range(x.shape[1]):
            for ph, pw, rows, cols in windows(x.shape, kernel, stride):
                s, q = float(FLT_MIN), 0.0
                for r in rows:
                    for c in cols:
                        s += x[a, b, r, c]
                        q += x[a, b, r, c] ** 2
                y[a, b, ph, pw] = q / s
    return y


def loop_train_forward(x, u, kernel, stride):
    """StoPoolForwardTrain in float32 with given draws u: the first pixel whose running sum
    reaches u * sum. Returns (top, flat index into x of each chosen pixel)."""
    y = np.zeros(out_shape(x.shape, kernel, stride), np.float32)
    idx = np.full(y.shape, -1, np.int64)
    for a in range(x.shape[0]):
        for b in range(x.shape[1]):
            for ph, pw, rows, cols in windows(x.shape, kernel, stride):
                pixels = [(r, c) for r in rows for c in cols]
                total = np.float32(0)
                for r, c in pixels:
                    total = np.float32(total + x[a, b, r, c])
                thres = np.float32(u[a, b, ph, pw] * total)
                run = np.float32(0)
                for r, c in pixels:
                    run = np.float32(run + x[a, b, r, c])
                    if run >= thres:
                        y[a, b, ph, pw] = x[a, b, r, c]
                        idx[a, b, ph, pw] = np.ravel_multi_index((a, b, r, c), x.shape)
                        break
    return y, idx


def run(settings, x, phase=TRAIN, dtype=np.float32, seed=None):
    if seed is not None:
        caffe.set_random_seed(seed)
    layer, bottom, top = setup_layer(layer_param(pool_text(settings), phase), [x], dtype=dtype)
    layer.forward(bottom, top)
    return layer, bottom, top


def relu_input(shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.maximum(x, 0)


GEOMETRIES = [
    ("kernel_size: 3 stride: 2", (3, 3), (2, 2), (2, 3, 9, 8)),     # last window overhangs
    ("kernel_size: 2 stride: 1", (2, 2), (1, 1), (1, 2, 5, 6)),     # overlapping windows
    ("kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2", (3, 2), (1, 2), (2, 2, 6, 7)),
    ("kernel_size: 4 stride: 3", (4, 4), (3, 3), (1, 3, 11, 9)),
]


@pytest.mark.parametrize("settings, kernel, stride, shape", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_test_phase_is_probability_weighted_mean(settings, kernel, stride, shape, dtype):
    x = relu_input(shape, seed=1).astype(dtype)
    x[0, 0, :4, :4] = 0                                  # an all-zero window: 0 / FLT_MIN
    _, _, top = run(settings, x, TEST, dtype)
    want = loop_test_forward(x.astype(np.float64), kernel, stride)
    assert top[0].shape == want.shape
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(top[0].data, want, rtol=tol, atol=tol)
    assert top[0].data[0, 0, 0, 0] == 0


def test_global_pooling_test_phase():
    x = relu_input((2, 3, 5, 4), seed=2)
    _, _, top = run("global_pooling: true", x, TEST, np.float64)
    want = (x ** 2).sum(axis=(2, 3)) / (FLT_MIN + x.sum(axis=(2, 3)))
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], want, rtol=1e-12)


@pytest.mark.parametrize("settings, kernel, stride, shape", GEOMETRIES)
def test_train_choice_matches_caffe_loop_with_the_same_draws(settings, kernel, stride, shape):
    x = relu_input(shape, seed=3).astype(np.float32)
    x[0, 0, :2, :2] = 0
    layer, _, top = run(settings, x, seed=11)
    caffe.set_random_seed(11)        # the same draws: u = 1 - U[0, 1) from the host generator
    u = 1 - backend.rng().random(top[0].shape, dtype=np.float32)
    want_y, want_idx = loop_train_forward(x, u, kernel, stride)
    np.testing.assert_array_equal(layer.stochastic.rand_idx(layer.kernel, layer.stride),
                                  want_idx)
    np.testing.assert_array_equal(top[0].data, want_y)


@pytest.mark.parametrize("settings, kernel, stride, shape", GEOMETRIES)
def test_train_output_is_the_chosen_pixel_of_its_window(settings, kernel, stride, shape):
    x = relu_input(shape, seed=4) + 0.01       # positive: every pixel can be chosen
    layer, _, top = run(settings, x, dtype=np.float64, seed=5)
    idx = layer.stochastic.rand_idx(layer.kernel, layer.stride)
    for a in range(shape[0]):
        for b in range(shape[1]):
            for ph, pw, rows, cols in windows(shape, kernel, stride):
                n, c, r, col = np.unravel_index(idx[a, b, ph, pw], shape)
                assert (n, c) == (a, b) and r in rows and col in cols
                assert top[0].data[a, b, ph, pw] == x[a, b, r, col]


def test_train_frequencies_follow_the_activations():
    """40000 identical 2x3 windows: the counts of each chosen pixel against n * x_i / sum by a
    chi-square statistic (3 degrees of freedom; 16.27 is its 0.999 quantile); zero pixels are
    never chosen."""
    window = np.array([[0.5, 0.0, 2.0], [1.0, 0.0, 1.5]])
    n = 40000
    x = np.broadcast_to(window, (n, 1, 2, 3)).astype(np.float32)
    layer, _, top = run("kernel_h: 2 kernel_w: 3", x, seed=21)
    counts = np.bincount(layer.stochastic.pick.ravel(), minlength=6)
    assert counts[1] == counts[4] == 0
    expect = n * window.ravel() / window.sum()
    live = expect > 0
    chi2 = ((counts[live] - expect[live]) ** 2 / expect[live]).sum()
    assert chi2 < 16.27, (counts, expect)
    chosen = window.ravel()[layer.stochastic.pick.ravel()]
    np.testing.assert_array_equal(top[0].data.ravel(), chosen)


@pytest.mark.parametrize("settings, kernel, stride, shape", GEOMETRIES)
def test_backward_routes_top_diff_to_the_recorded_pixel(settings, kernel, stride, shape):
    x = relu_input(shape, seed=6)
    layer, bottom, top = run(settings, x, dtype=np.float64, seed=7)
    dy = np.random.default_rng(8).integers(-5, 6, top[0].shape).astype(np.float64)
    top[0].diff[...] = dy
    bottom[0].diff[...] = 123.0                    # backward overwrites, as Caffe's does
    layer.backward(top, [True], bottom)
    want = np.zeros(x.size)
    for i, d in zip(layer.stochastic.rand_idx(layer.kernel, layer.stride).ravel(), dy.ravel()):
        want[i] += d                               # integers: the sums are exact
    np.testing.assert_array_equal(bottom[0].diff.ravel(), want)


def test_overlapping_windows_accumulate_on_a_shared_pixel():
    # One positive pixel in the middle of 3x3: each of the four 2x2 windows must choose it.
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 2.0
    layer, bottom, top = run("kernel_size: 2 stride: 1", x, dtype=np.float64, seed=9)
    np.testing.assert_array_equal(top[0].data, np.full((1, 1, 2, 2), 2.0))
    top[0].diff[...] = np.array([1.0, 2.0, 4.0, 8.0]).reshape(1, 1, 2, 2)
    layer.backward(top, [True], bottom)
    want = np.zeros((1, 1, 3, 3))
    want[0, 0, 1, 1] = 15.0
    np.testing.assert_array_equal(bottom[0].diff, want)


def test_all_zero_window_takes_its_first_pixel():
    # Caffe: threshold u * 0 = 0, which the first running sum (0) already reaches.
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2:, 2:] = 1.0                                  # only the last window is non-zero
    layer, bottom, top = run("kernel_size: 2 stride: 2", x, dtype=np.float64, seed=10)
    idx = layer.stochastic.rand_idx(layer.kernel, layer.stride)[0, 0]
    np.testing.assert_array_equal(idx[[0, 0, 1], [0, 1, 0]], [0, 2, 8])
    assert top[0].data[0, 0, 1, 1] == 1.0 and idx[1, 1] in (10, 11, 14, 15)
    np.testing.assert_array_equal(top[0].data[0, 0], [[0, 0], [0, 1]])
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.ravel()[[0, 2, 8, idx[1, 1]]].tolist() == [1, 1, 1, 1]
    assert bottom[0].diff.sum() == 4


def test_window_past_the_image_gives_zero_and_no_gradient():
    # kernel 1, stride 3 on 5 rows: ceil(4/3)+1 = 3 windows, the last starting at row 6.
    x = np.ones((1, 1, 5, 1))
    layer, bottom, top = run("kernel_size: 1 stride: 3", x, dtype=np.float64, seed=12)
    np.testing.assert_array_equal(top[0].data.ravel(), [1, 1, 0])
    assert layer.stochastic.rand_idx(layer.kernel, layer.stride).ravel().tolist() == [0, 3, -1]
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff.ravel(), [1, 0, 0, 1, 0])
    _, _, test_top = run("kernel_size: 1 stride: 3", x, TEST, np.float64)
    np.testing.assert_array_equal(test_top[0].data.ravel(), [1, 1, 0])


def test_fixed_seed_reproduces_the_choices():
    x = relu_input((4, 3, 8, 8), seed=13) + 0.1
    picks = []
    for seed in (31, 31, 32):
        layer, _, top = run("kernel_size: 3 stride: 2", x, seed=seed)
        picks.append((layer.stochastic.pick.copy(), top[0].data.copy()))
    np.testing.assert_array_equal(picks[0][0], picks[1][0])
    np.testing.assert_array_equal(picks[0][1], picks[1][1])
    assert (picks[0][0] != picks[2][0]).any()


def test_test_phase_backward_is_refused():
    layer, bottom, top = run("kernel_size: 2", relu_input((1, 1, 4, 4), 14), TEST, np.float64)
    with pytest.raises(LayerError, match="Pooling layer 'sp'.*no backward in the TEST phase"):
        layer.backward(top, [True], bottom)


def test_no_mask_top():
    with pytest.raises(LayerError, match="second top"):
        setup_layer(layer_param(pool_text("kernel_size: 2")), [np.ones((1, 1, 4, 4))],
                    num_top=2)


DEPLOY = """
name: "stochastic_deploy"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 } }
"""


def test_deploy_net_runs_forward(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(DEPLOY)
    net = caffe.Net(str(path), caffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(15).standard_normal((2, 3, 9, 9))
    out = net.forward()["pool"]
    assert out.shape == (2, 4, 4, 4)
    conv = net.blobs["conv"].data.astype(np.float64)
    assert (conv >= 0).all()
    np.testing.assert_allclose(out, loop_test_forward(conv, (3, 3), (2, 2)), rtol=2e-6,
                               atol=1e-7)

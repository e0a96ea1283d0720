"""Pooling: forward against Caffe's per-window loops, output sizes, gradients, errors."""
import math

import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, make_blobs, setup_layer
from minicaffe.blob import Blob
from minicaffe.errors import LayerError

FLT_MAX = float(np.finfo(np.float32).max)


pytestmark = pytest.mark.usefixtures("kernel_path")


def pool_text(settings):
    return f'name: "p1" type: "Pooling" pooling_param {{ {settings} }}'


def expected_size(size, k, s, p, ceil=True, padded=None):
    pooled = (math.ceil if ceil else math.floor)((size + 2 * p - k) / s) + 1
    if (p > 0 if padded is None else padded) and (pooled - 1) * s >= size + p:
        pooled -= 1
    return pooled


def naive_pool(x, method, kernel, stride, pad, ceil=True):
    """Caffe's definition, one window at a time. Returns (top, mask) (mask None for AVE)."""
    n, c, h, w = x.shape
    padded = pad != (0, 0)
    ph_n = expected_size(h, kernel[0], stride[0], pad[0], ceil, padded)
    pw_n = expected_size(w, kernel[1], stride[1], pad[1], ceil, padded)
    y = np.zeros((n, c, ph_n, pw_n))
    mask = np.full((n, c, ph_n, pw_n), -1.0)
    for a in range(n):
        for b in range(c):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    h0, w0 = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
                    h1, w1 = min(h0 + kernel[0], h + pad[0]), min(w0 + kernel[1], w + pad[1])
                    size = (h1 - h0) * (w1 - w0)
                    h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
                    if method == "MAX":
                        best = -FLT_MAX
                        for hh in range(h0, h1):
                            for ww in range(w0, w1):
                                if x[a, b, hh, ww] > best:
                                    best = x[a, b, hh, ww]
                                    mask[a, b, ph, pw] = hh * w + ww
                        y[a, b, ph, pw] = best
                    else:
                        y[a, b, ph, pw] = x[a, b, h0:h1, w0:w1].sum() / size
    return y, (mask if method == "MAX" else None)


def distinct(shape, seed=0):
    """Distinct values spaced far apart relative to the finite-difference step."""
    n = int(np.prod(shape))
    return np.random.RandomState(seed).permutation(n).reshape(shape) * 0.01 - n * 0.005


# settings, input shape, kernel, stride, pad, ceil
CASES = {
    "max_3x3s2_ceil": ("pool: MAX kernel_size: 3 stride: 2", (2, 2, 8, 9), (3, 3), (2, 2), (0, 0), True),
    "max_pad1": ("pool: MAX kernel_size: 3 stride: 2 pad: 1", (1, 2, 7, 6), (3, 3), (2, 2), (1, 1), True),
    "max_2x2s2": ("pool: MAX kernel_size: 2 stride: 2", (2, 3, 6, 6), (2, 2), (2, 2), (0, 0), True),
    "max_rect": ("pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0",
                 (1, 2, 5, 7), (3, 2), (1, 2), (1, 0), True),
    "max_floor": ("pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 2, 8, 8), (3, 3), (2, 2),
                  (0, 0), False),
    "ave_3x3s2_ceil": ("pool: AVE kernel_size: 3 stride: 2", (2, 2, 8, 9), (3, 3), (2, 2), (0, 0), True),
    "ave_pad_overhang": ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (2, 2, 6, 7), (3, 3), (2, 2),
                         (1, 1), True),
    "ave_pad_drop_last": ("pool: AVE kernel_size: 2 stride: 2 pad: 1", (1, 2, 5, 5), (2, 2), (2, 2),
                          (1, 1), True),
    "ave_rect_pad": ("pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2",
                     (1, 2, 5, 4), (2, 3), (2, 1), (1, 2), True),
    # stride > kernel: with pad_w only, Caffe's clip rule also drops the empty last row window.
    # stride > kernel with only one axis padded: Caffe's clip rule drops the last window on
    # BOTH axes (here the unpadded one: it would start at 8 >= 7 and be empty).
    "max_stride_gt_kernel_padw": ("pool: MAX kernel_size: 2 stride: 4 pad_h: 0 pad_w: 1",
                                  (1, 2, 7, 6), (2, 2), (4, 4), (0, 1), True),
    "ave_stride_gt_kernel_padh": ("pool: AVE kernel_size: 2 stride: 4 pad_h: 1 pad_w: 0",
                                  (1, 2, 7, 8), (2, 2), (4, 4), (1, 0), True),
    "ave_floor": ("pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR pad: 1", (1, 2, 8, 8), (3, 3),
                  (2, 2), (1, 1), False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pool_forward_matches_caffe_loops(case):
    settings, shape, kernel, stride, pad, ceil = CASES[case]
    method = settings.split()[1]
    x = distinct(shape)
    num_top = 2 if method == "MAX" else 1
    layer, bottom, top = setup_layer(layer_param(pool_text(settings)), [x], num_top=num_top)
    layer.forward(bottom, top)
    want, want_mask = naive_pool(x, method, kernel, stride, pad, ceil)
    assert top[0].shape == want.shape
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    if method == "MAX":
        np.testing.assert_array_equal(top[1].data, want_mask)


@pytest.mark.parametrize("case", sorted(CASES))
def test_pool_gradients(case):
    settings, shape = CASES[case][:2]
    num_top = 2 if "MAX" in settings else 1
    check_gradients(pool_text(settings), [distinct(shape, seed=1)], num_top=num_top)


def test_caffe_output_size_rules():
    def out_hw(settings, shape):
        return tuple(setup_layer(layer_param(pool_text(settings)), [np.zeros(shape)])[2][0].shape)
    # ceil((32-3)/2)+1 = 16 (Caffe), not 15 as floor would give.
    assert expected_size(32, 3, 2, 0) == 16
    assert out_hw("pool: MAX kernel_size: 3 stride: 2", (1, 1, 32, 32)) == (1, 1, 16, 16)
    assert out_hw("pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 1, 32, 32)) == (1, 1, 15, 15)
    # 5 + 2*1 = 7 padded, k=2 s=2: ceil(5/2)+1 = 4, but window 3 would start at 6 >= 5+1 -> 3.
    assert math.ceil((5 + 2 - 2) / 2) + 1 == 4 and expected_size(5, 2, 2, 1) == 3
    assert out_hw("pool: AVE kernel_size: 2 stride: 2 pad: 1", (1, 1, 5, 5)) == (1, 1, 3, 3)
    assert out_hw("pool: MAX kernel_size: 3 stride: 2 pad: 1", (1, 1, 32, 32)) == (1, 1, 17, 17)


def test_stride_beyond_kernel_without_padding_keeps_caffes_empty_window():
    # k=1, s=3 on 5: ceil(4/3)+1 = 3 windows starting at 0, 3, 6; the last one is empty.
    x = distinct((1, 1, 5, 5))
    for method, empty in (("MAX", -FLT_MAX), ("AVE", 0.0)):
        text = pool_text(f"pool: {method} kernel_size: 1 stride: 3")
        layer, bottom, top = setup_layer(layer_param(text), [x])
        layer.forward(bottom, top)
        want = np.full((3, 3), empty)
        want[:2, :2] = x[0, 0, ::3, ::3]
        np.testing.assert_array_equal(top[0].data[0, 0], want)


def test_ave_divides_by_window_clipped_to_padded_image():
    """Ones in, so each output is (real pixels in window) / (window clipped to [-p, H+p))."""
    text = pool_text("pool: AVE kernel_size: 3 stride: 2 pad: 1")
    # H=2: windows [-1,2) and [1,4)->[1,3): real pixels 2 and 1, divisors 3 and 2 per axis.
    # H=4: windows [-1,2), [1,4), [3,6)->[3,5): real pixels 2, 3, 1, divisors 3, 3, 2.
    for size, real, divisor in [(2, [2, 1], [3, 2]), (4, [2, 3, 1], [3, 3, 2])]:
        layer, b, t = setup_layer(layer_param(text), [np.ones((1, 1, size, size))])
        layer.forward(b, t)
        want = np.outer(real, real) / np.outer(divisor, divisor)
        np.testing.assert_allclose(t[0].data[0, 0], want, rtol=1e-12)


def test_max_ties_pick_first_in_window_order_and_route_gradient_there():
    x = np.zeros((1, 1, 4, 4))
    layer, bottom, top = setup_layer(layer_param(pool_text("pool: MAX kernel_size: 2 stride: 1")),
                                     [x], num_top=2)
    layer.forward(bottom, top)
    # Every window is all zeros: the mask is the window's top-left pixel.
    want_mask = np.array([[h * 4 + w for w in range(3)] for h in range(3)], dtype=float)
    np.testing.assert_array_equal(top[1].data[0, 0], want_mask)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    want = np.zeros((4, 4))
    want[:3, :3] = 1.0
    np.testing.assert_array_equal(bottom[0].diff[0, 0], want)


def test_max_padding_never_wins():
    x = -np.ones((1, 1, 3, 3)) * 5.0
    x[0, 0, 1, 1] = -7.0
    layer, bottom, top = setup_layer(layer_param(pool_text("pool: MAX kernel_size: 2 stride: 2 pad: 1")),
                                     [x], num_top=2)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], np.full((2, 2), -5.0))
    np.testing.assert_array_equal(top[1].data[0, 0], [[0, 1], [3, 4 + 1]])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = distinct((2, 3, 4, 5), seed=2)
    text = pool_text(f"pool: {method} global_pooling: true")
    layer, bottom, top = setup_layer(layer_param(text), [x])
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 1, 1)
    want = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], want, rtol=1e-12)
    check_gradients(text, [x])
    # A different spatial size after setup re-derives the kernel.
    x2 = distinct((1, 3, 3, 2), seed=3)
    b2, t2 = make_blobs([x2]), [Blob(dtype=np.float64)]
    layer.reshape(b2, t2)
    layer.forward(b2, t2)
    want = x2.max(axis=(2, 3)) if method == "MAX" else x2.mean(axis=(2, 3))
    np.testing.assert_allclose(t2[0].data[:, :, 0, 0], want, rtol=1e-12)


def test_global_max_mask_top():
    x = distinct((2, 2, 3, 4), seed=4)
    layer, bottom, top = setup_layer(layer_param(pool_text("pool: MAX global_pooling: true")), [x],
                                     num_top=2)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[1].data[:, :, 0, 0], x.reshape(2, 2, -1).argmax(axis=2))


def test_single_window_larger_than_image():
    # kernel 3 on a 2x2 image, stride 2: ceil(-1/2)+1 = 1 window covering everything.
    x = distinct((1, 2, 2, 2), seed=5)
    for method in ("MAX", "AVE"):
        text = pool_text(f"pool: {method} kernel_size: 3 stride: 2")
        layer, bottom, top = setup_layer(layer_param(text), [x])
        layer.forward(bottom, top)
        want, _ = naive_pool(x, method, (3, 3), (2, 2), (0, 0))
        np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
        check_gradients(text, [x])


@pytest.mark.parametrize("settings, shape, num_top, pattern", [
    ("pool: STOCHASTIC kernel_size: 2 pad: 1", (1, 1, 4, 4), 1, "only for MAX and AVE"),
    ("pool: AVE kernel_size: 2", (1, 1, 4, 4), 2, "second top"),
    ("pool: MAX kernel_size: 2", (1, 4, 4), 1, "4 axes"),
    ("pool: MAX global_pooling: true kernel_size: 2", (1, 1, 4, 4), 1, "cannot be specified"),
    ("pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2", (1, 1, 4, 4), 1, "not both"),
    ("pool: MAX kernel_h: 2", (1, 1, 4, 4), 1, "kernel_h and kernel_w"),
    ("pool: MAX kernel_size: 2 pad: 2", (1, 1, 4, 4), 1, "smaller than the kernel"),
    ("pool: MAX global_pooling: true stride: 2", (1, 1, 4, 4), 1, "stride = 1"),
])
def test_bad_settings_fail_with_layer_name(settings, shape, num_top, pattern):
    with pytest.raises(LayerError, match=rf"Pooling layer 'p1'.*{pattern}"):
        setup_layer(layer_param(pool_text(settings)), [np.zeros(shape)], num_top=num_top)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_float32_batch_matches_caffe_loops(method):
    """The network's shapes and dtype (3x3 stride 2, ceil), both directions."""
    x = np.random.RandomState(6).standard_normal((3, 4, 11, 10)).astype(np.float32)
    text = pool_text(f"pool: {method} kernel_size: 3 stride: 2")
    layer, bottom, top = setup_layer(layer_param(text), [x])
    layer.forward(bottom, top)
    want, mask = naive_pool(x.astype(np.float64), method, (3, 3), (2, 2), (0, 0))
    np.testing.assert_allclose(top[0].data, want, rtol=1e-6, atol=1e-6)
    dy = np.random.RandomState(7).standard_normal(want.shape).astype(np.float32)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    dx = np.zeros(x.shape)
    n, c, ph_n, pw_n = want.shape
    for a in range(n):
        for b in range(c):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    if method == "MAX":
                        idx = int(mask[a, b, ph, pw])
                        dx[a, b, idx // 10, idx % 10] += dy[a, b, ph, pw]
                    else:
                        h0, w0 = 2 * ph, 2 * pw
                        h1, w1 = min(h0 + 3, 11), min(w0 + 3, 10)
                        dx[a, b, h0:h1, w0:w1] += dy[a, b, ph, pw] / ((h1 - h0) * (w1 - w0))
    np.testing.assert_allclose(bottom[0].diff, dx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, geometry", [
    ((5, 16, 17), (3, 3, 2, 2, 0, 0)),
    ((5, 15, 13), (3, 3, 2, 2, 1, 1)),
    ((5, 12, 14), (2, 2, 2, 2, 0, 0)),
    ((3, 10, 11), (3, 3, 1, 1, 1, 1)),
    ((3, 9, 12), (3, 2, 1, 2, 1, 0)),
    ((3, 8, 11), (2, 3, 2, 1, 1, 2)),
    ((3, 17, 19), (5, 5, 3, 3, 2, 2)),
])
def test_compiled_planes_match_one_window_loops(kernel_path, shape, geometry):
    """The compiled kernels' whole-plane passes (any plane with 4+ output columns) against
    their one-window-at-a-time loops, bit for bit: ties, NaN, +-inf, -FLT_MAX, +-0 pixels,
    padding, windows past the last full one, and outputs that are not contiguous."""
    if kernel_path != "compiled":
        pytest.skip("compares the compiled kernels with each other")
    from minicaffe.kernels import cpu
    k = cpu.load("pooling")
    kh, kw, sh, sw, ph, pw = geometry
    n, h, w = shape
    oh, ow = expected_size(h, kh, sh, ph), expected_size(w, kw, sw, pw)
    rng = np.random.RandomState(8)
    x = rng.randint(-2, 3, shape).astype(np.float32)
    flat = x.reshape(-1)
    special = np.array([np.nan, np.inf, -np.inf, -FLT_MAX, -0.0, 0.0], np.float32)
    spots = rng.randint(0, flat.size, flat.size // 8)
    flat[spots] = special[rng.randint(0, special.size, spots.size)]
    x[0] = np.nan
    x[1, :, : w // 2] = -FLT_MAX
    dy = rng.randint(-3, 4, (n, oh, ow)).astype(np.float32) * np.float32(0.1)

    def bits(a):    # equal bits, -0.0 included; any NaN counts as NaN (adds may commute)
        return np.where(np.isnan(a), np.float32(np.nan), a).view(np.int32)

    def outputs(shape_, dtype, contiguous):
        if contiguous:
            return np.full(shape_, 7, dtype)
        return np.full(shape_[:-1] + (shape_[-1] + 3,), 7, dtype)[..., 1:shape_[-1] + 1]

    args = (kh, kw, sh, sw, ph, pw)
    with np.errstate(all="ignore"):
        y0, a0 = outputs((n, oh, ow), np.float32, True), outputs((n, oh, ow), np.int32, True)
        k._max_forward_direct(x, y0, a0, *args)
        f0 = outputs((n, oh, ow), np.float32, True)
        k._ave_forward_direct(x, f0, *args)
        dxm0, dxa0 = outputs(shape, np.float32, True), outputs(shape, np.float32, True)
        k._max_backward_direct(dy, a0, dxm0)
        k._ave_backward_direct(dy, dxa0, *args)
        for contiguous in (True, False):
            y, a = outputs((n, oh, ow), np.float32, contiguous), outputs((n, oh, ow), np.int32,
                                                                           contiguous)
            k.max_forward(x, y, a, *args)
            np.testing.assert_array_equal(y.view(np.int32), y0.view(np.int32))
            np.testing.assert_array_equal(a, a0)
            f = outputs((n, oh, ow), np.float32, contiguous)
            k.ave_forward(x, f, *args, None)
            np.testing.assert_array_equal(bits(f), bits(f0))
            dxm, dxa = outputs(shape, np.float32, contiguous), outputs(shape, np.float32,
                                                                       contiguous)
            k.max_backward(dy, a0, dxm)
            np.testing.assert_array_equal(dxm.view(np.int32), dxm0.view(np.int32))
            dyc = outputs((n, oh, ow), np.float32, contiguous)
            dyc[...] = dy
            k.ave_backward(dyc, dxa, *args, None)
            np.testing.assert_array_equal(bits(dxa), bits(dxa0))


@pytest.mark.parametrize("num_top", [1, 2])
def test_forward_only_max_pooling_matches_caffe_loops(monkeypatch, num_top):
    # A forward-only net keeps no argmax per output: planes go through a small buffer.
    from minicaffe.layers import pooling
    monkeypatch.setattr(pooling, "ARGMAX_PLANES_FORWARD_ONLY", 3)
    x = distinct((2, 4, 9, 8), seed=3)        # 8 planes: chunks of 3, 3, 2
    layer = None
    text = pool_text("pool: MAX kernel_size: 3 stride: 2 pad: 1")
    layer, bottom, top = setup_layer(layer_param(text), [x], num_top=num_top)
    layer.keeps_backward_state = False        # Net.set_forward_only
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    want, want_mask = naive_pool(x, "MAX", (3, 3), (2, 2), (1, 1))
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    if num_top == 2:
        np.testing.assert_array_equal(top[1].data, want_mask)
    top[0].diff[...] = 1
    if num_top == 1 and layer.fast is not None:
        with pytest.raises(LayerError, match="'p1'.*forward-only"):
            layer.backward(top, [True], bottom)


def test_no_cached_serial_kernel_calls_a_parallel_one():
    # numba/numba#4807, #8578: such a caller, loaded from a cache that several processes
    # wrote, segfaulted here. Entry points that pick a parallel kernel are plain Python.
    numba = pytest.importorskip("numba")
    import importlib
    for name in ("cpu_pooling", "cpu_im2col", "cpu_channels"):
        mod = importlib.import_module(f"minicaffe.kernels.{name}")
        jitted = {k: v for k, v in vars(mod).items()
                  if isinstance(v, numba.core.registry.CPUDispatcher)}
        parallel = {k for k, v in jitted.items() if v.targetoptions.get("parallel")}
        for k, v in jitted.items():
            cached = type(v._cache).__name__ != "NullCache"
            if cached and k not in parallel:
                calls = set(v.py_func.__code__.co_names) & parallel
                assert not calls, f"{name}.{k} is cached, serial, and calls {sorted(calls)}"

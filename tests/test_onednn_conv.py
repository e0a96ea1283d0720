"""The oneDNN convolution engine against an einsum reference over an explicitly padded input."""
import _ctypes
import ctypes

import numpy as np
import pytest

from minicaffe.engines.onednn import library
from minicaffe.engines.onednn.convolution import Convolution
from conv_cases import GRID, close

pytestmark = pytest.mark.skipif(not library.available(),
                                reason="oneDNN (onednn-cpu-gomp) cannot be loaded")


def _taps(shape, out_hw, kernel, stride, dilation):
    """(i, j, slices of the padded input that kernel tap (i, j) meets for every output)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def reference(x, w, b, dy, stride, pad, dilation, group):
    """(y, dx, dw, db) in float64, from the definition on a zero-padded copy of x."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    mg = m // group
    ext = [d * (k - 1) + 1 for d, k in zip(dilation, (kh, kw))]
    out_hw = [(s + 2 * p - e) // st + 1 for s, p, e, st in zip((h, wd), pad, ext, stride)]
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    y = np.zeros((n, m) + tuple(out_hw))
    dxp = np.zeros_like(xp)
    dwr = np.zeros_like(w)
    dy = None if dy is None else dy.astype(np.float64)
    for i, j, sl in _taps(xp.shape, out_hw, (kh, kw), stride, dilation):
        for g in range(group):
            ci, co = slice(g * cg, (g + 1) * cg), slice(g * mg, (g + 1) * mg)
            patch = xp[sl][:, ci]
            y[:, co] += np.einsum("nchw,oc->nohw", patch, w[co, :, i, j])
            if dy is not None:
                dxp[sl][:, ci] += np.einsum("nohw,oc->nchw", dy[:, co], w[co, :, i, j])
                dwr[co, :, i, j] += np.einsum("nohw,nchw->oc", dy[:, co], patch)
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    dx = dxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd]
    db = None if dy is None else dy.sum(axis=(0, 2, 3))
    return y, dx, dwr, db




def _case(rng, n, c, h, w, m, kernel, group, bias):
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((m, c // group) + kernel, dtype=np.float32)
    b = rng.standard_normal(m, dtype=np.float32) if bias else None
    return x, wt, b


@pytest.mark.parametrize("layout", ["any", "nchw", "nhwc"])
@pytest.mark.parametrize("n,c,h,w,m,kernel,stride,pad,dilation,group,bias", GRID)
def test_passes_match_reference(layout, n, c, h, w, m, kernel, stride, pad, dilation, group,
                                bias):
    rng = np.random.default_rng(hash((n, c, h, w, m, kernel, stride)) % 2 ** 32)
    x, wt, b = _case(rng, n, c, h, w, m, kernel, group, bias)
    conv = Convolution(x.shape, m, kernel, stride, pad, dilation, group, bias, layout=layout)
    dy = rng.standard_normal(conv.output_shape, dtype=np.float32)
    y_ref, dx_ref, dw_ref, db_ref = reference(x, wt, b, dy, stride, pad, dilation, group)
    assert conv.output_shape == y_ref.shape
    close(conv.forward(x, wt, b), y_ref)
    close(conv.backward_data(dy, wt), dx_ref)
    dw, db = conv.backward_weights(x, dy)
    close(dw, dw_ref)
    if bias:
        close(db, db_ref)
    else:
        assert db is None
    conv.close()


def test_reference_matches_direct_loops():
    # The reference itself, against the definition written as plain loops.
    rng = np.random.default_rng(3)
    x, wt, b = _case(rng, 2, 4, 6, 5, 4, (3, 2), 2, True)
    stride, pad, dil = (2, 1), (1, 2), (1, 2)
    y, *_ = reference(x, wt, b, None, stride, pad, dil, 2)
    for n, o, oy, ox in np.ndindex(*y.shape):
        g = o // 2
        s = b[o]
        for ci, i, j in np.ndindex(2, 3, 2):
            yy, xx = oy * stride[0] - pad[0] + i * dil[0], ox * stride[1] - pad[1] + j * dil[1]
            if 0 <= yy < 6 and 0 <= xx < 5:
                s += float(wt[o, ci, i, j]) * float(x[n, g * 2 + ci, yy, xx])
        assert abs(y[n, o, oy, ox] - s) < 1e-4


def test_gradients_are_finite_differences_of_forward():
    rng = np.random.default_rng(5)
    x, wt, b = _case(rng, 2, 2, 5, 4, 3, (3, 3), 1, True)
    conv = Convolution(x.shape, 3, (3, 3), (2, 1), (1, 1), (1, 1), 1, True)
    dy = rng.standard_normal(conv.output_shape, dtype=np.float32)
    dx = conv.backward_data(dy, wt)
    dw, db = conv.backward_weights(x, dy)
    eps = 1e-2
    for arr, grad, idx in [(x, dx, (1, 0, 2, 3)), (wt, dw, (2, 1, 0, 2)), (b, db, (1,))]:
        saved = arr[idx]
        arr[idx] = saved + eps
        up = float(np.vdot(conv.forward(x, wt, b).astype(np.float64), dy))
        arr[idx] = saved - eps
        down = float(np.vdot(conv.forward(x, wt, b).astype(np.float64), dy))
        arr[idx] = saved
        assert abs((up - down) / (2 * eps) - grad[idx]) < 2e-2


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_fused_relu(slope):
    rng = np.random.default_rng(7)
    x, wt, b = _case(rng, 3, 4, 7, 8, 6, (3, 3), 2, True)
    conv = Convolution(x.shape, 6, 3, 1, 1, 1, 2, True, relu=True, negative_slope=slope)
    dy = rng.standard_normal(conv.output_shape, dtype=np.float32)
    y_ref, dx_ref, dw_ref, _ = reference(x, wt, b, dy, (1, 1), (1, 1), (1, 1), 2)
    close(conv.forward(x, wt, b), np.where(y_ref > 0, y_ref, slope * y_ref))
    # The backward passes stay the convolution's own (the hint forward has no ReLU).
    close(conv.backward_data(dy, wt), dx_ref)
    close(conv.backward_weights(x, dy)[0], dw_ref)


def test_output_buffers_are_written_in_place_and_reused():
    rng = np.random.default_rng(9)
    x, wt, b = _case(rng, 3, 3, 8, 8, 4, (5, 5), 1, True)
    conv = Convolution(x.shape, 4, 5, 1, 2)
    y = np.full(conv.output_shape, np.nan, np.float32)
    dw = np.full(conv.weight_shape, np.nan, np.float32)
    db = np.full(conv.bias_shape, np.nan, np.float32)
    for _ in range(2):   # the second call must not add to the first's results
        assert conv.forward(x, wt, b, out=y) is y
        got_dw, got_db = conv.backward_weights(x, y, dw, db)
        assert got_dw is dw and got_db is db
    y_ref, _, dw_ref, db_ref = reference(x, wt, b, y, (1, 1), (2, 2), (1, 1), 1)
    close(y, y_ref)
    close(dw, dw_ref)
    close(db, db_ref)


def test_bad_arguments_are_refused():
    conv = Convolution((2, 4, 6, 6), 4, 3, bias=False)
    good_x = np.zeros((2, 4, 6, 6), np.float32)
    good_w = np.zeros(conv.weight_shape, np.float32)
    with pytest.raises(TypeError):
        conv.forward(good_x.astype(np.float64), good_w)
    with pytest.raises(TypeError):
        conv.forward(np.zeros((2, 4, 6, 12), np.float32)[..., ::2], good_w)
    with pytest.raises(ValueError):
        conv.forward(np.zeros((2, 4, 6, 7), np.float32), good_w)
    with pytest.raises(ValueError):
        conv.forward(good_x, good_w, np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        Convolution((1, 3, 6, 6), 4, 3, group=2)
    with pytest.raises(ValueError):
        Convolution((1, 4, 2, 2), 4, 5)
    with pytest.raises(ValueError):
        Convolution((1, 4, 6, 6), 4, 3, layout="nhcw")


@pytest.fixture
def library_path(monkeypatch):
    """Sets MINICAFFE_ONEDNN_LIBRARY for one test, with the cache reset before and after."""
    def point_to(path):
        monkeypatch.setenv(library.ENV_VAR, path)
        library.reset()
    yield point_to
    monkeypatch.delenv(library.ENV_VAR, raising=False)
    library.reset()


def test_missing_library_file_is_a_clear_error(library_path, tmp_path):
    missing = str(tmp_path / "libdnnl.so.3")
    library_path(missing)
    assert library.available() is False
    with pytest.raises(OSError, match=library.ENV_VAR) as err:
        library.load()
    assert isinstance(err.value, library.OneDNNUnavailable) and missing in str(err.value)


def test_wrong_files_are_clear_errors(library_path, tmp_path):
    not_a_library = tmp_path / "libdnnl.so.3"
    not_a_library.write_text("not an ELF file")
    library_path(str(not_a_library))
    with pytest.raises(library.OneDNNUnavailable, match="cannot load"):
        library.load()
    # A real shared library (an extension module of Python's own) without oneDNN's symbols.
    library_path(_ctypes.__file__)
    with pytest.raises(library.OneDNNUnavailable, match="symbol missing"):
        library.load()


def test_library_is_found_and_reloads_after_reset(library_path):
    path = library.library_path()
    assert path.endswith("libdnnl.so.3") or path.endswith("libdnnl.so.3.2")
    library_path(path)
    assert library.available() and library.version()[0] == 3


def test_failed_call_names_the_call_and_status():
    md = ctypes.c_void_p()
    with pytest.raises(library.OneDNNError,
                       match="dnnl_memory_desc_create_with_tag failed: invalid arguments"):
        library.load().dnnl_memory_desc_create_with_tag(
            ctypes.byref(md), 4, library.dims([1, -5, 1, 1]), library.F32, library.TAG_NCHW)


def test_closed_convolution_refuses_calls():
    conv = Convolution((1, 2, 5, 5), 2, 3)
    conv.close()
    with pytest.raises(RuntimeError, match="closed"):
        conv.backward_data(np.zeros((1, 2, 3, 3), np.float32), np.zeros((2, 2, 3, 3), np.float32))

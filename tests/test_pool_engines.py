"""Pooling on the oneDNN engine against Caffe's definition and the ``engine: CAFFE`` layer.

tests/test_pooling.py checks the CAFFE engine against per-window loops; here the oneDNN
``AveragePooling`` meets those loops directly, the oneDNN-served layer must give the CAFFE
layer's top and bottom diff, and the choice of engine must follow ``engine:``,
``MINICAFFE_POOL_ENGINE``, the measured policy (AVE on small planes) and the library's
availability.
"""
import itertools
import logging

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.engines import selection
from minicaffe.errors import MiniCaffeError
from minicaffe.engines.onednn import library
from minicaffe.engines.onednn.pool_layer import PoolLayerEngine
from minicaffe.engines.onednn.pooling import AveragePooling
from minicaffe.layer import create_layer
from minicaffe.proto import caffe_pb2

P = caffe_pb2.PoolingParameter
needs_onednn = pytest.mark.skipif(not library.available(),
                                  reason="oneDNN (onednn-cpu-gomp) cannot be loaded")


@pytest.fixture(autouse=True)
def _fresh_selection(monkeypatch):
    for var in (selection.POOL_ENV_VAR, library.ENV_VAR):
        monkeypatch.delenv(var, raising=False)
    selection.reset()
    yield
    selection.reset()     # the next load reads the environment monkeypatch restores


def pool_param(method=P.AVE, kernel=(3, 3), stride=(2, 2), pad=(0, 0), global_pooling=False,
               engine=P.DEFAULT, layer_engine=""):
    lp = caffe_pb2.LayerParameter(name="pool", type="Pooling")
    p = lp.pooling_param
    p.pool, p.engine = method, engine
    if global_pooling:
        p.global_pooling = True
    else:
        p.kernel_h, p.kernel_w = kernel
        p.stride_h, p.stride_w = stride
        p.pad_h, p.pad_w = pad
    if layer_engine:
        lp.engine = layer_engine
    return lp


class Run:
    """One layer on ``x``: forward, then backward twice (dx overwritten each time)."""

    def __init__(self, lp, x, seed=1):
        self.layer = create_layer(lp)
        bottom, top = Blob(x.shape), Blob()
        bottom.data[...] = x
        self.layer.setup([bottom], [top])
        self.layer.forward([bottom], [top])
        self.top = top.data.copy()
        top.diff[...] = np.random.default_rng(seed).standard_normal(top.shape)
        self.dx = []
        for _ in range(2):
            bottom.diff[...] = 7.0
            self.layer.backward([top], [True], [bottom])
            self.dx.append(bottom.diff.copy())


def naive_ave(x, out_hw, kernel, stride, pad):
    """Caffe's AVE, one window at a time: the divisor counts the window clipped to the padded
    image, the sum only real pixels."""
    n, c, h, w = x.shape
    y = np.zeros((n, c) + tuple(out_hw))
    for ph, pw in itertools.product(range(out_hw[0]), range(out_hw[1])):
        h0, w0 = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
        h1, w1 = min(h0 + kernel[0], h + pad[0]), min(w0 + kernel[1], w + pad[1])
        size = (h1 - h0) * (w1 - w0)
        y[:, :, ph, pw] = x[:, :, max(h0, 0):h1, max(w0, 0):w1].sum(axis=(2, 3)) / size
    return y


def served(shape, out_hw, kernel, stride, pad):
    """Whether oneDNN has Caffe's divisor: no padding, or no window past the padded image."""
    ends = [(o - 1) * s - p + k for o, s, p, k in zip(out_hw, stride, pad, kernel)]
    return pad == (0, 0) or all(e <= size + p for e, size, p in zip(ends, shape[2:], pad))


# (batch, channels, h, w, kernel, stride, pad): kernel 2/3, stride 1/2, pad 0/1, ceil windows
# overhanging the image (7x7 with 2/2 or 3/2), non-square, channels not a multiple of 8.
GRID = [(n, c, h, w, (k, k), (s, s), (p, p))
        for n, c, (h, w), k, s, p in itertools.product(
            (1, 3), (3, 8), ((7, 7), (6, 9)), (2, 3), (1, 2), (0, 1)) if p < k]
GRID += [(2, 5, 8, 5, (3, 2), (2, 1), (1, 0)), (2, 5, 8, 5, (2, 3), (1, 2), (0, 1)),
         (1, 16, 12, 12, (3, 3), (2, 2), (0, 0))]
IDS = ["n{}c{}_{}x{}_k{}x{}_s{}x{}_p{}x{}".format(n, c, h, w, *k, *s, *p)
       for n, c, h, w, k, s, p in GRID]


@needs_onednn
@pytest.mark.parametrize("case", GRID, ids=IDS)
def test_ave_layer_matches_caffe_engine(case):
    n, c, h, w, kernel, stride, pad = case
    x = np.random.default_rng(sum(case[:4])).standard_normal((n, c, h, w), dtype=np.float32)
    got = Run(pool_param(P.AVE, kernel, stride, pad), x)
    want = Run(pool_param(P.AVE, kernel, stride, pad, engine=P.CAFFE), x)
    assert want.layer.engine is None
    out_hw = got.top.shape[2:]
    assert (got.layer.engine is not None) == served(x.shape, out_hw, kernel, stride, pad)
    np.testing.assert_allclose(got.top, want.top, rtol=1e-5, atol=1e-6)
    for k in range(2):
        np.testing.assert_allclose(got.dx[k], want.dx[k], rtol=1e-5, atol=1e-6)


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (3, 8, 12, 12)])
def test_global_ave_layer_matches_caffe_engine(shape):
    x = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    got = Run(pool_param(global_pooling=True), x)
    want = Run(pool_param(global_pooling=True, engine=P.CAFFE), x)
    assert isinstance(got.layer.engine, PoolLayerEngine)
    np.testing.assert_allclose(got.top, x.mean(axis=(2, 3), keepdims=True), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(got.top, want.top, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.dx[1], want.dx[1], rtol=1e-5, atol=1e-6)


@needs_onednn
@pytest.mark.parametrize("shape, out_hw, kernel, stride, pad", [
    ((2, 3, 16, 16), (8, 8), (3, 3), (2, 2), (0, 0)),   # ceil windows overhang, no padding
    ((2, 4, 9, 11), (5, 6), (3, 3), (2, 2), (1, 1)),    # padded, no window past the padding
    ((1, 2, 5, 6), (4, 3), (2, 3), (1, 2), (0, 1)),
])
def test_average_pooling_matches_loops(shape, out_hw, kernel, stride, pad):
    x = np.random.default_rng(5).standard_normal(shape, dtype=np.float32)
    pool = AveragePooling(shape, out_hw, kernel, stride, pad)
    want = naive_ave(x.astype(np.float64), out_hw, kernel, stride, pad)
    np.testing.assert_allclose(pool.forward(x), want, rtol=1e-5, atol=1e-6)
    # The gradient of sum(y * dy) by finite differences is exact here (y is linear in x).
    dy = np.random.default_rng(6).standard_normal(want.shape).astype(np.float32)
    dx = pool.backward(dy)
    for i in np.random.default_rng(7).choice(x.size, 12, replace=False):
        e = np.zeros(x.size)
        e[i] = 1.0
        slope = (naive_ave(e.reshape(shape), out_hw, kernel, stride, pad) * dy).sum()
        assert dx.reshape(-1)[i] == pytest.approx(slope, rel=1e-5, abs=1e-6)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.forward(x)


@needs_onednn
def test_overhang_past_the_padding_is_declined(caplog):
    with pytest.raises(ValueError, match="overhangs"):
        AveragePooling((1, 1, 8, 8), (5, 5), 3, 2, 1)
    x = np.ones((1, 2, 8, 8), np.float32)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        run = Run(pool_param(pad=(1, 1)), x)
    assert run.layer.engine is None
    assert any("oneDNN declines" in r.getMessage() for r in caplog.records)


@needs_onednn
@pytest.mark.parametrize("lp, shape", [
    (pool_param(P.MAX), (2, 3, 8, 8)),            # measured slower than the numba kernels
    (pool_param(P.AVE), (2, 3, 32, 32)),          # planes where the reorders dominate
    (pool_param(P.STOCHASTIC), (2, 3, 8, 8)),
])
def test_reference_where_onednn_does_not_win(lp, shape):
    assert Run(lp, np.ones(shape, np.float32)).layer.engine is None


@needs_onednn
def test_reshape_remakes_the_engine():
    layer = create_layer(pool_param())
    bottom, top = Blob((2, 3, 8, 8)), Blob()
    layer.setup([bottom], [top])
    first = layer.engine.pool
    bottom.reshape((1, 3, 10, 10))
    bottom.data[...] = np.arange(300, dtype=np.float32).reshape(1, 3, 10, 10)
    layer.reshape([bottom], [top])
    assert layer.engine.pool is not first and layer.engine.pool.input_shape == (1, 3, 10, 10)
    layer.forward([bottom], [top])
    np.testing.assert_allclose(top.data, naive_ave(bottom.data.astype(np.float64), (5, 5),
                                                   (3, 3), (2, 2), (0, 0)), rtol=1e-6)


@needs_onednn
@pytest.mark.parametrize("env, engine, layer_engine, want", [
    (None, P.DEFAULT, "", True),
    (None, P.CAFFE, "", False),
    (None, P.CUDNN, "", True),          # cuDNN serves only the GPU: the CPU default
    (None, P.MKLDNN, "", True),
    ("caffe", P.DEFAULT, "", False),
    ("auto", P.MKL2017, "", True),
    (None, P.DEFAULT, "CAFFE", False),  # Intel's layer-level string wins over the enum
    (None, P.CAFFE, "MKLDNN", True),
])
def test_engine_choice(monkeypatch, env, engine, layer_engine, want):
    if env is not None:
        monkeypatch.setenv(selection.POOL_ENV_VAR, env)
    run = Run(pool_param(engine=engine, layer_engine=layer_engine), np.ones((1, 2, 6, 6),
                                                                            np.float32))
    assert (run.layer.engine is not None) == want


def test_float64_and_bad_environment(monkeypatch):
    lp = pool_param()
    assert selection.pooling_engine(lp, np, np.float64) == selection.REFERENCE
    monkeypatch.setenv(selection.POOL_ENV_VAR, "onednn")
    with pytest.raises(MiniCaffeError, match=selection.POOL_ENV_VAR):
        selection.pooling_engine(lp, np, np.float32)


def test_missing_library_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setenv(library.ENV_VAR, "/nonexistent")
    selection.reset()
    x = np.random.default_rng(9).standard_normal((2, 3, 7, 7), dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="minicaffe"):
        got = Run(pool_param(), x)
        again = Run(pool_param(), x)
    assert got.layer.engine is None and again.layer.engine is None
    lines = [r for r in caplog.records if "oneDNN not available" in r.getMessage()]
    assert len(lines) == 1 and "/nonexistent" in lines[0].getMessage()
    np.testing.assert_allclose(got.top, naive_ave(x.astype(np.float64), (3, 3), (3, 3),
                                                  (2, 2), (0, 0)), rtol=1e-5)

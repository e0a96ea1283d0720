"""Convolution layers on the oneDNN engine against the same layers with ``engine: CAFFE``.

The CAFFE engine is the NumPy im2col/GEMM reference (tests/test_conv.py checks it against
loops); here the oneDNN-served layer must give the same forward, bottom diff and accumulated
parameter diffs, a small net must train the same, and the choice of engine must follow
``engine:``, ``MINICAFFE_CONV_ENGINE`` and the library's availability.
"""
import logging

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.engines import selection
from minicaffe.errors import MiniCaffeError
from minicaffe.engines.onednn import library
from minicaffe.engines.onednn.conv_layer import ConvLayerEngine
from minicaffe.io.prototxt import parse_text
from minicaffe.layer import create_layer
from minicaffe.proto import caffe_pb2
from conv_cases import GRID, close

CP = caffe_pb2.ConvolutionParameter
needs_onednn = pytest.mark.skipif(not library.available(),
                                  reason="oneDNN (onednn-cpu-gomp) cannot be loaded")


@pytest.fixture(autouse=True)
def _fresh_selection(monkeypatch):
    monkeypatch.delenv(selection.ENV_VAR, raising=False)
    monkeypatch.delenv(library.ENV_VAR, raising=False)
    selection.reset()
    yield
    monkeypatch.delenv(library.ENV_VAR, raising=False)
    selection.reset()


def conv_param(kind="Convolution", num_output=4, kernel=(3, 3), stride=(1, 1), pad=(0, 0),
               dilation=(1, 1), group=1, bias=True, engine=CP.DEFAULT, layer_engine=""):
    lp = caffe_pb2.LayerParameter(name="conv", type=kind)
    p = lp.convolution_param
    p.num_output, p.group, p.bias_term, p.engine = num_output, group, bias, engine
    p.kernel_h, p.kernel_w = kernel
    p.stride_h, p.stride_w = stride
    p.pad_h, p.pad_w = pad
    p.dilation.extend(dilation)
    if layer_engine:
        lp.engine = layer_engine
    return lp


class Run:
    """One layer set up on ``x`` with given weights: forward, then backward twice."""

    def __init__(self, lp, x, params, dy, propagate_down=True):
        self.layer = create_layer(lp)
        bottom, top = Blob(x.shape), Blob()
        bottom.data[...] = x
        self.layer.setup([bottom], [top])
        for blob, value in zip(self.layer.blobs, params):
            blob.data[...] = value
        self.layer.reshape([bottom], [top])
        self.layer.forward([bottom], [top])
        self.top = top.data.copy()
        bottom.diff[...] = 7.0          # must be overwritten, or left alone without propagate
        top.diff[...] = dy
        self.dx, self.params = [], []
        for _ in range(2):              # no clearing in between: parameter diffs accumulate
            self.layer.backward([top], [propagate_down], [bottom])
            self.dx.append(bottom.diff.copy())
            self.params.append([b.diff.copy() for b in self.layer.blobs])


IDS = ["n{}c{}_{}x{}_o{}_k{}x{}_s{}x{}_p{}x{}_d{}x{}_g{}_{}".format(
    n, c, h, w, o, *k, *s, *p, *d, g, "b" if b else "nob")
    for n, c, h, w, o, k, s, p, d, g, b in GRID]


def _shapes_only_run(lp, x):
    layer = create_layer(lp)
    bottom, top = Blob(x.shape), Blob()
    layer.setup([bottom], [top])
    return layer, tuple(top.shape)


def _compare(case, kind, propagate_down=True):
    n, c, h, w, o, kernel, stride, pad, dilation, group, bias = case
    rng = np.random.default_rng(sum(case[:5]))
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    args = (kind, o, kernel, stride, pad, dilation, group, bias)
    layer, top_shape = _shapes_only_run(conv_param(*args, engine=CP.CAFFE), x)
    params = [rng.standard_normal(b.shape, dtype=np.float32) for b in layer.blobs]
    dy = rng.standard_normal(top_shape, dtype=np.float32)
    want = Run(conv_param(*args, engine=CP.CAFFE), x, params, dy, propagate_down)
    got = Run(conv_param(*args), x, params, dy, propagate_down)
    assert want.layer.engine is None
    assert isinstance(got.layer.engine, ConvLayerEngine)
    close(got.top, want.top)
    for k in range(2):
        if propagate_down:
            close(got.dx[k], want.dx[k])
        else:
            assert np.all(got.dx[k] == 7.0)
        for g, r in zip(got.params[k], want.params[k]):
            close(g, r)
    for first, second in zip(got.params[0], got.params[1]):
        close(second, 2 * first)      # the second backward added as much again


@needs_onednn
@pytest.mark.parametrize("case", GRID, ids=IDS)
def test_convolution_matches_caffe_engine(case):
    _compare(case, "Convolution")


@needs_onednn
@pytest.mark.parametrize("case", GRID[::3], ids=IDS[::3])
def test_convolution_without_bottom_gradient(case):
    _compare(case, "Convolution", propagate_down=False)


@needs_onednn
@pytest.mark.parametrize("case", GRID[::2], ids=IDS[::2])
def test_deconvolution_matches_caffe_engine(case):
    _compare(case, "Deconvolution")


def test_chunk_sizes_cover_the_batch_in_near_equal_chunks(monkeypatch):
    from minicaffe.engines.onednn import conv_layer
    monkeypatch.setattr(conv_layer, "CHUNK_BYTES", 1000)
    # at most 1000 // 300 = 3 images per chunk: 10 images need 4 chunks, of ceil(10 / 4) = 3
    assert conv_layer.chunk_sizes(10, 300) == [3, 3, 3, 1]
    assert conv_layer.chunk_sizes(9, 300) == [3, 3, 3]
    assert conv_layer.chunk_sizes(2, 5000) == [1, 1]     # an image larger than a chunk
    assert conv_layer.chunk_sizes(100, 10) == [100]


@needs_onednn
@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("case", GRID[::4], ids=IDS[::4])
def test_a_batch_in_chunks_matches_caffe_engine(monkeypatch, case, kind):
    from minicaffe.engines.onednn import conv_layer
    monkeypatch.setattr(conv_layer, "CHUNK_BYTES", 1)    # one image per chunk
    n = case[0]
    _compare((max(n, 3),) + tuple(case[1:]), kind)


@needs_onednn
def test_reshape_rebuilds_for_a_new_input_shape():
    lp = conv_param(num_output=3, kernel=(3, 3), pad=(1, 1))
    layer = create_layer(lp)
    bottom, top = Blob((2, 2, 5, 6)), Blob()
    layer.setup([bottom], [top])
    first = layer.engine.conv
    layer.reshape([bottom], [top])
    assert layer.engine.conv is first
    bottom.reshape((3, 2, 7, 4))
    rng = np.random.default_rng(5)
    bottom.data[...] = rng.standard_normal(bottom.shape)
    layer.reshape([bottom], [top])
    assert layer.engine.conv is not first and layer.engine.conv.input_shape == (3, 2, 7, 4)
    layer.forward([bottom], [top])
    ref = create_layer(conv_param(num_output=3, kernel=(3, 3), pad=(1, 1), engine=CP.CAFFE))
    rtop = Blob()
    ref.setup([bottom], [rtop])
    for a, b in zip(ref.blobs, layer.blobs):
        a.data[...] = b.data
    ref.forward([bottom], [rtop])
    close(top.data, rtop.data)


# ------------------------------------------------------------------------- choosing
def _engine_of(lp, dtype=np.float32):
    layer = create_layer(lp)
    layer.setup([Blob((1, 2, 6, 6), dtype=dtype)], [Blob(dtype=dtype)])
    return layer.engine


@needs_onednn
@pytest.mark.parametrize("env, engine, layer_engine, served", [
    (None, CP.DEFAULT, "", True),
    (None, CP.CAFFE, "", False),
    (None, CP.CUDNN, "", True),          # cuDNN is GPU-only: on the CPU, as DEFAULT
    (None, CP.MKLDNN, "", True),
    (None, CP.MKL2017, "", True),
    ("auto", CP.DEFAULT, "", True),
    ("onednn", CP.DEFAULT, "", True),
    ("caffe", CP.DEFAULT, "", False),
    ("CAFFE", CP.CUDNN, "", False),
    ("onednn", CP.CAFFE, "", False),     # the variable overrides DEFAULT, not CAFFE
    (None, CP.DEFAULT, "CAFFE", False),  # Intel's layer-level string wins over the enum
    (None, CP.CAFFE, "MKLDNN", True),
    (None, CP.DEFAULT, "MKL2017:DLA", True),
])
def test_engine_choice(monkeypatch, env, engine, layer_engine, served):
    if env is not None:
        monkeypatch.setenv(selection.ENV_VAR, env)
    got = _engine_of(conv_param(engine=engine, layer_engine=layer_engine))
    assert isinstance(got, ConvLayerEngine) if served else got is None


def test_float64_blobs_take_the_reference_path():
    assert _engine_of(conv_param(), dtype=np.float64) is None


def test_bad_environment_value_is_an_error(monkeypatch):
    monkeypatch.setenv(selection.ENV_VAR, "mkl")
    with pytest.raises(MiniCaffeError, match=selection.ENV_VAR):
        _engine_of(conv_param())


def test_intel_fork_engine_settings_parse():
    text = ('name: "n" layer { name: "c" type: "Convolution" engine: "MKLDNN" '
            'convolution_param { num_output: 2 kernel_size: 3 engine: MKL2017 } }')
    lp = parse_text(text, caffe_pb2.NetParameter()).layer[0]
    assert lp.engine == "MKLDNN" and lp.convolution_param.engine == CP.MKL2017


@pytest.mark.parametrize("env", [None, "onednn"])
def test_missing_library_falls_back_with_one_warning(monkeypatch, caplog, env):
    monkeypatch.setenv(library.ENV_VAR, "/nonexistent")
    if env:
        monkeypatch.setenv(selection.ENV_VAR, env)
    selection.reset()
    case = GRID[3]
    with caplog.at_level(logging.WARNING, logger="minicaffe"):
        n, c, h, w, o, kernel, stride, pad, dilation, group, bias = case
        rng = np.random.default_rng(2)
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        args = ("Convolution", o, kernel, stride, pad, dilation, group, bias)
        layer, top_shape = _shapes_only_run(conv_param(*args), x)
        params = [rng.standard_normal(b.shape, dtype=np.float32) for b in layer.blobs]
        dy = rng.standard_normal(top_shape, dtype=np.float32)
        got = Run(conv_param(*args), x, params, dy)
        want = Run(conv_param(*args, engine=CP.CAFFE), x, params, dy)
    assert layer.engine is None and got.layer.engine is None
    lines = [r for r in caplog.records if "oneDNN not available" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "/nonexistent" in lines[0].getMessage()
    assert "Convolution runs on the NumPy reference path" in lines[0].getMessage()
    np.testing.assert_array_equal(got.top, want.top)
    np.testing.assert_array_equal(got.dx[1], want.dx[1])
    for g, r in zip(got.params[1], want.params[1]):
        np.testing.assert_array_equal(g, r)


# ------------------------------------------------------------------------- a whole net
NET = """
name: "conv_bn_relu_pool"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 6 dim: 3 dim: 12 dim: 12 } shape { dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 bias_term: false pad: 2 kernel_size: 5
                            weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 8 pad: 1 kernel_size: 3 group: 2
                            weight_filler { type: "gaussian" std: 0.1 }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool2" top: "ip"
        inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _train(monkeypatch, engine, steps=5):
    import minicaffe
    from minicaffe.solvers import SGDSolver
    monkeypatch.setenv(selection.ENV_VAR, engine)
    minicaffe.set_random_seed(1701)
    sp = caffe_pb2.SolverParameter(base_lr=0.05, momentum=0.9, lr_policy="fixed",
                                   max_iter=100, random_seed=1701, display=0,
                                   solver_mode=caffe_pb2.SolverParameter.CPU)
    sp.train_net_param.CopyFrom(parse_text(NET, caffe_pb2.NetParameter()))
    solver = SGDSolver(sp)
    net = solver.net
    served = [type(layer.engine) for layer in net.layers if layer.type == "Convolution"]
    rng = np.random.default_rng(11)
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape) * 3
    net.blobs["label"].data[...] = rng.integers(0, 10, 6)
    losses = []
    for _ in range(steps):
        solver.step(1)
        losses.append(float(net.blobs["loss"].data))
    weights = {layer.name: [b.data.copy() for b in layer.blobs] for layer in net.layers}
    return served, losses, weights


@needs_onednn
def test_net_trains_the_same_on_both_engines(monkeypatch):
    served, losses, weights = _train(monkeypatch, "auto")
    ref_served, ref_losses, ref_weights = _train(monkeypatch, "caffe")
    assert served == [ConvLayerEngine] * 2 and ref_served == [type(None)] * 2
    assert losses[-1] < losses[0]             # it learns, so the comparison means something
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    for name, blobs in ref_weights.items():
        for got, want in zip(weights[name], blobs):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=name)

"""BatchNorm: gradients in every mode, forward and statistics against closed forms, phases,
parameter specs, save/load, in place == out of place (also while training), memory."""
import tracemalloc

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.errors import LayerError, ShapeError
from minicaffe.layer import layer_types
from minicaffe.proto import caffe_pb2

pytestmark = pytest.mark.usefixtures("kernel_path")

BN = 'type: "BatchNorm"'
EPS = float(np.float32(1e-5))        # the default eps, as the float proto field holds it


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


def bn_param(text=BN, stats=None, phase=caffe_pb2.TRAIN):
    """LayerParameter of a BatchNorm, with stored statistics (mean_sum, var_sum, factor)."""
    p = layer_param(text, phase)
    if stats is not None:
        for arr in stats:
            arr = np.asarray(arr, dtype=np.float64).reshape(-1)
            bp = p.blobs.add()
            bp.shape.dim.append(arr.size)
            bp.data.extend(arr.tolist())
    return p


def channel_stats(x):
    """Per-channel mean and biased variance by a direct loop over channels (axis 1)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    means, variances = [], []
    for c in range(x.shape[1]):
        v = x[:, c].ravel()
        mu = sum(v) / len(v)
        means.append(mu)
        variances.append(sum((vi - mu) ** 2 for vi in v) / len(v))
    return np.array(means), np.array(variances)


def normalise_ref(x, mean, var, eps):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    xr = x.reshape(x.shape[0], -1) if x.ndim == 1 else x
    outr = out.reshape(xr.shape)
    for c in range(xr.shape[1] if x.ndim > 1 else 1):
        sl = (slice(None), c) if x.ndim > 1 else (slice(None),)
        outr[sl] = (xr[sl] - mean[c]) / np.sqrt(var[c] + eps)
    return out


def run_layer(param, x, in_place=False, dtype=np.float64, dy=None):
    layer, bottom, top = setup_layer(param, [x], 1, in_place, dtype)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    y = np.array(top[0].xdata, copy=True)
    if dy is None:
        return layer, y
    top[0].xdiff[...] = dy
    layer.backward(top, [True], bottom)
    return layer, y, np.array(bottom[0].xdiff, copy=True)


# ---------------------------------------------------------------------- gradients
@pytest.mark.parametrize("shape", [(6, 4), (4, 3, 3, 5), (3, 2, 2, 3, 2), (7,), (10, 3, 2, 3)])
@pytest.mark.parametrize("in_place", [False, True])
def test_gradient_batch_statistics(shape, in_place):
    check_gradients(BN + " batch_norm_param { eps: 0.001 }", [rand(*shape, seed=len(shape))],
                    in_place=in_place)


STATS3 = ([0.9, -1.8, 3.0], [4.5, 1.5, 6.0], [3.0])   # mean 0.3 -0.6 1; var 1.5 0.5 2


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 5), (2, 3, 2, 2, 3), (9, 3, 2, 2)])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("how", ["explicit", "test_phase"])
def test_gradient_global_statistics(shape, in_place, how):
    if how == "explicit":
        p = bn_param(BN + " batch_norm_param { use_global_stats: true }", STATS3)
    else:
        p = bn_param(BN, STATS3, phase=caffe_pb2.TEST)
    layer = check_gradients(p, [rand(*shape, seed=3)], in_place=in_place)
    assert layer.use_global_stats
    # global statistics: dx = dy / sqrt(var + eps), independent of the other items
    x = rand(*shape, seed=4)
    dy = rand(*shape, seed=5)
    _, _, dx = run_layer(p, x, in_place=in_place, dy=dy)
    var = np.array([1.5, 0.5, 2.0]).reshape((1, 3) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(dx, dy / np.sqrt(var + EPS), rtol=1e-12)


def test_backward_batch_statistics_closed_form():
    x = rand(5, 2, 3, seed=7)
    dy = rand(5, 2, 3, seed=8)
    eps = float(np.float32(1e-3))      # the proto field is a float
    _, y, dx = run_layer(layer_param(BN + " batch_norm_param { eps: 0.001 }"), x, dy=dy)
    mean, var = channel_stats(x)
    for c in range(2):
        xh = (x[:, c] - mean[c]) / np.sqrt(var[c] + eps)
        g = dy[:, c]
        want = (g - g.mean() - xh * (g * xh).mean()) / np.sqrt(var[c] + eps)
        np.testing.assert_allclose(dx[:, c], want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(y[:, c], xh, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- forward
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 2), (2, 4, 3, 2, 2), (6,), (12, 5, 3, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_batch_statistics(shape, dtype):
    x = rand(*shape, seed=11) * 3 + 2
    _, y = run_layer(layer_param(BN), x.astype(dtype), dtype=dtype)
    mean, var = channel_stats(x.astype(dtype))
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(y, normalise_ref(x.astype(dtype), mean, var, EPS),
                               rtol=tol, atol=tol)
    assert y.dtype == dtype


def test_forward_large_offset_float32_is_accurate():
    # A large mean next to a small spread: the variance must come from the centred values
    # (E[x^2] - E[x]^2 in float32 would lose every digit here). The float32 mean itself is
    # off by a few ulp of 1000, a small shift in units of the spread.
    x = (1000.0 + 0.01 * rand(16, 2, 4, 4, seed=12)).astype(np.float32)
    _, y = run_layer(layer_param(BN + " batch_norm_param { eps: 1e-12 }"), x,
                     dtype=np.float32)
    mean, var = channel_stats(x)
    np.testing.assert_allclose(y, normalise_ref(x, mean, var, 1e-12), atol=2e-2)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1.0, atol=1e-3)


@pytest.mark.parametrize("lam", [0.999, 0.5])
def test_statistics_after_k_forwards(lam):
    p = layer_param(BN + f" batch_norm_param {{ moving_average_fraction: {lam} }}")
    shape = (4, 3, 2, 3)
    layer, bottom, top = setup_layer(p, [np.zeros(shape)])
    assert [tuple(b.shape) for b in layer.blobs] == [(3,), (3,), (1,)]
    m = 4 * 2 * 3
    lam = float(np.float32(lam))       # the proto field is a float
    f = np.zeros(1)
    msum = np.zeros(3)
    vsum = np.zeros(3)
    for k in range(4):
        x = rand(*shape, seed=20 + k) * (k + 1) + k
        bottom[0].xdata[...] = x
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        mean, var = channel_stats(x)
        f = lam * f + 1
        msum = mean + lam * msum
        vsum = m / (m - 1) * var + lam * vsum
        np.testing.assert_allclose(layer.blobs[2].xdata, f, rtol=1e-12)
        np.testing.assert_allclose(layer.blobs[0].xdata, msum, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.blobs[1].xdata, vsum, rtol=1e-10)


def test_statistics_single_value_per_channel():
    # m = 1: no bias correction (Caffe uses 1), the variance is 0
    layer, bottom, top = setup_layer(layer_param(BN), [np.array([[1.0, 2.0, -3.0]])])
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(layer.blobs[0].xdata, [1.0, 2.0, -3.0])
    np.testing.assert_allclose(layer.blobs[1].xdata, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(layer.blobs[2].xdata, [1.0])


def test_test_phase_uses_stored_statistics_and_leaves_them():
    x = rand(4, 3, 2, 2, seed=30)
    p = bn_param(BN + " batch_norm_param { eps: 0.01 }", STATS3, phase=caffe_pb2.TEST)
    layer, y = run_layer(p, x)
    stored = [np.asarray(a, dtype=np.float32).astype(np.float64) for a in STATS3]
    mean = stored[0] / stored[2]
    var = stored[1] / stored[2]
    np.testing.assert_allclose(y, normalise_ref(x, mean, var, float(np.float32(0.01))),
                               rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[0].xdata, STATS3[0])
    np.testing.assert_allclose(layer.blobs[1].xdata, STATS3[1])
    np.testing.assert_allclose(layer.blobs[2].xdata, STATS3[2])


def test_test_phase_with_zero_factor_uses_zero_statistics():
    x = rand(3, 2, seed=31)
    layer, y = run_layer(layer_param(BN, caffe_pb2.TEST), x)
    np.testing.assert_allclose(y, x / np.sqrt(EPS), rtol=1e-12)


def test_explicit_use_global_stats_wins_over_phase():
    x = rand(6, 2, 3, seed=32)
    # TEST phase, explicit false: batch statistics, and the statistics are updated
    layer, y = run_layer(bn_param(BN + " batch_norm_param { use_global_stats: false }",
                                  ([0.0, 0.0], [0.0, 0.0], [0.0]), caffe_pb2.TEST), x)
    assert not layer.use_global_stats
    mean, var = channel_stats(x)
    np.testing.assert_allclose(y, normalise_ref(x, mean, var, EPS), rtol=1e-10)
    np.testing.assert_allclose(layer.blobs[2].xdata, [1.0])
    # TRAIN phase, explicit true: stored statistics, no update
    layer, y = run_layer(bn_param(BN + " batch_norm_param { use_global_stats: true }",
                                  ([2.0, 4.0], [8.0, 2.0], [2.0])), x)
    assert layer.use_global_stats
    np.testing.assert_allclose(y, normalise_ref(x, [1.0, 2.0], [4.0, 1.0], EPS), rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].xdata, [2.0])


def test_default_use_global_stats_by_phase():
    assert not setup_layer(layer_param(BN, caffe_pb2.TRAIN), [rand(2, 2)])[0].use_global_stats
    assert setup_layer(layer_param(BN, caffe_pb2.TEST), [rand(2, 2)])[0].use_global_stats


def test_channel_mismatch_on_reshape_names_shapes():
    layer, bottom, top = setup_layer(layer_param(BN), [rand(2, 3, 2)])
    bottom[0].reshape(2, 4, 2)
    with pytest.raises(ShapeError, match=r"4 channels.*\(2, 4, 2\).*3"):
        layer.reshape(bottom, top)


# ---------------------------------------------------------------------- in place
@pytest.mark.parametrize("use_global", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (16, 3, 2, 2), (5, 3)])
def test_in_place_equals_out_of_place_float32(use_global, shape):
    text = BN + f" batch_norm_param {{ use_global_stats: {str(use_global).lower()} }}"
    x = (rand(*shape, seed=40) * 2 + 1).astype(np.float32)
    dy = rand(*shape, seed=41).astype(np.float32)
    res = []
    for in_place in (False, True):
        p = bn_param(text, STATS3)
        layer, y, dx = run_layer(p, x, in_place=in_place, dtype=np.float32, dy=dy)
        res.append((y, dx, [np.array(b.xdata) for b in layer.blobs]))
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])
    for a, b in zip(res[0][2], res[1][2]):
        np.testing.assert_array_equal(a, b)


def test_backward_can_run_twice():
    # backward must not destroy what it keeps from forward (pycaffe may call it again)
    x = rand(6, 3, 4, seed=42)
    dy = rand(6, 3, 4, seed=43)
    layer, bottom, top = setup_layer(layer_param(BN), [x])
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    top[0].xdiff[...] = dy
    layer.backward(top, [True], bottom)
    first = np.array(bottom[0].xdiff, copy=True)
    top[0].xdiff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(first, bottom[0].xdiff)


# ---------------------------------------------------------------------- memory
def _activation_arrays(layer, nbytes):
    found = []
    for v in vars(layer).values():
        if isinstance(v, np.ndarray) and v.nbytes >= nbytes:
            found.append(v)
    for b in layer.blobs:
        for a in (b.xdata,):
            if a.nbytes >= nbytes:
                found.append(a)
    return found


@pytest.mark.parametrize("shape", [(32, 16, 8, 8), (2, 16, 32, 32)])
def test_memory_one_kept_buffer_one_backward_temporary(shape):
    x = rand(*shape, seed=50).astype(np.float32)
    act = x.nbytes
    for in_place in (False, True):
        layer, bottom, top = setup_layer(layer_param(BN), [x], 1, in_place, np.float32)
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        top[0].xdiff[...] = 1.0
        bottom[0].xdiff   # allocate the diffs before measuring
        assert len(_activation_arrays(layer, act // 2)) <= 1
        tracemalloc.start()
        try:
            layer.forward(bottom, top)
            _, fwd_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            layer.backward(top, [True], bottom)
            _, bwd_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert fwd_peak < 0.5 * act, (in_place, fwd_peak, act)
        assert bwd_peak - before < 1.5 * act, (in_place, bwd_peak - before, act)


def test_memory_global_statistics_keep_no_buffer():
    x = rand(16, 8, 4, 4, seed=51).astype(np.float32)
    stats = ([0.0] * 8, [1.0] * 8, [1.0])
    layer, bottom, top = setup_layer(bn_param(BN, stats, caffe_pb2.TEST), [x], 1, False,
                                     np.float32)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert _activation_arrays(layer, x.nbytes // 2) == []


# ---------------------------------------------------------------------- nets
def _net(text, phase=caffe.TRAIN):
    return caffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


BN_NET = """
name: "bn_net"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 6 dim: 3 dim: 2 dim: 2 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" %s
        batch_norm_param { moving_average_fraction: 0.75 } }
"""


def test_statistics_get_lr_mult_0_without_param():
    net = _net(BN_NET % "")
    specs = [s for _, s in net.learnable_params]
    assert len(specs) == 3
    assert all(s.lr_mult == 0 and s.decay_mult == 0 for s in specs)
    assert net.layer_by_name["bn"].param_propagate_down == [False] * 3


def test_explicit_zero_lr_params_accepted():
    net = _net(BN_NET % ("param { lr_mult: 0 } " * 3))
    assert all(s.lr_mult == 0 for _, s in net.learnable_params)


@pytest.mark.parametrize("params", ["param { lr_mult: 1 }",
                                    "param { lr_mult: 0 } " * 2 + "param { lr_mult: 2 }"])
def test_learned_statistics_rejected_naming_layer(params):
    with pytest.raises(LayerError, match=r"'bn'.*lr_mult"):
        _net(BN_NET % params)


def test_too_many_param_specs_rejected():
    with pytest.raises(LayerError, match="4 param specs given, layer has 3 parameter blobs"):
        _net(BN_NET % ("param { lr_mult: 0 } " * 4))


def test_save_in_train_load_in_test(tmp_path):
    train = _net(BN_NET % "")
    history = []
    for k in range(3):
        x = rand(6, 3, 2, 2, seed=60 + k) * (k + 1) + k
        history.append(x)
        train.forward(data=x)
    path = tmp_path / "bn.caffemodel"
    train.save(str(path))
    test = _net(BN_NET % "", caffe.TEST)
    test.copy_from(str(path))
    x = rand(6, 3, 2, 2, seed=70)
    out = test.forward(data=x)["out"]
    # closed form of the stored statistics (lambda 0.75, m = 24)
    lam, m = 0.75, 24
    f = sum(lam ** (2 - k) for k in range(3))
    msum = sum(lam ** (2 - k) * channel_stats(h)[0] for k, h in enumerate(history))
    vsum = sum(lam ** (2 - k) * m / (m - 1) * channel_stats(h)[1] for k, h in enumerate(history))
    want = normalise_ref(x, msum / f, vsum / f, EPS)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)
    # and TEST-phase forwards leave the loaded statistics alone
    before = [np.array(b.data) for b in test.params["bn"]]
    test.forward(data=x)
    for a, b in zip(before, test.params["bn"]):
        np.testing.assert_array_equal(a, b.data)


def net_head(name, shape):
    """A training net's first lines: its name, force_backward and an Input "data" of ``shape``."""
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'\nname: "{name}"\nforce_backward: true\n'
            f'layer {{ name: "data" type: "Input" top: "data"\n'
            f'        input_param {{ shape {{ {dims} }} }} }}\n')


# A net of this package's own layers: a learned elementwise weight (Scale over all axes),
# BatchNorm, Scale with bias, Bias; in place or not. The loss is 0.5 * |out - target|^2 / N,
# its gradient written into the output diff (force_backward makes every layer run backward).
TRAIN_NET = net_head("tiny", (8, 3, 2, 2)) + """\
layer { name: "w" type: "Scale" bottom: "data" top: "h"
        scale_param { axis: 1 num_axes: -1 filler { type: "uniform" min: 0.5 max: 1.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "h" top: "%(a)s"
        batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale" type: "Scale" bottom: "%(a)s" top: "%(b)s"
        scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 1.5 } } }
layer { name: "bias" type: "Bias" bottom: "%(b)s" top: "%(c)s" }
"""


def _train(net, out_name, steps, lr=0.2, seed=80):
    rs = np.random.RandomState(seed)
    gain = rs.uniform(-2, 2, (1, 3, 2, 2))
    losses = []
    for _ in range(steps):
        x = rs.standard_normal((8, 3, 2, 2)) + 1
        target = gain * (x - 1) + 0.5
        net.clear_param_diffs()
        out = net.forward(data=x)[out_name]
        losses.append(0.5 * float(((out - target) ** 2).sum()) / 8)
        net.blobs[out_name].diff[...] = (out - target) / 8
        net.backward()
        for blob, spec in net.learnable_params:
            if spec.lr_mult:
                blob.data[...] -= lr * spec.lr_mult * blob.diff
    return losses


def test_in_place_training_matches_out_of_place():
    caffe.set_random_seed(5)
    a = _net(TRAIN_NET % dict(a="h", b="h", c="h"))
    caffe.set_random_seed(5)
    b = _net(TRAIN_NET % dict(a="n", b="s", c="out"))
    la = _train(a, "h", 12)
    lb = _train(b, "out", 12)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    assert la[-1] < 0.7 * la[0]
    for name in ("w", "bn", "scale", "bias"):
        for pa, pb in zip(a.params[name], b.params[name]):
            np.testing.assert_allclose(pa.data, pb.data, rtol=1e-5, atol=1e-6)
    # the statistics moved only through the forward update, never through a gradient
    for blob in a.params["bn"] + b.params["bn"]:
        assert not np.any(blob.diff)
    assert a.params["bn"][2].data[0] > 1


RECIPE = net_head("recipe", (8, 2, 5, 5)) + """\
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 }
        convolution_param { num_output: 3 kernel_size: 3 bias_term: false
                            weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
        param { lr_mult: 1 decay_mult: 0 } scale_param { axis: 1 num_axes: 1 } }
layer { name: "bias1" type: "Bias" bottom: "conv1" top: "conv1"
        param { lr_mult: 1 decay_mult: 0 } bias_param { axis: 1 num_axes: 1 } }
"""


def _need(*types):
    missing = [t for t in types if t not in layer_types()]
    if missing:
        pytest.skip(f"layer types not registered yet: {', '.join(missing)}")


def test_netspec_recipe_after_convolution_trains():
    _need("Convolution")
    net = _net(RECIPE)
    assert len(net.params["conv1"]) == 1
    rs = np.random.RandomState(90)
    x = rs.standard_normal((8, 2, 5, 5))
    target = rs.standard_normal((8, 3, 3, 3))
    losses = []
    for _ in range(15):
        net.clear_param_diffs()
        out = net.forward(data=x)["conv1"]
        losses.append(0.5 * float(((out - target) ** 2).sum()) / 8)
        net.blobs["conv1"].diff[...] = (out - target) / 8
        net.backward()
        for blob, spec in net.learnable_params:
            blob.data[...] -= 0.1 * spec.lr_mult * blob.diff
    assert losses[-1] < 0.8 * losses[0]
    assert np.all(np.isfinite(losses))


def test_convolution_without_bias_rejects_second_param():
    _need("Convolution")
    text = RECIPE.replace("param { lr_mult: 1 }\n        convolution_param",
                          "param { lr_mult: 1 } param { lr_mult: 2 }\n        convolution_param")
    with pytest.raises(LayerError, match="conv1: 2 param specs given, layer has 1 parameter blob"):
        _net(text)


SOLVER_NET = """
name: "solver_bn"
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 6 dim: 3 dim: 2 dim: 2 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" %s
        batch_norm_param { moving_average_fraction: 0.8 } }
layer { name: "scale" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }
layer { name: "loss" type: "EuclideanLoss" bottom: "bn" bottom: "target" top: "loss" }
"""


@pytest.mark.parametrize("params", ["", "param { lr_mult: 0 } " * 3])
def test_solver_changes_statistics_only_through_forward(params):
    solvers = pytest.importorskip("minicaffe.solvers")
    _need("EuclideanLoss")
    sp = caffe_pb2.SolverParameter(base_lr=0.1, momentum=0.9, weight_decay=0.5,
                                   lr_policy="fixed", max_iter=100, display=0)
    sp.net_param.CopyFrom(text_format.Parse(SOLVER_NET % params, caffe_pb2.NetParameter()))
    solver = solvers.SGDSolver(sp)
    x = rand(6, 3, 2, 2, seed=95) * 2 + 1
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["target"].data[...] = rand(6, 3, 2, 2, seed=96)
    scale_before = np.array(solver.net.params["scale"][0].data)
    solver.step(4)
    lam, m = float(np.float32(0.8)), 24
    f = sum(lam ** k for k in range(4))
    mean, var = channel_stats(x)
    bn = solver.net.params["bn"]
    np.testing.assert_allclose(bn[2].data, [f], rtol=1e-6)
    np.testing.assert_allclose(bn[0].data, mean * f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn[1].data, var * m / (m - 1) * f, rtol=1e-5)
    assert not np.allclose(solver.net.params["scale"][0].data, scale_before)

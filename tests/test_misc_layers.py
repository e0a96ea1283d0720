"""ArgMax, MVN, Reduction, Embed, Parameter and BatchReindex: values against loops and closed
forms written here, gradients by finite differences, Caffe's shape rules and error checks."""
import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.errors import LayerError


def forward(text, arrays, num_top=1, in_place=False):
    layer, bottom, top = setup_layer(layer_param(text), arrays, num_top=num_top,
                                     in_place=in_place)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def rand(shape, seed=0, scale=1.0):
    return np.random.RandomState(seed).standard_normal(shape) * scale


# --- ArgMax --------------------------------------------------------------------------------
def topk_ref(values, k):
    """Caffe's order: (value, index) pairs sorted descending, so ties go to the larger index."""
    pairs = sorted(((float(v), j) for j, v in enumerate(values)), reverse=True)[:k]
    return [j for _, j in pairs], [v for v, _ in pairs]


@pytest.mark.parametrize("shape", [(3, 4, 2, 3), (5, 7), (2, 6, 1)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_no_axis(shape, k, out_max_val):
    x = rand(shape, 1)
    text = f'type: "ArgMax" argmax_param {{ top_k: {k} out_max_val: {str(out_max_val).lower()} }}'
    _, _, top = forward(text, [x])
    n = shape[0]
    expect_shape = [1] * max(len(shape), 3)
    expect_shape[0], expect_shape[2] = n, k
    if out_max_val:
        expect_shape[1] = 2
    assert top[0].shape == tuple(expect_shape)
    y = top[0].data.reshape(n, -1)
    for i in range(n):
        idx, vals = topk_ref(x[i].ravel(), k)
        if out_max_val:
            assert list(y[i, :k]) == idx
            assert list(y[i, k:]) == vals
        else:
            assert list(y[i]) == idx


@pytest.mark.parametrize("shape,axis", [((3, 5, 2, 2), 1), ((3, 5, 4), -1), ((4, 3), 0),
                                        ((2, 3, 4, 5), 2)])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_axis(shape, axis, k, out_max_val):
    x = rand(shape, 2)
    text = (f'type: "ArgMax" argmax_param {{ top_k: {k} axis: {axis} '
            f'out_max_val: {str(out_max_val).lower()} }}')
    _, _, top = forward(text, [x])
    ax = axis % len(shape)
    expect_shape = list(shape)
    expect_shape[ax] = k
    assert top[0].shape == tuple(expect_shape)
    xm = np.moveaxis(x, ax, -1)
    ym = np.moveaxis(top[0].data, ax, -1)
    for pos in np.ndindex(*xm.shape[:-1]):
        idx, vals = topk_ref(xm[pos], k)
        assert list(ym[pos]) == (vals if out_max_val else idx)


def test_argmax_ties_go_to_larger_index():
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    _, _, top = forward('type: "ArgMax" argmax_param { top_k: 4 out_max_val: true }', [x])
    assert top[0].shape == (1, 2, 4)
    np.testing.assert_array_equal(top[0].data[0, 0], [4, 2, 1, 3])
    np.testing.assert_array_equal(top[0].data[0, 1], [3, 3, 3, 2])
    _, _, top = forward('type: "ArgMax"', [x])
    assert top[0].data.ravel()[0] == 4


def test_argmax_errors():
    with pytest.raises(LayerError, match="top_k"):
        forward('type: "ArgMax" argmax_param { top_k: 7 }', [rand((2, 3, 2))])
    with pytest.raises(LayerError, match="top_k"):
        forward('type: "ArgMax" argmax_param { top_k: 4 axis: 1 }', [rand((2, 3, 2))])
    with pytest.raises(LayerError, match="axis"):
        forward('type: "ArgMax" argmax_param { axis: 3 }', [rand((2, 3, 2))])
    layer, bottom, top = forward('type: "ArgMax"', [rand((2, 3))])
    assert not layer.allow_force_backward(0)
    layer.backward(top, [False], bottom)        # nothing asked: nothing done
    with pytest.raises(LayerError, match="backward"):
        layer.backward(top, [True], bottom)


# --- MVN -----------------------------------------------------------------------------------
def mvn_ref(x, normalize_variance, across_channels, eps):
    x4 = x.reshape(x.shape + (1,) * (4 - x.ndim))
    out = np.empty_like(x4)
    n, c = x4.shape[:2]
    groups = [(i, slice(None)) for i in range(n)] if across_channels else \
        [(i, j) for i in range(n) for j in range(c)]
    for g in groups:
        v = x4[g]
        m = sum(v.ravel()) / v.size
        centred = v - m
        if normalize_variance:
            var = sum(centred.ravel() ** 2) / v.size
            out[g] = centred / (var ** 0.5 + eps)
        else:
            out[g] = centred
    return out


MVN_CASES = [(True, False), (True, True), (False, False), (False, True)]


@pytest.mark.parametrize("nv,ac", MVN_CASES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4, 6), (4, 6)])
def test_mvn_forward(nv, ac, shape):
    x = rand(shape, 3, 2.0) + 1.5
    text = (f'type: "MVN" mvn_param {{ normalize_variance: {str(nv).lower()} '
            f'across_channels: {str(ac).lower()} }}')
    _, _, top = forward(text, [x])
    expect = mvn_ref(x, nv, ac, 1e-9)
    assert top[0].shape == expect.shape          # Caffe's top is always 4-D
    np.testing.assert_allclose(top[0].data, expect, rtol=1e-10, atol=1e-12)


def test_mvn_eps_added_to_std_not_variance():
    x = rand((2, 3, 4, 4), 4) * 0.3
    _, _, top = forward('type: "MVN" mvn_param { eps: 0.5 }', [x])
    np.testing.assert_allclose(top[0].data, mvn_ref(x, True, False, 0.5), rtol=1e-12)
    c = x - x.mean(axis=(2, 3), keepdims=True)
    wrong = c / np.sqrt(c.var(axis=(2, 3), keepdims=True) + 0.5)
    assert not np.allclose(top[0].data, wrong, rtol=1e-3)
    # A constant group gives zeros, not NaN.
    _, _, top = forward('type: "MVN"', [np.full((1, 2, 3, 3), 7.0)])
    np.testing.assert_array_equal(top[0].data, 0.0)


@pytest.mark.parametrize("nv,ac", MVN_CASES)
@pytest.mark.parametrize("in_place", [False, True])
def test_mvn_gradients(nv, ac, in_place):
    text = (f'type: "MVN" mvn_param {{ normalize_variance: {str(nv).lower()} '
            f'across_channels: {str(ac).lower()} }}')
    check_gradients(text, [rand((2, 3, 3, 4), 5)], in_place=in_place)


def test_mvn_gradients_3d():
    check_gradients('type: "MVN" mvn_param { across_channels: true }', [rand((3, 2, 5), 6)])


def test_mvn_backward_is_caffes_formula_with_large_eps():
    """With eps added to the std, Caffe's backward is (dy - mean dy - y mean(dy y)) / (s + eps);
    checked here against that formula written out (it differs from the exact gradient by
    O(eps / s), invisible at the default eps)."""
    x = rand((2, 2, 3, 3), 7)
    layer, bottom, top = forward('type: "MVN" mvn_param { eps: 0.25 }', [x])
    dy = rand(top[0].shape, 8)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    y = top[0].data.reshape(4, 9)
    g = dy.reshape(4, 9)
    s = x.reshape(4, 9).std(axis=1, keepdims=True) + 0.25
    expect = (g - g.mean(1, keepdims=True) - y * (g * y).mean(1, keepdims=True)) / s
    np.testing.assert_allclose(bottom[0].diff.reshape(4, 9), expect, rtol=1e-12)


def test_mvn_rejects_5d():
    with pytest.raises(LayerError, match="at most 4 axes"):
        forward('type: "MVN"', [rand((2, 2, 2, 2, 2))])


# --- Reduction ------------------------------------------------------------------------------
OPS = {"SUM": lambda v: sum(v), "ASUM": lambda v: sum(abs(t) for t in v),
       "SUMSQ": lambda v: sum(t * t for t in v), "MEAN": lambda v: sum(v) / len(v)}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("coeff", [1.0, -2.5])
def test_reduction_forward(op, axis, coeff):
    shape = (2, 3, 4)
    x = rand(shape, 9)
    _, _, top = forward(f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} '
                        f'coeff: {coeff} }}', [x])
    ax = axis % 3
    assert top[0].shape == shape[:ax]
    rows = x.reshape(int(np.prod(shape[:ax])), -1)
    expect = [coeff * OPS[op](list(r)) for r in rows]
    np.testing.assert_allclose(top[0].data.ravel(), expect, rtol=1e-12)


def test_reduction_defaults_sum_all():
    x = rand((3, 2), 10)
    _, _, top = forward('type: "Reduction"', [x])
    assert top[0].shape == () and top[0].count == 1
    assert abs(float(top[0].data) - sum(x.ravel())) < 1e-12


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 0.5), (-1, -3.0)])
def test_reduction_gradients(op, axis, coeff):
    x = rand((2, 3, 4), 11)
    if op == "ASUM":          # keep away from the kink at 0
        x = np.sign(x) * (np.abs(x) + 0.2)
    check_gradients(f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} '
                    f'coeff: {coeff} }}', [x])


def test_reduction_errors():
    with pytest.raises(LayerError, match="axis"):
        forward('type: "Reduction" reduction_param { axis: 3 }', [rand((2, 3, 4))])
    with pytest.raises(LayerError, match="in-place"):
        forward('type: "Reduction"', [rand((2, 3))], in_place=True)


# --- Embed ---------------------------------------------------------------------------------
def embed_text(k, n, bias=True):
    return (f'type: "Embed" embed_param {{ input_dim: {k} num_output: {n} '
            f'bias_term: {str(bias).lower()} weight_filler {{ type: "gaussian" std: 1 }} '
            f'bias_filler {{ type: "uniform" min: -1 max: 1 }} }}')


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 2, 2)])
def test_embed_forward(bias, shape):
    k, n = 6, 4
    idx = np.random.RandomState(12).randint(0, k, shape).astype(np.float64)
    layer, _, top = forward(embed_text(k, n, bias), [idx])
    assert layer.blobs[0].shape == (k, n)
    assert len(layer.blobs) == (2 if bias else 1)
    assert top[0].shape == shape + (n,)
    w = layer.blobs[0].data
    for pos in np.ndindex(*shape):
        expect = w[int(idx[pos])] + (layer.blobs[1].data if bias else 0)
        np.testing.assert_allclose(top[0].data[pos], expect, rtol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_embed_gradients(bias):
    # Repeated indices: their gradients must add up in the same weight row.
    idx = np.array([[0, 3, 3], [5, 0, 3]], dtype=np.float64)
    check_gradients(embed_text(6, 4, bias), [idx], check_bottom=[])


def test_embed_weight_gradient_accumulates_rows():
    idx = np.array([1.0, 1.0, 2.0])
    layer, bottom, top = forward(embed_text(3, 2), [idx])
    dy = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 0.5          # parameter gradients accumulate
    layer.blobs[1].diff[...] = 0
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, [[0.5, 0.5], [11.5, 22.5], [100.5, 200.5]])
    np.testing.assert_allclose(layer.blobs[1].diff, [111, 222])


def test_embed_errors():
    with pytest.raises(LayerError, match="out of range"):
        forward(embed_text(4, 2), [np.array([0.0, 4.0])])
    with pytest.raises(LayerError, match="out of range"):
        forward(embed_text(4, 2), [np.array([-1.0])])
    with pytest.raises(LayerError, match="not an integer"):
        forward(embed_text(4, 2), [np.array([1.5])])
    with pytest.raises(LayerError, match="input_dim"):
        forward('type: "Embed" embed_param { num_output: 2 }', [np.array([0.0])])
    with pytest.raises(LayerError, match="num_output"):
        forward('type: "Embed" embed_param { input_dim: 2 }', [np.array([0.0])])
    layer, bottom, top = forward(embed_text(4, 2), [np.array([1.0])])
    assert not layer.allow_force_backward(0)
    with pytest.raises(LayerError, match="backpropagate"):
        layer.backward(top, [True], bottom)


# --- Parameter -----------------------------------------------------------------------------
def test_parameter_layer():
    layer, _, top = forward('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (2, 3)
    assert top[0].shape == (2, 3)
    np.testing.assert_array_equal(top[0].data, 0)           # Caffe: no filler, zeros
    layer.blobs[0].data[...] = np.arange(6).reshape(2, 3)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, np.arange(6).reshape(2, 3))
    layer.blobs[0].diff[...] = 1
    top[0].diff[...] = 2
    layer.backward(top, [], [])
    np.testing.assert_array_equal(layer.blobs[0].diff, 3)   # accumulated


def test_parameter_gradients():
    layer = check_gradients('type: "Parameter" parameter_param { shape { dim: 3 dim: 2 } }',
                            [])
    assert layer.blobs[0].shape == (3, 2)


def test_parameter_layer_takes_no_bottom():
    with pytest.raises(LayerError, match="bottom"):
        forward('type: "Parameter" parameter_param { shape { dim: 2 } }', [rand((2,))])


# --- BatchReindex --------------------------------------------------------------------------
def test_batch_reindex_forward():
    x = rand((4, 2, 3), 13)
    perm = np.array([3.0, 0.0, 3.0, 1.0, 2.0, 2.0])
    _, _, top = forward('type: "BatchReindex"', [x, perm])
    assert top[0].shape == (6, 2, 3)
    for i, j in enumerate(perm):
        np.testing.assert_array_equal(top[0].data[i], x[int(j)])


def test_batch_reindex_gradients():
    x = rand((4, 3), 14)
    check_gradients('type: "BatchReindex"', [x, np.array([2.0, 0.0, 2.0, 2.0, 1.0])],
                    check_bottom=[0])
    check_gradients('type: "BatchReindex"', [rand((3, 2, 2), 15), np.array([1.0])],
                    check_bottom=[0])


def test_batch_reindex_errors():
    with pytest.raises(LayerError, match="out of range"):
        forward('type: "BatchReindex"', [rand((3, 2)), np.array([0.0, 3.0])])
    with pytest.raises(LayerError, match="out of range"):
        forward('type: "BatchReindex"', [rand((3, 2)), np.array([-1.0])])
    with pytest.raises(LayerError, match="1-D"):
        forward('type: "BatchReindex"', [rand((3, 2)), np.zeros((2, 1))])
    layer, bottom, top = forward('type: "BatchReindex"', [rand((3, 2)), np.array([1.0])])
    with pytest.raises(LayerError, match="index"):
        layer.backward(top, [True, True], bottom)


# --- a prototxt net using the layers (float32, through Net) ----------------------------------
MISC_NET = """
name: "misc"
force_backward: true
layer { name: "in" type: "Input" top: "data" top: "words"
        input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 dim: 5 } } }
layer { name: "embed" type: "Embed" bottom: "words" top: "emb"
        embed_param { input_dim: 7 num_output: 8 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "mean" type: "Reduction" bottom: "emb" top: "emb_mean"
        reduction_param { operation: MEAN axis: 2 } }
layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 5 } } }
layer { name: "add" type: "Eltwise" bottom: "emb_mean" bottom: "p" top: "s" }
layer { name: "total" type: "Reduction" bottom: "s" top: "total" loss_weight: 1 }
layer { name: "mvn" type: "MVN" bottom: "data" top: "data" }
layer { name: "argmax" type: "ArgMax" bottom: "data" top: "best"
        argmax_param { axis: 1 } }
"""


def test_misc_layers_in_a_net(tmp_path):
    import minicaffe as caffe
    path = tmp_path / "misc.prototxt"
    path.write_text(MISC_NET)
    net = caffe.Net(str(path), caffe.TRAIN)
    data = rand((2, 3, 4, 4), 31).astype(np.float32) * 3 + 1
    words = np.array([[0, 6, 2, 2, 3], [1, 6, 6, 0, 4]], dtype=np.float32)
    out = net.forward(data=data, words=words)
    w = net.params["embed"][0].data
    b = net.params["embed"][1].data
    expect_total = sum(w[int(k)].mean() + b.mean() for k in words.ravel())
    assert abs(float(out["total"]) - expect_total) < 1e-4
    assert net.blobs["data"].shape == (2, 3, 4, 4)
    mvn = net.blobs["data"].data
    np.testing.assert_allclose(mvn, mvn_ref(data.astype(np.float64), True, False, 1e-9),
                               rtol=1e-4, atol=1e-5)
    assert net.blobs["best"].shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(net.blobs["best"].data[:, 0], mvn.argmax(axis=1))
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_allclose(net.params["p"][0].diff, 1.0)
    counts = np.bincount(words.ravel().astype(int), minlength=7)
    np.testing.assert_allclose(net.params["embed"][0].diff,
                               np.repeat(counts[:, None] / 8.0, 8, axis=1), rtol=1e-6)
    np.testing.assert_allclose(net.params["embed"][1].diff, 10 / 8.0, rtol=1e-6)

"""ArgMax and Reduction: values against loops and closed forms written here, gradients by
finite differences, Caffe's shape rules and error checks; a prototxt net using them."""
import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer, rand
from minicaffe.errors import LayerError
from test_mvn import mvn_ref


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
    _, _, top = forward_layer(text, [x])
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
    _, _, top = forward_layer(text, [x])
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
    _, _, top = forward_layer('type: "ArgMax" argmax_param { top_k: 4 out_max_val: true }', [x])
    assert top[0].shape == (1, 2, 4)
    np.testing.assert_array_equal(top[0].data[0, 0], [4, 2, 1, 3])
    np.testing.assert_array_equal(top[0].data[0, 1], [3, 3, 3, 2])
    _, _, top = forward_layer('type: "ArgMax"', [x])
    assert top[0].data.ravel()[0] == 4


def test_argmax_errors():
    with pytest.raises(LayerError, match="top_k"):
        forward_layer('type: "ArgMax" argmax_param { top_k: 7 }', [rand((2, 3, 2))])
    with pytest.raises(LayerError, match="top_k"):
        forward_layer('type: "ArgMax" argmax_param { top_k: 4 axis: 1 }', [rand((2, 3, 2))])
    with pytest.raises(LayerError, match="axis"):
        forward_layer('type: "ArgMax" argmax_param { axis: 3 }', [rand((2, 3, 2))])
    layer, bottom, top = forward_layer('type: "ArgMax"', [rand((2, 3))])
    assert not layer.allow_force_backward(0)
    layer.backward(top, [False], bottom)        # nothing asked: nothing done
    with pytest.raises(LayerError, match="backward"):
        layer.backward(top, [True], bottom)


# --- Reduction ------------------------------------------------------------------------------
OPS = {"SUM": lambda v: sum(v), "ASUM": lambda v: sum(abs(t) for t in v),
       "SUMSQ": lambda v: sum(t * t for t in v), "MEAN": lambda v: sum(v) / len(v)}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("coeff", [1.0, -2.5])
def test_reduction_forward(op, axis, coeff):
    shape = (2, 3, 4)
    x = rand(shape, 9)
    _, _, top = forward_layer(f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} '
                        f'coeff: {coeff} }}', [x])
    ax = axis % 3
    assert top[0].shape == shape[:ax]
    rows = x.reshape(int(np.prod(shape[:ax])), -1)
    expect = [coeff * OPS[op](list(r)) for r in rows]
    np.testing.assert_allclose(top[0].data.ravel(), expect, rtol=1e-12)


def test_reduction_defaults_sum_all():
    x = rand((3, 2), 10)
    _, _, top = forward_layer('type: "Reduction"', [x])
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
        forward_layer('type: "Reduction" reduction_param { axis: 3 }', [rand((2, 3, 4))])
    with pytest.raises(LayerError, match="in-place"):
        forward_layer('type: "Reduction"', [rand((2, 3))], in_place=True)


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

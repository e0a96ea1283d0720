"""MVN: values against loops written here, gradients by finite differences, Caffe's formula
and error checks."""
import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer, rand
from minicaffe.errors import LayerError


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
    _, _, top = forward_layer(text, [x])
    expect = mvn_ref(x, nv, ac, 1e-9)
    assert top[0].shape == expect.shape          # Caffe's top is always 4-D
    np.testing.assert_allclose(top[0].data, expect, rtol=1e-10, atol=1e-12)


def test_mvn_eps_added_to_std_not_variance():
    x = rand((2, 3, 4, 4), 4) * 0.3
    _, _, top = forward_layer('type: "MVN" mvn_param { eps: 0.5 }', [x])
    np.testing.assert_allclose(top[0].data, mvn_ref(x, True, False, 0.5), rtol=1e-12)
    c = x - x.mean(axis=(2, 3), keepdims=True)
    wrong = c / np.sqrt(c.var(axis=(2, 3), keepdims=True) + 0.5)
    assert not np.allclose(top[0].data, wrong, rtol=1e-3)
    # A constant group gives zeros, not NaN.
    _, _, top = forward_layer('type: "MVN"', [np.full((1, 2, 3, 3), 7.0)])
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
    layer, bottom, top = forward_layer('type: "MVN" mvn_param { eps: 0.25 }', [x])
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
        forward_layer('type: "MVN"', [rand((2, 2, 2, 2, 2))])

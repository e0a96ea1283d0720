"""MultinomialLogisticLoss and HingeLoss: loss values against loops written here, gradients by
finite differences, normalisation and error checks."""
import math

import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer
from minicaffe.errors import LayerError


def rs(seed):
    return np.random.RandomState(seed)


def probs(n, c, seed):
    p = rs(seed).uniform(0.1, 1.0, (n, c))
    return p / p.sum(axis=1, keepdims=True)


# --- MultinomialLogisticLoss ---------------------------------------------------------------
@pytest.mark.parametrize("label_shape", [(5,), (5, 1, 1, 1), (5, 1)])
def test_mll_forward(label_shape):
    p = probs(5, 4, 0)
    lab = np.array([0, 3, 1, 1, 2], dtype=np.float64)
    _, _, top = forward_layer('type: "MultinomialLogisticLoss"', [p, lab.reshape(label_shape)])
    expect = -sum(math.log(p[i, int(lab[i])]) for i in range(5)) / 5
    assert top[0].shape == ()
    assert abs(float(top[0].data) - expect) < 1e-12


def test_mll_clamps_zero_probability():
    p = np.array([[0.0, 1.0], [0.5, 0.5]])
    layer, bottom, top = forward_layer('type: "MultinomialLogisticLoss"', [p, np.array([0.0, 1.0])])
    expect = (-math.log(1e-20) - math.log(0.5)) / 2
    assert abs(float(top[0].data) - expect) < 1e-9
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, [[-0.5 / 1e-20, 0], [0, -0.5 / 0.5]])


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 2, 1)])
def test_mll_gradients(shape):
    n = shape[0]
    c = int(np.prod(shape[1:]))
    p = probs(n, c, 1).reshape(shape)
    lab = rs(2).randint(0, c, n).astype(np.float64)
    check_gradients('type: "MultinomialLogisticLoss"', [p, lab], check_bottom=[0])


def test_mll_errors():
    p = probs(3, 4, 3)
    with pytest.raises(LayerError, match="out of range"):
        forward_layer('type: "MultinomialLogisticLoss"', [p, np.array([0.0, 4.0, 1.0])])
    with pytest.raises(LayerError, match="label"):
        forward_layer('type: "MultinomialLogisticLoss"', [p, np.zeros((3, 2))])
    with pytest.raises(LayerError, match="first dimension"):
        forward_layer('type: "MultinomialLogisticLoss"', [p, np.zeros(4)])
    layer, bottom, top = forward_layer('type: "MultinomialLogisticLoss"', [p, np.zeros(3)])
    with pytest.raises(LayerError, match="label"):
        layer.backward(top, [True, True], bottom)


# --- HingeLoss -----------------------------------------------------------------------------
def hinge_ref(x, lab, l2):
    n = x.shape[0]
    x = x.reshape(n, -1)
    total = 0.0
    for i in range(n):
        for j in range(x.shape[1]):
            t = 1.0 if j == int(lab[i]) else -1.0
            m = max(0.0, 1.0 - t * x[i, j])
            total += m * m if l2 else m
    return total / n


def hinge_input(shape, seed):
    """Scores kept away from +-1, where the hinge has its kink."""
    x = rs(seed).uniform(-2, 2, shape)
    return np.where(np.abs(np.abs(x) - 1) < 0.05, x + 0.2, x)


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2, 2)])
def test_hinge_forward(norm, shape):
    x = hinge_input(shape, 4)
    c = int(np.prod(shape[1:]))
    lab = rs(5).randint(0, c, shape[0]).astype(np.float64)
    _, _, top = forward_layer(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [x, lab])
    assert abs(float(top[0].data) - hinge_ref(x, lab, norm == "L2")) < 1e-12


def test_hinge_default_is_l1():
    x = hinge_input((4, 3), 6)
    lab = np.array([0.0, 2.0, 1.0, 1.0])
    _, _, top = forward_layer('type: "HingeLoss"', [x, lab])
    assert abs(float(top[0].data) - hinge_ref(x, lab, False)) < 1e-12


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2)])
def test_hinge_gradients(norm, shape):
    x = hinge_input(shape, 7)
    c = int(np.prod(shape[1:]))
    lab = rs(8).randint(0, c, shape[0]).astype(np.float64)
    check_gradients(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [x, lab],
                    check_bottom=[0])


def test_hinge_errors():
    with pytest.raises(LayerError, match="out of range"):
        forward_layer('type: "HingeLoss"', [np.zeros((2, 3)), np.array([0.0, 3.0])])
    with pytest.raises(LayerError, match="one label per item"):
        forward_layer('type: "HingeLoss"', [np.zeros((2, 3)), np.zeros((2, 2))])

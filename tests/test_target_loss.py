"""ContrastiveLoss: loss values against loops written here, gradients by finite differences
and against Caffe's closed form (deliberately approximate), and error checks."""
import math

import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer
from minicaffe.errors import LayerError


def rs(seed):
    return np.random.RandomState(seed)


# --- ContrastiveLoss -----------------------------------------------------------------------
def contrastive_ref(a, b, y, margin, legacy):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        d2 = sum((a[i].ravel() - b[i].ravel()) ** 2)
        if int(y.ravel()[i]):
            total += d2
        elif legacy:
            total += max(margin - d2, 0.0)
        else:
            total += max(margin - math.sqrt(d2), 0.0) ** 2
    return total / n / 2


def pairs(n, c, seed, scale=0.4):
    r = rs(seed)
    a, b = r.standard_normal((n, c)) * scale, r.standard_normal((n, c)) * scale
    y = (r.uniform(size=n) > 0.5).astype(np.float64)
    y[0], y[1] = 1, 0
    return a, b, y


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("margin", [1.0, 2.5])
@pytest.mark.parametrize("shapes", [((6, 3), (6,)), ((6, 3, 1, 1), (6, 1, 1, 1))])
def test_contrastive_forward(legacy, margin, shapes):
    fshape, yshape = shapes
    a, b, y = pairs(6, 3, 24)
    text = (f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: {margin} '
            f'legacy_version: {str(legacy).lower()} }}')
    _, _, top = forward_layer(text, [a.reshape(fshape), b.reshape(fshape), y.reshape(yshape)])
    assert abs(float(top[0].data) - contrastive_ref(a, b, y, margin, legacy)) < 1e-12


@pytest.mark.parametrize("margin", [1.0, 3.0])
def test_contrastive_gradients_legacy(margin):
    a, b, y = pairs(6, 3, 25)
    text = (f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: {margin} '
            f'legacy_version: true }}')
    check_gradients(text, [a, b, y], check_bottom=[0, 1])


def test_contrastive_gradients_similar_pairs_exact():
    a, b, _ = pairs(5, 4, 26)
    check_gradients('type: "ContrastiveLoss"', [a, b, np.ones(5)], check_bottom=[0, 1])


@pytest.mark.parametrize("margin", [1.0, 2.0])
def test_contrastive_gradients_default(margin):
    # Caffe divides by (d + 1e-4) for dissimilar pairs: close to, not exactly, the gradient.
    a, b, y = pairs(6, 3, 27)
    check_gradients(f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: {margin} }}',
                    [a, b, y], check_bottom=[0, 1], rtol=2e-3, atol=1e-6)


def test_contrastive_backward_matches_caffe_formula():
    a, b, y = pairs(5, 3, 28)
    margin = 1.5
    layer, bottom, top = forward_layer(f'type: "ContrastiveLoss" contrastive_loss_param '
                                 f'{{ margin: {margin} }}', [a, b, y])
    top[0].diff[...] = 0.7
    layer.backward(top, [True, True, False], bottom)
    expect = np.zeros_like(a)
    for i in range(5):
        d = a[i] - b[i]
        if y[i]:
            expect[i] = 0.7 / 5 * d
        else:
            dist = math.sqrt(sum(d * d))
            if margin - dist > 0:
                expect[i] = -0.7 / 5 * (margin - dist) / (dist + 1e-4) * d
    np.testing.assert_allclose(bottom[0].diff, expect, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bottom[1].diff, -expect, rtol=1e-12, atol=1e-15)


def test_contrastive_similarity_truncates():
    a, b, _ = pairs(2, 2, 29)
    y = np.array([0.7, 1.2])            # int(0.7) == 0: dissimilar
    _, _, top = forward_layer('type: "ContrastiveLoss"', [a, b, y])
    assert abs(float(top[0].data) - contrastive_ref(a, b, np.array([0, 1]), 1.0, False)) < 1e-12


def test_contrastive_errors():
    a, b, y = pairs(4, 3, 30)
    with pytest.raises(LayerError, match="feature"):
        forward_layer('type: "ContrastiveLoss"', [a, np.zeros((4, 2)), y])
    with pytest.raises(LayerError, match="feature"):
        forward_layer('type: "ContrastiveLoss"', [a.reshape(4, 1, 3), b.reshape(4, 1, 3), y])
    with pytest.raises(LayerError, match="similarity"):
        forward_layer('type: "ContrastiveLoss"', [a, b, np.zeros((4, 2))])
    with pytest.raises(LayerError, match="similarity"):
        forward_layer('type: "ContrastiveLoss"', [a, b, np.zeros(3)])
    with pytest.raises(LayerError, match="3 bottom|exactly 3"):
        forward_layer('type: "ContrastiveLoss"', [a, b])
    layer, bottom, top = forward_layer('type: "ContrastiveLoss"', [a, b, y])
    assert layer.allow_force_backward(1) and not layer.allow_force_backward(2)

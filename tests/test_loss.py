"""Softmax, loss layers and Accuracy: values against closed forms / hand counts computed here,
gradients by finite differences, Caffe's normalisation rules and error checks."""
import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer, layer_param, setup_layer
from minicaffe.errors import LayerError


def softmax_ref(x, axis):
    """exp / sum along axis, one slice at a time (float64)."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        e = np.exp(x[idx] - x[idx].max())
        out[idx] = e / e.sum()
    return np.moveaxis(out, -1, axis)


# --- Softmax -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis", [((4, 5), 1), ((2, 3, 4, 2), 1), ((2, 3, 4), -1),
                                        ((2, 3, 4), 0), ((2, 3, 4, 2), 2)])
@pytest.mark.parametrize("in_place", [False, True])
def test_softmax_forward(shape, axis, in_place):
    x = np.random.RandomState(0).standard_normal(shape) * 3
    text = f'type: "Softmax" softmax_param {{ axis: {axis} }}'
    _, _, top = forward_layer(text, [x], in_place=in_place)
    y = top[0].data
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-12)
    np.testing.assert_allclose(y, softmax_ref(x, axis), rtol=1e-12)


def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1002.0]])
    with np.errstate(over="raise", invalid="raise"):
        _, _, top = forward_layer('type: "Softmax"', [x])
    e = np.exp([-1.0, 0.0, -2.0])
    np.testing.assert_allclose(top[0].data[0], e / e.sum(), rtol=1e-12)
    e = np.exp([0.0, 0.0, -2.0])
    np.testing.assert_allclose(top[0].data[1], e / e.sum(), rtol=1e-12)


@pytest.mark.parametrize("shape,axis", [((3, 4), 1), ((2, 3, 2, 2), 1), ((2, 3, 4), 2),
                                        ((3, 2, 2), 0)])
@pytest.mark.parametrize("in_place", [False, True])
def test_softmax_gradients(shape, axis, in_place):
    x = np.random.RandomState(1).standard_normal(shape)
    check_gradients(f'type: "Softmax" softmax_param {{ axis: {axis} }}', [x],
                    in_place=in_place)


# --- SoftmaxWithLoss -----------------------------------------------------------------------
def swl_reference(x, labels, axis=1, ignore=None, mode="VALID"):
    """Closed-form SoftmaxWithLoss by explicit loops over (outer, inner) positions."""
    p = softmax_ref(x, axis)
    p = np.moveaxis(p, axis, -1)                   # (..., C)
    lab = np.asarray(labels).reshape(p.shape[:-1])
    total, valid = 0.0, 0
    for idx in np.ndindex(*lab.shape):
        lv = int(lab[idx])
        if ignore is not None and lv == ignore:
            continue
        total -= np.log(max(p[idx + (lv,)], np.finfo(np.float32).tiny))
        valid += 1
    outer = int(np.prod(x.shape[:axis % x.ndim]))
    inner = int(np.prod(x.shape[axis % x.ndim + 1:]))
    norm = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return total / max(norm, 1)


def loss_param_text(ignore=None, normalization=None, normalize=None):
    """' loss_param { ... }' with the options given, '' when none is."""
    lp = []
    if ignore is not None:
        lp.append(f"ignore_label: {ignore}")
    if normalization is not None:
        lp.append(f"normalization: {normalization}")
    if normalize is not None:
        lp.append(f"normalize: {'true' if normalize else 'false'}")
    return " loss_param { " + " ".join(lp) + " }" if lp else ""


def swl_text(axis=None, ignore=None, normalization=None, normalize=None):
    text = 'type: "SoftmaxWithLoss"'
    if axis is not None:
        text += f" softmax_param {{ axis: {axis} }}"
    return text + loss_param_text(ignore, normalization, normalize)


def scores_and_labels(shape=(4, 5), axis=1, seed=0, ignore=None):
    r = np.random.RandomState(seed)
    x = r.standard_normal(shape) * 2
    c = shape[axis]
    lshape = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    lab = r.randint(0, c, lshape).astype(np.float64)
    if ignore is not None:
        lab.flat[::3] = ignore
    return x, lab


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
@pytest.mark.parametrize("ignore", [None, 2, -1])
def test_softmax_loss_normalizations(mode, ignore):
    x, lab = scores_and_labels((3, 4, 2, 3), seed=1, ignore=ignore)
    _, _, top = forward_layer(swl_text(ignore=ignore, normalization=mode), [x, lab])
    assert tuple(top[0].shape) == ()
    assert top[0].count == 1
    ref = swl_reference(x, lab, 1, ignore, mode)
    np.testing.assert_allclose(float(top[0].data), ref, rtol=1e-12)
    check_gradients(swl_text(ignore=ignore, normalization=mode), [x, lab], check_bottom=[0])


def test_softmax_loss_default_is_valid_and_legacy_normalize():
    x, lab = scores_and_labels((3, 4, 2, 2), seed=2, ignore=1)
    lab[0, 0, 0] = 2                       # 4 valid labels: VALID and BATCH_SIZE differ
    assert (lab != 1).sum() == 4
    ref_valid = swl_reference(x, lab, 1, 1, "VALID")
    ref_batch = swl_reference(x, lab, 1, 1, "BATCH_SIZE")
    assert abs(ref_valid - ref_batch) > 1e-3
    for text, ref in [(swl_text(ignore=1), ref_valid),
                      (swl_text(ignore=1, normalize=True), ref_valid),
                      (swl_text(ignore=1, normalize=False), ref_batch),
                      # an explicit normalization wins over the legacy flag
                      (swl_text(ignore=1, normalize=False, normalization="VALID"), ref_valid)]:
        _, _, top = forward_layer(text, [x, lab])
        np.testing.assert_allclose(float(top[0].data), ref, rtol=1e-12, err_msg=text)


def test_softmax_loss_hand_value():
    # two samples, 3 classes: -log softmax at the labels, averaged
    x = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    lab = np.array([1.0, 0.0])
    _, _, top = forward_layer(swl_text(), [x, lab])
    want = (np.log(3.0) + np.log(1 + 2 * np.exp(-2.0))) / 2
    np.testing.assert_allclose(float(top[0].data), want, rtol=1e-12)


@pytest.mark.parametrize("shape,axis", [((2, 3, 3, 2), 1), ((2, 3, 4), 2), ((2, 3, 4), -1),
                                        ((2, 3, 2, 4), 2)])
@pytest.mark.parametrize("ignore", [None, 0])
def test_softmax_loss_other_axes(shape, axis, ignore):
    x, lab = scores_and_labels(shape, axis=axis, seed=3, ignore=ignore)
    text = swl_text(axis=axis, ignore=ignore)
    _, _, top = forward_layer(text, [x, lab])
    np.testing.assert_allclose(float(top[0].data), swl_reference(x, lab, axis, ignore),
                               rtol=1e-12)
    check_gradients(text, [x, lab], check_bottom=[0])


def test_softmax_loss_gradient_closed_form_with_ignore_and_weight():
    x, lab = scores_and_labels((3, 4), seed=4)
    lab[1] = 7
    layer, bottom, top = forward_layer(swl_text(ignore=7), [x, lab])
    top[0].diff[...] = 2.5
    layer.backward(top, [True, False], bottom)
    p = softmax_ref(x, 1)
    want = p.copy()
    for i in (0, 2):
        want[i, int(lab[i])] -= 1
    want[1] = 0
    want *= 2.5 / 2                      # loss weight / valid count
    np.testing.assert_allclose(bottom[0].diff, want, rtol=1e-12, atol=1e-15)


def test_softmax_loss_second_top_is_probabilities():
    x, lab = scores_and_labels((2, 3, 2, 2), seed=5)
    layer, bottom, top = forward_layer(swl_text(), [x, lab], num_top=2)
    np.testing.assert_allclose(top[1].data, softmax_ref(x, 1), rtol=1e-12)
    np.testing.assert_allclose(float(top[0].data), swl_reference(x, lab), rtol=1e-12)
    assert layer.loss_weights == [1.0, 0.0]


def test_softmax_loss_all_ignored_clamps_normalizer():
    x = np.random.RandomState(6).standard_normal((2, 3))
    lab = np.array([4.0, 4.0])
    layer, bottom, top = forward_layer(swl_text(ignore=4), [x, lab])
    assert float(top[0].data) == 0.0
    layer.backward(top, [True, False], bottom)
    assert np.all(bottom[0].diff == 0) and np.all(np.isfinite(bottom[0].diff))


def test_softmax_loss_default_loss_weight_is_set_on_top_diff():
    x, lab = scores_and_labels(seed=7)
    layer, _, top = setup_layer(layer_param(swl_text()), [x, lab])
    assert layer.loss_weights == [1.0]
    assert float(top[0].diff) == 1.0


def test_softmax_loss_refuses_label_backward_and_bad_labels():
    x, lab = scores_and_labels(seed=8)
    layer, bottom, top = forward_layer(swl_text(), [x, lab])
    with pytest.raises(LayerError, match="cannot backpropagate to label inputs"):
        layer.backward(top, [True, True], bottom)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    with pytest.raises(LayerError, match="number of labels must match"):
        setup_layer(layer_param(swl_text()), [x, np.zeros((4, 2))])
    with pytest.raises(LayerError, match="first dimension"):
        setup_layer(layer_param(swl_text()), [x, np.zeros(3)])
    bad = lab.copy()
    bad[0] = 5
    with pytest.raises(LayerError, match="out of range"):
        forward_layer(swl_text(), [x, bad])


# --- EuclideanLoss -------------------------------------------------------------------------
@pytest.mark.parametrize("shapes", [((4, 3), (4, 3)), ((2, 3, 2, 2), (2, 12))])
def test_euclidean_loss(shapes):
    r = np.random.RandomState(9)
    a, b = r.standard_normal(shapes[0]), r.standard_normal(shapes[1])
    _, _, top = forward_layer('type: "EuclideanLoss"', [a, b])
    want = sum((a.ravel()[i] - b.ravel()[i]) ** 2 for i in range(a.size)) / (2 * a.shape[0])
    np.testing.assert_allclose(float(top[0].data), want, rtol=1e-12)
    check_gradients('type: "EuclideanLoss"', [a, b])


def test_euclidean_loss_gradient_signs_and_errors():
    a, b = np.array([[1.0, 2.0]]), np.array([[0.5, 3.0]])
    layer, bottom, top = forward_layer('type: "EuclideanLoss"', [a, b])
    top[0].diff[...] = 2.0
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[0].diff, [[1.0, -2.0]])
    np.testing.assert_allclose(bottom[1].diff, [[-1.0, 2.0]])
    assert layer.allow_force_backward(1)
    with pytest.raises(LayerError, match="same dimension"):
        setup_layer(layer_param('type: "EuclideanLoss"'), [np.ones((2, 3)), np.ones((2, 4))])


# --- SigmoidCrossEntropyLoss ---------------------------------------------------------------
def sce_reference(x, t, ignore=None, mode="BATCH_SIZE"):
    total, valid = 0.0, 0
    for xi, ti in zip(x.ravel(), t.ravel()):
        if ignore is not None and int(ti) == ignore:
            continue
        s = 1.0 / (1.0 + np.exp(-xi))
        total -= ti * np.log(s) + (1 - ti) * np.log(1 - s)
        valid += 1
    outer, inner = x.shape[0], x.size // x.shape[0]
    norm = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return total / max(norm, 1)


def sce_text(ignore=None, normalization=None, normalize=None):
    return 'type: "SigmoidCrossEntropyLoss"' + loss_param_text(ignore, normalization, normalize)


def sce_data(shape=(3, 2, 2, 2), seed=10, ignore=None):
    r = np.random.RandomState(seed)
    x = r.standard_normal(shape) * 2
    t = r.uniform(0, 1, shape)
    t.flat[::2] = np.round(t.flat[::2])
    if ignore is not None:
        t.flat[1::5] = ignore
    return x, t


@pytest.mark.parametrize("mode", [None, "FULL", "VALID", "BATCH_SIZE", "NONE"])
@pytest.mark.parametrize("ignore", [None, -1])
def test_sigmoid_cross_entropy(mode, ignore):
    x, t = sce_data(ignore=ignore)
    text = sce_text(ignore=ignore, normalization=mode)
    _, _, top = forward_layer(text, [x, t])
    ref = sce_reference(x, t, ignore, mode or "BATCH_SIZE")   # Caffe's default: BATCH_SIZE
    np.testing.assert_allclose(float(top[0].data), ref, rtol=1e-11)
    check_gradients(text, [x, t], check_bottom=[0])


def test_sigmoid_cross_entropy_legacy_normalize():
    x, t = sce_data(ignore=-1)
    _, _, top = forward_layer(sce_text(ignore=-1, normalize=True), [x, t])
    np.testing.assert_allclose(float(top[0].data), sce_reference(x, t, -1, "VALID"), rtol=1e-11)
    _, _, top = forward_layer(sce_text(ignore=-1, normalize=False), [x, t])
    np.testing.assert_allclose(float(top[0].data), sce_reference(x, t, -1, "BATCH_SIZE"),
                               rtol=1e-11)


def test_sigmoid_cross_entropy_is_stable_and_checks():
    x = np.array([[-200.0, 200.0, -200.0, 200.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        layer, bottom, top = forward_layer(sce_text(), [x, t])
    np.testing.assert_allclose(float(top[0].data), 400.0, rtol=1e-12)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, [[0.0, 0.0, -1.0, 1.0]], atol=1e-15)
    with pytest.raises(LayerError, match="cannot backpropagate to label inputs"):
        layer.backward(top, [True, True], bottom)
    with pytest.raises(LayerError, match="same count"):
        setup_layer(layer_param(sce_text()), [np.ones((2, 3)), np.ones((2, 4))])


# --- Accuracy ------------------------------------------------------------------------------
HAND_SCORES = np.array([[0.1, 0.5, 0.4],     # label 1: 0 better -> top1, top2
                        [0.3, 0.3, 0.2],     # label 0: tie with class 1 counts as correct
                        [0.2, 0.5, 0.3],     # label 0: 2 better -> wrong for top1 and top2
                        [0.6, 0.1, 0.3],     # label 2: 1 better -> top2 only
                        [0.5, 0.5, 0.5]])    # label 2: all tied -> correct
HAND_LABELS = np.array([1.0, 0.0, 0.0, 2.0, 2.0])


@pytest.mark.parametrize("top_k,acc,per_class", [
    (1, 3 / 5, [1 / 2, 1.0, 1 / 2]),
    (2, 4 / 5, [1 / 2, 1.0, 1.0]),
    (3, 1.0, [1.0, 1.0, 1.0]),
])
def test_accuracy_hand_counts(top_k, acc, per_class):
    text = f'type: "Accuracy" accuracy_param {{ top_k: {top_k} }}'
    _, _, top = forward_layer(text, [HAND_SCORES, HAND_LABELS], num_top=2)
    assert tuple(top[0].shape) == ()
    assert tuple(top[1].shape) == (3,)
    np.testing.assert_allclose(float(top[0].data), acc, rtol=1e-12)
    np.testing.assert_allclose(top[1].data, per_class, rtol=1e-12)


def test_accuracy_ignore_label_and_absent_class():
    text = 'type: "Accuracy" accuracy_param { ignore_label: 0 }'
    _, _, top = forward_layer(text, [HAND_SCORES, HAND_LABELS], num_top=2)
    np.testing.assert_allclose(float(top[0].data), 2 / 3, rtol=1e-12)   # rows 0, 3, 4
    np.testing.assert_allclose(top[1].data, [0.0, 1.0, 0.5], rtol=1e-12)
    # everything ignored: 0, not a division by zero
    _, _, top = forward_layer(text, [HAND_SCORES, np.zeros(5)], num_top=2)
    assert float(top[0].data) == 0.0
    np.testing.assert_array_equal(top[1].data, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("shape,axis,top_k", [((2, 4, 3, 2), 1, 1), ((2, 4, 3, 2), 1, 2),
                                              ((3, 2, 5), -1, 2), ((5, 2, 3), 0, 3)])
def test_accuracy_other_axes_against_loops(shape, axis, top_k):
    r = np.random.RandomState(11)
    x = r.randint(0, 4, shape).astype(np.float64)     # small integers: many ties
    c = shape[axis]
    lshape = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    lab = r.randint(0, c, lshape).astype(np.float64)
    xm = np.moveaxis(x, axis, -1)
    hits, n = 0, 0
    per_hit, per_n = np.zeros(c), np.zeros(c)
    for idx in np.ndindex(*lshape):
        lv = int(lab[idx])
        better = sum(1 for k in range(c) if xm[idx + (k,)] > xm[idx + (lv,)])
        ok = better < top_k
        hits += ok
        n += 1
        per_hit[lv] += ok
        per_n[lv] += 1
    text = f'type: "Accuracy" accuracy_param {{ top_k: {top_k} axis: {axis} }}'
    _, _, top = forward_layer(text, [x, lab], num_top=2)
    np.testing.assert_allclose(float(top[0].data), hits / n, rtol=1e-12)
    want = np.where(per_n > 0, per_hit / np.maximum(per_n, 1), 0)
    np.testing.assert_allclose(top[1].data, want, rtol=1e-12)


def test_accuracy_errors():
    layer, bottom, top = forward_layer('type: "Accuracy"', [HAND_SCORES, HAND_LABELS])
    assert layer.loss_weights == [0.0]
    assert not layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    layer.backward(top, [False, False], bottom)
    with pytest.raises(LayerError, match="no backward"):
        layer.backward(top, [True, False], bottom)
    with pytest.raises(LayerError, match="top_k"):
        setup_layer(layer_param('type: "Accuracy" accuracy_param { top_k: 4 }'),
                    [HAND_SCORES, HAND_LABELS])
    with pytest.raises(LayerError, match="number of labels must match"):
        setup_layer(layer_param('type: "Accuracy"'), [np.ones((4, 3)), np.ones((4, 1, 1, 2))])

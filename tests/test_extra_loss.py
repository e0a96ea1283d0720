"""MultinomialLogisticLoss, HingeLoss, InfogainLoss and ContrastiveLoss: loss values against
loops written here, gradients by finite differences (and against Caffe's closed form where
Caffe's gradient is deliberately approximate), normalisation and error checks."""
import math

import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.errors import LayerError
from minicaffe.io import write_binary
from minicaffe.io.protobinary import array_to_blobproto


def forward(text, arrays, num_top=1):
    layer, bottom, top = setup_layer(layer_param(text), arrays, num_top=num_top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


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
    _, _, top = forward('type: "MultinomialLogisticLoss"', [p, lab.reshape(label_shape)])
    expect = -sum(math.log(p[i, int(lab[i])]) for i in range(5)) / 5
    assert top[0].shape == ()
    assert abs(float(top[0].data) - expect) < 1e-12


def test_mll_clamps_zero_probability():
    p = np.array([[0.0, 1.0], [0.5, 0.5]])
    layer, bottom, top = forward('type: "MultinomialLogisticLoss"', [p, np.array([0.0, 1.0])])
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
        forward('type: "MultinomialLogisticLoss"', [p, np.array([0.0, 4.0, 1.0])])
    with pytest.raises(LayerError, match="label"):
        forward('type: "MultinomialLogisticLoss"', [p, np.zeros((3, 2))])
    with pytest.raises(LayerError, match="first dimension"):
        forward('type: "MultinomialLogisticLoss"', [p, np.zeros(4)])
    layer, bottom, top = forward('type: "MultinomialLogisticLoss"', [p, np.zeros(3)])
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
    _, _, top = forward(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [x, lab])
    assert abs(float(top[0].data) - hinge_ref(x, lab, norm == "L2")) < 1e-12


def test_hinge_default_is_l1():
    x = hinge_input((4, 3), 6)
    lab = np.array([0.0, 2.0, 1.0, 1.0])
    _, _, top = forward('type: "HingeLoss"', [x, lab])
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
        forward('type: "HingeLoss"', [np.zeros((2, 3)), np.array([0.0, 3.0])])
    with pytest.raises(LayerError, match="one label per item"):
        forward('type: "HingeLoss"', [np.zeros((2, 3)), np.zeros((2, 2))])


# --- InfogainLoss --------------------------------------------------------------------------
def softmax_ref(x, axis):
    x = np.moveaxis(x, axis, -1)
    out = np.empty_like(x)
    for pos in np.ndindex(*x.shape[:-1]):
        e = np.exp(x[pos] - x[pos].max())
        out[pos] = e / e.sum()
    return np.moveaxis(out, -1, axis)


def infogain_ref(x, lab, H, axis=1, ignore=None, normalization="VALID"):
    p = np.moveaxis(softmax_ref(x, axis), axis, -1)     # (..., C)
    positions = list(np.ndindex(*p.shape[:-1]))
    labels = lab.reshape(-1)
    loss, count = 0.0, 0
    for pos, y in zip(positions, labels):
        y = int(y)
        if ignore is not None and y == ignore:
            continue
        for l in range(p.shape[-1]):
            loss -= H[y, l] * math.log(max(p[pos][l], 1e-20))
        count += 1
    outer = int(np.prod(x.shape[:axis]))
    full = len(positions)
    norm = {"VALID": count, "FULL": full, "BATCH_SIZE": outer, "NONE": 1}[normalization]
    return loss / max(norm, 1)


def h_matrix(c, seed):
    return rs(seed).uniform(0, 1, (c, c)) + np.eye(c)


@pytest.fixture
def h_file(tmp_path):
    def make(H):
        path = str(tmp_path / "H.binaryproto")
        write_binary(array_to_blobproto(H.reshape((1, 1) + H.shape)), path)
        return path
    return make


def test_infogain_from_source(h_file):
    H = h_matrix(4, 9)
    x = rs(10).standard_normal((5, 4)) * 2
    lab = rs(11).randint(0, 4, 5).astype(np.float64)
    text = f'type: "InfogainLoss" infogain_loss_param {{ source: "{h_file(H)}" }}'
    _, _, top = forward(text, [x, lab])
    # H went through float32 in the binaryproto.
    expect = infogain_ref(x, lab, H.astype(np.float32).astype(np.float64))
    assert abs(float(top[0].data) - expect) < 1e-9


def test_infogain_identity_h_is_softmax_loss():
    x = rs(12).standard_normal((4, 3))
    lab = np.array([0.0, 2.0, 1.0, 2.0])
    _, _, top = forward('type: "InfogainLoss"', [x, lab, np.eye(3)])
    p = softmax_ref(x, 1)
    expect = -np.mean([math.log(p[i, int(lab[i])]) for i in range(4)])
    assert abs(float(top[0].data) - expect) < 1e-12


@pytest.mark.parametrize("shape,axis", [((2, 3, 2, 2), 1), ((2, 2, 4), -1), ((3, 2, 3), 2)])
@pytest.mark.parametrize("normalization", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_infogain_axis_and_normalization(shape, axis, normalization):
    ax = axis % len(shape)
    c = shape[ax]
    x = rs(13).standard_normal(shape)
    lab_shape = shape[:ax] + shape[ax + 1:]
    lab = rs(14).randint(0, c, lab_shape).astype(np.float64)
    lab.flat[1] = -1                    # ignored
    H = h_matrix(c, 15)
    text = (f'type: "InfogainLoss" infogain_loss_param {{ axis: {axis} }} '
            f'loss_param {{ ignore_label: -1 normalization: {normalization} }}')
    _, _, top = forward(text, [x, lab, H])
    expect = infogain_ref(x, lab, H, ax, ignore=-1, normalization=normalization)
    assert abs(float(top[0].data) - expect) < 1e-12


def test_infogain_prob_top():
    x = rs(16).standard_normal((3, 4, 2))
    lab = rs(17).randint(0, 4, (3, 2)).astype(np.float64)
    _, _, top = forward('type: "InfogainLoss"', [x, lab, h_matrix(4, 18)], num_top=2)
    assert top[1].shape == x.shape
    np.testing.assert_allclose(top[1].data, softmax_ref(x, 1), rtol=1e-12)


@pytest.mark.parametrize("shape,axis,ignore", [((4, 3), 1, None), ((2, 3, 2, 2), 1, 0),
                                               ((2, 2, 3), -1, None), ((3, 4, 2), 1, 2)])
def test_infogain_gradients(shape, axis, ignore):
    ax = axis % len(shape)
    c = shape[ax]
    x = rs(19).standard_normal(shape)
    lab = rs(20).randint(0, c, shape[:ax] + shape[ax + 1:]).astype(np.float64)
    text = f'type: "InfogainLoss" infogain_loss_param {{ axis: {axis} }}'
    if ignore is not None:
        text += f' loss_param {{ ignore_label: {ignore} }}'
    check_gradients(text, [x, lab, h_matrix(c, 21)], check_bottom=[0])


def test_infogain_gradients_from_source(h_file):
    H = h_matrix(3, 22)
    text = f'type: "InfogainLoss" infogain_loss_param {{ source: "{h_file(H)}" }}'
    check_gradients(text, [rs(23).standard_normal((4, 3)), np.array([0.0, 1.0, 2.0, 1.0])],
                    check_bottom=[0])


def test_infogain_errors(h_file):
    x, lab = np.zeros((2, 3)), np.zeros(2)
    with pytest.raises(LayerError, match="source"):
        forward('type: "InfogainLoss"', [x, lab])
    with pytest.raises(LayerError, match="3x3"):
        forward('type: "InfogainLoss"', [x, lab, np.eye(2)])
    with pytest.raises(LayerError, match="3x3"):
        forward(f'type: "InfogainLoss" infogain_loss_param {{ source: "{h_file(np.eye(4))}" }}',
                [x, lab])
    with pytest.raises(LayerError, match="normalize"):
        forward('type: "InfogainLoss" loss_param { normalize: true }', [x, lab, np.eye(3)])
    with pytest.raises(LayerError, match="out of range"):
        forward('type: "InfogainLoss"', [x, np.array([0.0, 3.0]), np.eye(3)])
    with pytest.raises(LayerError, match="number of labels"):
        forward('type: "InfogainLoss"', [np.zeros((2, 3, 2)), lab, np.eye(3)])
    layer, bottom, top = forward('type: "InfogainLoss"', [x, lab, np.eye(3)])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(2)
    with pytest.raises(LayerError, match="infogain matrix"):
        layer.backward(top, [True, False, True], bottom)


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
    _, _, top = forward(text, [a.reshape(fshape), b.reshape(fshape), y.reshape(yshape)])
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
    layer, bottom, top = forward(f'type: "ContrastiveLoss" contrastive_loss_param '
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
    _, _, top = forward('type: "ContrastiveLoss"', [a, b, y])
    assert abs(float(top[0].data) - contrastive_ref(a, b, np.array([0, 1]), 1.0, False)) < 1e-12


def test_contrastive_errors():
    a, b, y = pairs(4, 3, 30)
    with pytest.raises(LayerError, match="feature"):
        forward('type: "ContrastiveLoss"', [a, np.zeros((4, 2)), y])
    with pytest.raises(LayerError, match="feature"):
        forward('type: "ContrastiveLoss"', [a.reshape(4, 1, 3), b.reshape(4, 1, 3), y])
    with pytest.raises(LayerError, match="similarity"):
        forward('type: "ContrastiveLoss"', [a, b, np.zeros((4, 2))])
    with pytest.raises(LayerError, match="similarity"):
        forward('type: "ContrastiveLoss"', [a, b, np.zeros(3)])
    with pytest.raises(LayerError, match="3 bottom|exactly 3"):
        forward('type: "ContrastiveLoss"', [a, b])
    layer, bottom, top = forward('type: "ContrastiveLoss"', [a, b, y])
    assert layer.allow_force_backward(1) and not layer.allow_force_backward(2)


# --- a prototxt net using the losses (float32, through Net) ---------------------------------
def test_extra_losses_in_a_net(tmp_path, h_file):
    import minicaffe as caffe
    H = h_matrix(3, 32).astype(np.float32)
    text = f"""
name: "losses"
force_backward: true
layer {{ name: "in" type: "Input" top: "x" top: "label" top: "f1" top: "f2" top: "sim"
        input_param {{ shape {{ dim: 4 dim: 3 }} shape {{ dim: 4 }} shape {{ dim: 4 dim: 2 }}
                      shape {{ dim: 4 dim: 2 }} shape {{ dim: 4 }} }} }}
layer {{ name: "infogain" type: "InfogainLoss" bottom: "x" bottom: "label" top: "info"
        infogain_loss_param {{ source: "{h_file(H)}" }} }}
layer {{ name: "hinge" type: "HingeLoss" bottom: "x" bottom: "label" top: "hinge"
        loss_weight: 0.5 hinge_loss_param {{ norm: L2 }} }}
layer {{ name: "contrast" type: "ContrastiveLoss" bottom: "f1" bottom: "f2" bottom: "sim"
        top: "contrast" contrastive_loss_param {{ margin: 2 legacy_version: true }} }}
layer {{ name: "sm" type: "Softmax" bottom: "x" top: "prob" }}
layer {{ name: "mll" type: "MultinomialLogisticLoss" bottom: "prob" bottom: "label"
        top: "mll" }}
"""
    path = tmp_path / "losses.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TRAIN)
    x = rs(33).standard_normal((4, 3)).astype(np.float32)
    label = np.array([0, 2, 1, 2], dtype=np.float32)
    f1, f2, sim = *pairs(4, 2, 34)[:2], np.array([1, 0, 0, 1], dtype=np.float32)
    out = net.forward(x=x, label=label, f1=f1, f2=f2, sim=sim)
    x64 = x.astype(np.float64)
    assert abs(float(out["info"]) - infogain_ref(x64, label, H.astype(np.float64))) < 1e-5
    assert abs(float(out["hinge"]) - hinge_ref(x64, label, True)) < 1e-5
    f1_32, f2_32 = f1.astype(np.float32), f2.astype(np.float32)
    assert abs(float(out["contrast"]) - contrastive_ref(f1_32.astype(np.float64),
                                                        f2_32.astype(np.float64), sim, 2.0,
                                                        True)) < 1e-5
    p = softmax_ref(x64, 1)
    expect_mll = -np.mean([math.log(p[i, int(label[i])]) for i in range(4)])
    assert abs(float(out["mll"]) - expect_mll) < 1e-5
    diffs = net.backward()
    assert diffs["x"].shape == (4, 3) and np.abs(diffs["x"]).sum() > 0
    assert np.abs(diffs["f1"]).sum() > 0
    np.testing.assert_allclose(diffs["f1"], -diffs["f2"], rtol=1e-6)
    np.testing.assert_array_equal(diffs["label"], 0)

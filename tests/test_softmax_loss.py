"""InfogainLoss: loss values against loops written here, gradients by finite differences,
normalisation and error checks; a prototxt net using the losses of several modules."""
import math

import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer
from minicaffe.errors import LayerError
from minicaffe.io import write_binary
from minicaffe.io.protobinary import array_to_blobproto
from test_item_label_loss import hinge_ref
from test_loss import softmax_ref
from test_target_loss import contrastive_ref, pairs


def rs(seed):
    return np.random.RandomState(seed)


# --- InfogainLoss --------------------------------------------------------------------------


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
    _, _, top = forward_layer(text, [x, lab])
    # H went through float32 in the binaryproto.
    expect = infogain_ref(x, lab, H.astype(np.float32).astype(np.float64))
    assert abs(float(top[0].data) - expect) < 1e-9


def test_infogain_identity_h_is_softmax_loss():
    x = rs(12).standard_normal((4, 3))
    lab = np.array([0.0, 2.0, 1.0, 2.0])
    _, _, top = forward_layer('type: "InfogainLoss"', [x, lab, np.eye(3)])
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
    _, _, top = forward_layer(text, [x, lab, H])
    expect = infogain_ref(x, lab, H, ax, ignore=-1, normalization=normalization)
    assert abs(float(top[0].data) - expect) < 1e-12


def test_infogain_prob_top():
    x = rs(16).standard_normal((3, 4, 2))
    lab = rs(17).randint(0, 4, (3, 2)).astype(np.float64)
    _, _, top = forward_layer('type: "InfogainLoss"', [x, lab, h_matrix(4, 18)], num_top=2)
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
        forward_layer('type: "InfogainLoss"', [x, lab])
    with pytest.raises(LayerError, match="3x3"):
        forward_layer('type: "InfogainLoss"', [x, lab, np.eye(2)])
    with pytest.raises(LayerError, match="3x3"):
        forward_layer(f'type: "InfogainLoss" infogain_loss_param {{ source: "{h_file(np.eye(4))}" }}',
                [x, lab])
    with pytest.raises(LayerError, match="normalize"):
        forward_layer('type: "InfogainLoss" loss_param { normalize: true }', [x, lab, np.eye(3)])
    with pytest.raises(LayerError, match="out of range"):
        forward_layer('type: "InfogainLoss"', [x, np.array([0.0, 3.0]), np.eye(3)])
    with pytest.raises(LayerError, match="number of labels"):
        forward_layer('type: "InfogainLoss"', [np.zeros((2, 3, 2)), lab, np.eye(3)])
    layer, bottom, top = forward_layer('type: "InfogainLoss"', [x, lab, np.eye(3)])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(2)
    with pytest.raises(LayerError, match="infogain matrix"):
        layer.backward(top, [True, False, True], bottom)


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

"""Elementwise layers: forward against closed forms in float64, gradients by finite
differences (in place and not), PReLU's parameter, Dropout's mask and phases."""
import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe import backend
from minicaffe.errors import LayerError
from minicaffe.proto import caffe_pb2

SHAPE = (2, 3, 4, 5)


def away_from_zero(shape=SHAPE, seed=0, gap=0.05):
    """Random values with |x| > gap (no kinks for ReLU/AbsVal/PReLU)."""
    r = np.random.RandomState(seed)
    x = r.standard_normal(shape)
    return np.sign(x) * (gap + np.abs(x))


def positive(shape=SHAPE, seed=1, lo=0.3, hi=2.0):
    return np.random.RandomState(seed).uniform(lo, hi, shape)


def forward(text, arrays, in_place=False, phase=caffe_pb2.TRAIN):
    layer, bottom, top = setup_layer(layer_param(text, phase), arrays, in_place=in_place)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def f32(v):
    """A prototxt float as the layer sees it (proto float fields are single precision)."""
    return float(np.float32(v))


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# (prototxt, reference forward, input) -------------------------------------------------------
CASES = {
    "relu": ('type: "ReLU"', lambda x: np.where(x > 0, x, 0.0), away_from_zero),
    "leaky_relu": ('type: "ReLU" relu_param { negative_slope: 0.1 }',
                   lambda x: np.where(x > 0, x, f32(0.1) * x), away_from_zero),
    "sigmoid": ('type: "Sigmoid"', sig, away_from_zero),
    "tanh": ('type: "TanH"', np.tanh, away_from_zero),
    "elu": ('type: "ELU"', lambda x: np.where(x > 0, x, np.exp(x) - 1), away_from_zero),
    "elu_alpha": ('type: "ELU" elu_param { alpha: 0.4 }',
                  lambda x: np.where(x > 0, x, f32(0.4) * (np.exp(x) - 1)), away_from_zero),
    "power_square": ('type: "Power" power_param { power: 2 scale: 1.5 shift: 0.3 }',
                     lambda x: (f32(0.3) + 1.5 * x) ** 2, away_from_zero),
    "power_cube": ('type: "Power" power_param { power: 3 scale: -0.5 shift: 0.2 }',
                   lambda x: (f32(0.2) - 0.5 * x) ** 3, away_from_zero),
    "power_sqrt": ('type: "Power" power_param { power: 0.5 scale: 2 shift: 1 }',
                   lambda x: np.sqrt(1 + 2 * x), positive),
    "power_linear": ('type: "Power" power_param { power: 1 scale: 3 shift: -1 }',
                     lambda x: 3 * x - 1, away_from_zero),
    "power_zero": ('type: "Power" power_param { power: 0 scale: 3 shift: 2 }',
                   lambda x: np.ones_like(x), away_from_zero),
    "power_const": ('type: "Power" power_param { power: 3 scale: 0 shift: 2 }',
                    lambda x: np.full_like(x, 8.0), away_from_zero),
    "exp": ('type: "Exp"', np.exp, away_from_zero),
    "exp_base2": ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }',
                  lambda x: 2.0 ** (1 + 0.5 * x), away_from_zero),
    "log": ('type: "Log"', np.log, positive),
    "log_base10": ('type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }',
                   lambda x: np.log10(0.5 + 2 * x), positive),
    "absval": ('type: "AbsVal"', np.abs, away_from_zero),
    "bnll": ('type: "BNLL"', lambda x: np.log(1 + np.exp(x)), away_from_zero),
    "clip": ('type: "Clip" clip_param { min: -0.5 max: 0.7 }',
             lambda x: np.minimum(np.maximum(x, -0.5), f32(0.7)),
             lambda: np.random.RandomState(3).choice([-1, 1], SHAPE) *
             np.random.RandomState(4).choice([0.1, 0.3, 0.9, 1.4], SHAPE) +
             np.random.RandomState(5).uniform(-0.03, 0.03, SHAPE)),
    "swish": ('type: "Swish"', lambda x: x * sig(x), away_from_zero),
    "swish_beta": ('type: "Swish" swish_param { beta: 1.5 }',
                   lambda x: x * sig(1.5 * x), away_from_zero),
}
IN_PLACE_OK = [k for k in CASES if k != "absval"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_closed_form(name):
    text, ref, gen = CASES[name]
    x = gen()
    _, _, top = forward(text, [x])
    np.testing.assert_allclose(top[0].data, ref(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", IN_PLACE_OK)
def test_forward_in_place_matches_closed_form(name):
    text, ref, gen = CASES[name]
    x = gen()
    _, bottom, top = forward(text, [x], in_place=True)
    assert top[0] is bottom[0]
    np.testing.assert_allclose(top[0].data, ref(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients(name):
    text, _, gen = CASES[name]
    check_gradients(text, [gen()])


@pytest.mark.parametrize("name", IN_PLACE_OK)
def test_gradients_in_place(name):
    text, _, gen = CASES[name]
    check_gradients(text, [gen()], in_place=True)


def test_float32_forward():
    x = away_from_zero().astype(np.float32)
    layer, bottom, top = setup_layer(layer_param('type: "Sigmoid"'), [x], dtype=np.float32)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, sig(x.astype(np.float64)), rtol=1e-6)


def test_sigmoid_and_bnll_do_not_overflow():
    x = np.array([[-800.0, -40.0, 0.0, 40.0, 800.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        _, _, top = forward('type: "Sigmoid"', [x])
        # tanh form (as Caffe): absolute accuracy near 0, no overflow warnings
        np.testing.assert_allclose(top[0].data, [[0, sig(-40.0), 0.5, sig(40.0), 1]],
                                   rtol=1e-12, atol=1e-15)
        _, _, top = forward('type: "BNLL"', [x])
        np.testing.assert_allclose(top[0].data, [[0, np.log1p(np.exp(-40.0)), np.log(2),
                                                 40 + np.log1p(np.exp(-40.0)), 800]],
                                   rtol=1e-12, atol=1e-300)


def test_relu_gradient_is_masked():
    x = np.array([[-2.0, -0.5, 0.5, 3.0]])
    layer, bottom, top = forward('type: "ReLU" relu_param { negative_slope: 0.25 }', [x])
    top[0].diff[...] = [[1.0, 2.0, 3.0, 4.0]]
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, [[0.25, 0.5, 3.0, 4.0]])


def test_absval_refuses_in_place():
    with pytest.raises(LayerError, match="in-place"):
        setup_layer(layer_param('type: "AbsVal"'), [away_from_zero()], in_place=True)


@pytest.mark.parametrize("text", ['type: "Exp" exp_param { base: -2 }',
                                  'type: "Log" log_param { base: 0 }',
                                  'type: "Log" log_param { base: 1 }'])
def test_bad_base_fails(text):
    with pytest.raises(LayerError, match="base"):
        setup_layer(layer_param(text), [positive()])


# --- Threshold -----------------------------------------------------------------------------
@pytest.mark.parametrize("in_place", [False, True])
def test_threshold_forward(in_place):
    x = np.array([[-1.0, 0.2, 0.3, 0.31, 5.0]])
    layer, bottom, top = forward('type: "Threshold" threshold_param { threshold: 0.3 }', [x],
                                 in_place=in_place)
    np.testing.assert_array_equal(top[0].data, [[0, 0, 0, 1, 1]])


def test_threshold_has_no_backward():
    x = np.array([[-1.0, 0.5]])
    layer, bottom, top = forward('type: "Threshold"', [x])
    layer.backward(top, [False], bottom)            # nothing asked: fine
    with pytest.raises(LayerError, match="no backward"):
        layer.backward(top, [True], bottom)


# --- PReLU ---------------------------------------------------------------------------------
def prelu_reference(x, slope, shared):
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        a = slope.flat[0] if shared else slope[idx[1]]
        out[idx] = x[idx] if x[idx] > 0 else a * x[idx]
    return out


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_blob_shape_and_default_filler(shared):
    text = 'type: "PReLU"' + (' prelu_param { channel_shared: true }' if shared else '')
    layer, _, _ = setup_layer(layer_param(text), [away_from_zero()])
    assert len(layer.blobs) == 1
    assert tuple(layer.blobs[0].shape) == (() if shared else (3,))
    np.testing.assert_array_equal(layer.blobs[0].data, np.full(layer.blobs[0].shape, 0.25))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_prelu_forward_and_gradients(shared, in_place):
    text = ('type: "PReLU" prelu_param { channel_shared: %s '
            'filler { type: "uniform" min: -0.5 max: 0.9 } }' % ("true" if shared else "false"))
    x = away_from_zero(seed=7)
    layer, bottom, top = forward(text, [x], in_place=in_place)
    slope = np.array(layer.blobs[0].data, dtype=np.float64)
    if not shared:
        assert len(np.unique(slope)) == 3      # the filler really ran per channel
    np.testing.assert_allclose(top[0].data, prelu_reference(x, slope, shared), rtol=1e-12)
    check_gradients(text, [x], in_place=in_place)


def test_prelu_works_on_2d_and_5d_bottoms():
    text = 'type: "PReLU" prelu_param { filler { type: "uniform" min: 0.1 max: 0.6 } }'
    check_gradients(text, [away_from_zero((4, 3), seed=2)])
    check_gradients(text, [away_from_zero((2, 3, 2, 2, 2), seed=3)], in_place=True)


def test_prelu_slope_gradient_accumulates():
    x = np.array([[[-1.0, 2.0], [-3.0, -0.5]]])          # N=1, C=2, 2 values per channel
    layer, bottom, top = forward('type: "PReLU"', [x])
    top[0].diff[...] = [[[2.0, 5.0], [1.0, 4.0]]]
    layer.blobs[0].diff[...] = [10.0, 20.0]
    layer.backward(top, [True], bottom)
    # dL/da_c = sum over x <= 0 of dy * x
    np.testing.assert_allclose(layer.blobs[0].diff, [10.0 + 2.0 * -1.0, 20.0 + (-3.0 - 2.0)])
    np.testing.assert_allclose(bottom[0].diff, [[[0.5, 5.0], [0.25, 1.0]]])


def test_prelu_rejects_inconsistent_blob_and_1d_bottom():
    p = layer_param('type: "PReLU"')
    b = p.blobs.add()
    b.shape.dim.append(4)
    b.data.extend([0.1] * 4)
    with pytest.raises(LayerError, match="slope"):
        setup_layer(p, [away_from_zero()])                 # 3 channels, blob of 4
    with pytest.raises(LayerError, match="2 axes"):
        setup_layer(layer_param('type: "PReLU"'), [np.ones(5)])


# --- Dropout -------------------------------------------------------------------------------
DROP = 'type: "Dropout" dropout_param { dropout_ratio: 0.3 }'


def test_dropout_train_scaling_and_rate():
    x = positive((40, 50), seed=4)
    layer, bottom, top = forward(DROP, [x])
    y = top[0].data
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - f32(0.3)), rtol=1e-12)
    frac = kept.mean()
    assert 0.65 < frac < 0.75, frac
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, kept / (1 - f32(0.3)), rtol=1e-12)


def test_dropout_default_ratio_is_half():
    x = positive((40, 50), seed=5)
    _, _, top = forward('type: "Dropout"', [x])
    kept = top[0].data != 0
    assert 0.45 < kept.mean() < 0.55
    np.testing.assert_allclose(top[0].data[kept], 2 * x[kept], rtol=1e-12)


def test_dropout_mask_reproducible_with_seed():
    x = positive((10, 20), seed=6)
    backend.set_random_seed(42)
    _, _, t1 = forward(DROP, [x])
    backend.set_random_seed(42)
    _, _, t2 = forward(DROP, [x])
    np.testing.assert_array_equal(t1[0].data, t2[0].data)
    backend.set_random_seed(43)
    _, _, t3 = forward(DROP, [x])
    assert not np.array_equal(t1[0].data, t3[0].data)


def test_dropout_in_place_train_matches_out_of_place():
    x = positive((10, 20), seed=6)
    backend.set_random_seed(7)
    _, _, t1 = forward(DROP, [x])
    backend.set_random_seed(7)
    layer, bottom, t2 = forward(DROP, [x], in_place=True)
    np.testing.assert_array_equal(t1[0].data, t2[0].data)
    t2[0].diff[...] = 3.0
    layer.backward(t2, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, 3.0 * (t1[0].data != 0) / (1 - f32(0.3)))


@pytest.mark.parametrize("in_place", [False, True])
def test_dropout_test_phase_is_identity(in_place):
    x = positive((4, 5), seed=8)
    layer, bottom, top = forward(DROP, [x], in_place=in_place, phase=caffe_pb2.TEST)
    np.testing.assert_array_equal(top[0].data, x)
    top[0].diff[...] = np.arange(20.0).reshape(4, 5)
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.arange(20.0).reshape(4, 5))


@pytest.mark.parametrize("in_place", [False, True])
def test_dropout_gradients(in_place):
    # check_gradients reseeds before every forward, so the mask is fixed
    check_gradients(DROP, [away_from_zero()], in_place=in_place)


def test_dropout_bad_ratio_fails():
    with pytest.raises(LayerError, match="dropout_ratio"):
        setup_layer(layer_param('type: "Dropout" dropout_param { dropout_ratio: 1 }'),
                    [positive()])

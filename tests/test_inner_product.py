"""InnerProduct: forward against explicit sums, axis/transpose/bias options, gradients, errors."""
import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer, layer_param, make_blobs, setup_layer
from minicaffe.blob import Blob
from minicaffe.errors import LayerError

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def ip_text(settings, fillers=FILLERS):
    return f'name: "fc" type: "InnerProduct" inner_product_param {{ {settings} {fillers} }}'


def naive_ip(x, w, b, axis, transpose):
    """y[m, n] = b[n] + sum_k x[m, k] w[n, k] with explicit loops over the flattened axes."""
    lead = x.shape[:axis]
    xm = x.reshape(int(np.prod(lead, dtype=int)), -1)
    wn = w.T if transpose else w
    y = np.zeros((xm.shape[0], wn.shape[0]))
    for m in range(xm.shape[0]):
        for n in range(wn.shape[0]):
            s = 0.0 if b is None else b[n]
            for k in range(xm.shape[1]):
                s += xm[m, k] * wn[n, k]
            y[m, n] = s
    return y.reshape(lead + (wn.shape[0],))


# settings, input shape, axis, transpose, top shape
CASES = {
    "axis1": ("num_output: 3", (2, 3, 2, 2), 1, False, (2, 3)),
    "axis2": ("num_output: 4 axis: 2", (2, 3, 2, 3), 2, False, (2, 3, 4)),
    "axis_minus1": ("num_output: 2 axis: -1", (3, 2, 5), 2, False, (3, 2, 2)),
    "transpose": ("num_output: 3 transpose: true", (2, 4, 3), 1, True, (2, 3)),
    "transpose_axis2": ("num_output: 2 transpose: true axis: 2", (2, 2, 3), 2, True, (2, 2, 2)),
    "axis0": ("num_output: 2 axis: 0", (3, 2), 0, False, (2,)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ip_forward_matches_explicit_sums(case):
    settings, shape, axis, transpose, top_shape = CASES[case]
    x = np.random.RandomState(0).standard_normal(shape)
    layer, bottom, top = setup_layer(layer_param(ip_text(settings)), [x])
    layer.forward(bottom, top)
    assert top[0].shape == top_shape
    k = int(np.prod(shape[axis:]))
    assert layer.blobs[0].shape == ((k, top_shape[-1]) if transpose else (top_shape[-1], k))
    want = naive_ip(x, layer.blobs[0].data, layer.blobs[1].data, axis, transpose)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ip_gradients(case):
    settings, shape = CASES[case][:2]
    check_gradients(ip_text(settings), [np.random.RandomState(1).standard_normal(shape)])


@pytest.mark.parametrize("transpose", ["false", "true"])
def test_ip_without_bias(transpose):
    text = ip_text(f"num_output: 3 bias_term: false transpose: {transpose}",
                   'weight_filler { type: "gaussian" }')
    x = np.random.RandomState(2).standard_normal((2, 5))
    layer = check_gradients(text, [x])
    assert len(layer.blobs) == 1
    bottom, top = make_blobs([x]), [Blob(dtype=np.float64)]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    want = naive_ip(x, layer.blobs[0].data, None, 1, transpose == "true")
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)


def test_ip_new_batch_size_is_fine_and_accumulates_param_diff():
    layer, _, _ = setup_layer(layer_param(ip_text("num_output: 2")), [np.zeros((4, 3))])
    x = np.random.RandomState(3).standard_normal((7, 3))
    bottom, top = make_blobs([x]), [Blob(dtype=np.float64)]
    layer.reshape(bottom, top)
    assert top[0].shape == (7, 2)
    layer.forward(bottom, top)
    top[0].diff[...] = 1.0
    for b in layer.blobs:
        b.diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[1].diff, 1.0 + 7.0)
    np.testing.assert_allclose(layer.blobs[0].diff, 1.0 + np.tile(x.sum(axis=0), (2, 1)))
    np.testing.assert_allclose(bottom[0].diff, np.tile(layer.blobs[0].data.sum(axis=0), (7, 1)))


def test_ip_changed_inner_dimension_names_layer_and_both_shapes():
    layer, _, _ = setup_layer(layer_param(ip_text("num_output: 2")), [np.zeros((4, 3, 2))])
    bottom, top = make_blobs([np.zeros((4, 5, 2))]), [Blob(dtype=np.float64)]
    with pytest.raises(LayerError, match=r"InnerProduct layer 'fc'.*\(4, 5, 2\).*\(2, 6\)"):
        layer.reshape(bottom, top)


def test_ip_bad_axis_and_num_output():
    with pytest.raises(LayerError, match="'fc'.*axis 3"):
        setup_layer(layer_param(ip_text("num_output: 2 axis: 3")), [np.zeros((4, 3))])
    with pytest.raises(LayerError, match="'fc'.*num_output"):
        setup_layer(layer_param(ip_text("")), [np.zeros((4, 3))])


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
    layer, _, top = forward_layer(embed_text(k, n, bias), [idx])
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
    layer, bottom, top = forward_layer(embed_text(3, 2), [idx])
    dy = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 0.5          # parameter gradients accumulate
    layer.blobs[1].diff[...] = 0
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, [[0.5, 0.5], [11.5, 22.5], [100.5, 200.5]])
    np.testing.assert_allclose(layer.blobs[1].diff, [111, 222])


def test_embed_errors():
    with pytest.raises(LayerError, match="out of range"):
        forward_layer(embed_text(4, 2), [np.array([0.0, 4.0])])
    with pytest.raises(LayerError, match="out of range"):
        forward_layer(embed_text(4, 2), [np.array([-1.0])])
    with pytest.raises(LayerError, match="not an integer"):
        forward_layer(embed_text(4, 2), [np.array([1.5])])
    with pytest.raises(LayerError, match="input_dim"):
        forward_layer('type: "Embed" embed_param { num_output: 2 }', [np.array([0.0])])
    with pytest.raises(LayerError, match="num_output"):
        forward_layer('type: "Embed" embed_param { input_dim: 2 }', [np.array([0.0])])
    layer, bottom, top = forward_layer(embed_text(4, 2), [np.array([1.0])])
    assert not layer.allow_force_backward(0)
    with pytest.raises(LayerError, match="backpropagate"):
        layer.backward(top, [True], bottom)

"""Scale and Bias: gradients for every axis / num_axes / two-bottom / bias_term / in-place
variant, forward against explicit broadcasting, filler defaults, errors, memory."""
import tracemalloc

import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.errors import LayerError, ShapeError


def rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


def expand(p, x_shape, axis, num_axes):
    """``p`` reshaped to broadcast against x, covering ``num_axes`` axes from ``axis``."""
    nd = len(x_shape)
    if num_axes == 0:
        return np.asarray(p).reshape((1,) * nd)
    axis = axis % nd
    end = nd if num_axes == -1 else axis + num_axes
    return np.asarray(p).reshape((1,) * axis + tuple(x_shape[axis:end]) + (1,) * (nd - end))


GAUSS = 'filler { type: "gaussian" std: 1 }'
GAUSS_B = 'bias_filler { type: "gaussian" std: 1 }'

# (x shape, axis, num_axes) for learned-parameter variants
ONE_BOTTOM = [
    ((2, 3, 4), 1, 1),
    ((2, 3, 2, 3), 1, 1),
    ((2, 3, 2, 3), 1, 2),
    ((2, 3, 2, 3), 0, -1),
    ((2, 3, 2, 3), 2, -1),
    ((2, 3, 2, 3), -1, 1),
    ((2, 3, 2, 3), -2, 1),
    ((2, 3, 2, 3), 1, 0),
    ((5, 4), 1, 1),
    ((5, 4), 0, 1),
    ((2, 2, 3, 2, 2), 1, 1),
    ((2, 2, 3, 2, 2), 2, 2),
    ((9, 2, 2, 3), 1, 1),       # enough rows to expand the vector
    ((3, 4, 1), 1, 1),
]


# ---------------------------------------------------------------------- Scale gradients
def with_and_without_bias_in_place(test):
    """Parametrise ``test`` over bias_term and in_place, both False and True."""
    test = pytest.mark.parametrize("in_place", [False, True])(test)
    return pytest.mark.parametrize("bias_term", [False, True])(test)


@pytest.mark.parametrize("shape,axis,num_axes", ONE_BOTTOM)
@with_and_without_bias_in_place
def test_scale_gradient_learned(shape, axis, num_axes, bias_term, in_place):
    text = (f'type: "Scale" scale_param {{ axis: {axis} num_axes: {num_axes} {GAUSS} '
            f'bias_term: {str(bias_term).lower()} {GAUSS_B} }}')
    layer = check_gradients(text, [rand(*shape, seed=1)], in_place=in_place, max_checks=60)
    assert len(layer.blobs) == (2 if bias_term else 1)


TWO_BOTTOM = [
    ((2, 3, 4), (3,), 1),
    ((2, 3, 2, 3), (3, 2), 1),
    ((2, 3, 2, 3), (2, 3), 0),
    ((2, 3, 2, 3), (3,), -1),
    ((2, 3, 2, 3), (), 1),          # a scalar second bottom
    ((2, 3, 2, 3), (2, 3, 2, 3), 0),  # elementwise
    ((10, 3, 2, 2), (3,), 1),
    ((5, 4), (5, 4), 0),
]


@pytest.mark.parametrize("shape,pshape,axis", TWO_BOTTOM)
@with_and_without_bias_in_place
def test_scale_gradient_two_bottoms(shape, pshape, axis, bias_term, in_place):
    text = (f'type: "Scale" scale_param {{ axis: {axis} bias_term: {str(bias_term).lower()} '
            f'{GAUSS_B} }}')
    layer = check_gradients(text, [rand(*shape, seed=2), rand(*pshape, seed=3)],
                            in_place=in_place, max_checks=60)
    assert len(layer.blobs) == (1 if bias_term else 0)
    if bias_term:
        assert tuple(layer.blobs[0].shape) == pshape


# ---------------------------------------------------------------------- Bias gradients
@pytest.mark.parametrize("shape,axis,num_axes", ONE_BOTTOM)
@pytest.mark.parametrize("in_place", [False, True])
def test_bias_gradient_learned(shape, axis, num_axes, in_place):
    text = f'type: "Bias" bias_param {{ axis: {axis} num_axes: {num_axes} {GAUSS} }}'
    check_gradients(text, [rand(*shape, seed=4)], in_place=in_place, max_checks=60)


@pytest.mark.parametrize("shape,pshape,axis", TWO_BOTTOM)
@pytest.mark.parametrize("in_place", [False, True])
def test_bias_gradient_two_bottoms(shape, pshape, axis, in_place):
    text = f'type: "Bias" bias_param {{ axis: {axis} }}'
    check_gradients(text, [rand(*shape, seed=5), rand(*pshape, seed=6)], in_place=in_place,
                    max_checks=60)


# ---------------------------------------------------------------------- forward
def _forward(text, arrays, in_place=False, dtype=np.float64):
    layer, bottom, top = setup_layer(layer_param(text), arrays, 1, in_place, dtype)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


@pytest.mark.parametrize("shape,axis,num_axes", ONE_BOTTOM)
def test_scale_and_bias_forward_learned(shape, axis, num_axes):
    x = rand(*shape, seed=7)
    text = (f'type: "Scale" scale_param {{ axis: {axis} num_axes: {num_axes} {GAUSS} '
            f'bias_term: true {GAUSS_B} }}')
    layer, _, top = _forward(text, [x])
    s, b = (np.array(bl.xdata) for bl in layer.blobs)
    want = x * expand(s, shape, axis, num_axes) + expand(b, shape, axis, num_axes)
    np.testing.assert_allclose(top[0].xdata, want, rtol=1e-13)
    layer, _, top = _forward(f'type: "Bias" bias_param {{ axis: {axis} num_axes: {num_axes} '
                             f'{GAUSS} }}', [x])
    b = np.array(layer.blobs[0].xdata)
    np.testing.assert_allclose(top[0].xdata, x + expand(b, shape, axis, num_axes), rtol=1e-13)


def test_scale_forward_by_loops():
    x = rand(3, 4, 2, 5, seed=8)
    s = rand(4, 2, seed=9)
    _, _, top = _forward('type: "Scale" scale_param { axis: 1 }', [x, s])
    want = np.empty_like(x)
    for n in range(3):
        for c in range(4):
            for h in range(2):
                for w in range(5):
                    want[n, c, h, w] = x[n, c, h, w] * s[c, h]
    np.testing.assert_allclose(top[0].xdata, want, rtol=1e-14)


@pytest.mark.parametrize("shape,pshape,axis", TWO_BOTTOM)
def test_bias_forward_two_bottoms(shape, pshape, axis):
    x, b = rand(*shape, seed=10), rand(*pshape, seed=11)
    _, _, top = _forward(f'type: "Bias" bias_param {{ axis: {axis} }}', [x, b])
    np.testing.assert_allclose(top[0].xdata, x + expand(b, shape, axis, len(pshape)),
                               rtol=1e-14)


def test_negative_axis_counts_from_end():
    x = rand(2, 3, 4, seed=12)
    s = rand(4, seed=13)
    _, _, top = _forward('type: "Scale" scale_param { axis: -1 }', [x, s])
    np.testing.assert_allclose(top[0].xdata, x * s, rtol=1e-14)


# ---------------------------------------------------------------------- fillers, shapes
def test_filler_defaults():
    x = rand(2, 3, 4, seed=14)
    layer, _, top = _forward('type: "Scale"', [x])
    np.testing.assert_array_equal(layer.blobs[0].xdata, np.ones(3))
    np.testing.assert_array_equal(top[0].xdata, x)
    layer, _, _ = _forward('type: "Scale" scale_param { bias_term: true }', [x])
    np.testing.assert_array_equal(layer.blobs[0].xdata, np.ones(3))
    np.testing.assert_array_equal(layer.blobs[1].xdata, np.zeros(3))
    layer, _, top = _forward('type: "Bias"', [x])
    np.testing.assert_array_equal(layer.blobs[0].xdata, np.zeros(3))
    layer, _, _ = _forward('type: "Scale" scale_param { filler { value: 3 } bias_term: true '
                           'bias_filler { value: -2 } }', [x])
    np.testing.assert_array_equal(layer.blobs[0].xdata, np.full(3, 3.0))
    np.testing.assert_array_equal(layer.blobs[1].xdata, np.full(3, -2.0))
    layer, _, _ = _forward('type: "Bias" bias_param { filler { value: 0.5 } }', [x])
    np.testing.assert_array_equal(layer.blobs[0].xdata, np.full(3, 0.5))


@pytest.mark.parametrize("axis,num_axes,want", [(1, 1, (3,)), (1, -1, (3, 4, 5)),
                                                (0, 2, (2, 3)), (1, 0, ()), (-2, 2, (4, 5))])
def test_parameter_shapes(axis, num_axes, want):
    x = rand(2, 3, 4, 5, seed=15)
    for t in ("Scale", "Bias"):
        p = "scale_param" if t == "Scale" else "bias_param"
        layer, _, _ = _forward(f'type: "{t}" {p} {{ axis: {axis} num_axes: {num_axes} }}', [x])
        assert tuple(layer.blobs[0].shape) == want


@pytest.mark.parametrize("t", ["Scale", "Bias"])
def test_shape_errors_name_shapes(t):
    p = "scale_param" if t == "Scale" else "bias_param"
    x = rand(2, 3, 4, seed=16)
    with pytest.raises(ShapeError, match=r"\(4,\).*\(2, 3, 4\)"):
        _forward(f'type: "{t}"', [x, rand(4)])
    with pytest.raises(ShapeError, match=r"extends past.*\(2, 3, 4\)"):
        _forward(f'type: "{t}" {p} {{ axis: 2 num_axes: 2 }}', [x])
    with pytest.raises(LayerError, match="num_axes"):
        _forward(f'type: "{t}" {p} {{ num_axes: -2 }}', [x])
    with pytest.raises(ShapeError, match=r"axis 5 .*\(2, 3, 4\)"):
        _forward(f'type: "{t}" {p} {{ axis: 5 }}', [x])
    layer, bottom, top = _forward(f'type: "{t}"', [x])
    bottom[0].reshape(2, 5, 4)
    with pytest.raises(ShapeError, match=r"\(3,\).*\(2, 5, 4\)"):
        layer.reshape(bottom, top)


# ---------------------------------------------------------------------- backward details
def test_scale_bottom1_diff_overwritten_param_diff_accumulated():
    x, s = rand(4, 3, 2, seed=17), rand(3, seed=18)
    dy = rand(4, 3, 2, seed=19)
    layer, bottom, top = _forward('type: "Scale" scale_param { bias_term: true }', [x, s])
    top[0].xdiff[...] = dy
    bottom[1].xdiff[...] = 100.0
    layer.blobs[0].xdiff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[1].xdiff, (dy * x).sum(axis=(0, 2)), rtol=1e-13)
    np.testing.assert_allclose(layer.blobs[0].xdiff, 1.0 + dy.sum(axis=(0, 2)), rtol=1e-13)
    np.testing.assert_allclose(bottom[0].xdiff, dy * s[:, None], rtol=1e-14)


def test_bias_backward_out_of_place_copies_diff():
    x, dy = rand(3, 2, 2, seed=20), rand(3, 2, 2, seed=21)
    layer, bottom, top = _forward('type: "Bias"', [x])
    top[0].xdiff[...] = dy
    layer.blobs[0].xdiff[...] = 0.5
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].xdiff, dy)
    np.testing.assert_allclose(layer.blobs[0].xdiff, 0.5 + dy.sum(axis=(0, 2)), rtol=1e-13)


@pytest.mark.parametrize("shape,axis,num_axes", ONE_BOTTOM[:8])
@pytest.mark.parametrize("in_place", [False, True])
def test_scale_bias_term_equals_scale_then_bias(shape, axis, num_axes, in_place):
    x, dy = rand(*shape, seed=22), rand(*shape, seed=23)
    p = f"axis: {axis} num_axes: {num_axes}"
    fused, fb, ft = _forward(f'type: "Scale" scale_param {{ {p} {GAUSS} bias_term: true '
                             f'{GAUSS_B} }}', [x], in_place)
    ft[0].xdiff[...] = dy
    fused.backward(ft, [True], fb)
    s_layer, sb, st = _forward(f'type: "Scale" scale_param {{ {p} }}', [x], in_place)
    s_layer.blobs[0].xdata[...] = fused.blobs[0].xdata
    b_layer, bb, bt = setup_layer(layer_param(f'type: "Bias" bias_param {{ {p} }}'), [x], 1,
                                  in_place)
    bb = [st[0]]
    bt = bb if in_place else bt
    b_layer.setup(bb, bt)
    b_layer.blobs[0].xdata[...] = fused.blobs[1].xdata
    for layer, b, t in ((s_layer, sb, st), (b_layer, bb, bt)):
        layer.reshape(b, t)
        layer.forward(b, t)
    np.testing.assert_allclose(bt[0].xdata, ft[0].xdata, rtol=1e-13)
    bt[0].xdiff[...] = dy
    b_layer.backward(bt, [True], bb)
    s_layer.backward(st, [True], sb)
    np.testing.assert_allclose(sb[0].xdiff, fb[0].xdiff, rtol=1e-13)
    np.testing.assert_allclose(s_layer.blobs[0].xdiff, fused.blobs[0].xdiff, rtol=1e-12)
    np.testing.assert_allclose(b_layer.blobs[0].xdiff, fused.blobs[1].xdiff, rtol=1e-12)


@pytest.mark.parametrize("shape", [(16, 8, 8, 8), (2, 8, 32, 32)])
def test_scale_keeps_input_copy_only_in_place(shape):
    x = rand(*shape, seed=24).astype(np.float32)
    act = x.nbytes
    for in_place, learned in ((False, True), (True, True), (True, False)):
        layer, bottom, top = setup_layer(layer_param('type: "Scale"'), [x], 1, in_place,
                                         np.float32)
        layer.param_propagate_down = [learned]   # lr_mult 0 needs no scale gradient
        layer.reshape(bottom, top)
        tracemalloc.start()
        try:
            layer.forward(bottom, top)
            kept, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        if in_place and learned:
            assert kept >= act
        else:
            assert kept < 0.5 * act, (in_place, learned, kept)
        np.testing.assert_allclose(top[0].xdata, x, rtol=1e-7)   # scale 1


def test_forward_only_net_keeps_no_copy_and_backward_says_why():
    """A solver's test nets are forward-only: an in-place Scale keeps no input copy there,
    and a backward that would need it fails with the layer's name."""
    from minicaffe.net import TRAIN, Net
    from minicaffe.io.prototxt import parse_text
    from minicaffe.proto import caffe_pb2
    text = '''
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 8 dim: 4 dim: 16 dim: 16 } } }
    layer { name: "sc" type: "Scale" bottom: "x" top: "x" }
    layer { name: "loss" type: "Reduction" bottom: "x" top: "loss" loss_weight: 1 }
    '''
    shape = (8, 4, 16, 16)
    for forward_only in (False, True):
        net = Net(parse_text(text, caffe_pb2.NetParameter()), phase=TRAIN)
        net.set_forward_only(forward_only)
        net.blobs["x"].data[...] = rand(*shape, seed=3)
        tracemalloc.start()
        try:
            net.forward()
            kept, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        act = rand(*shape).astype(np.float32).nbytes
        if not forward_only:
            assert kept >= act
            net.backward()
            # loss = sum(s[c] * x[:, c]): the scale gradient of channel c is sum(x[:, c])
            want = rand(*shape, seed=3).astype(np.float64).sum(axis=(0, 2, 3))
            np.testing.assert_allclose(net.params["sc"][0].diff, want, rtol=1e-4)
        else:
            assert kept < 0.5 * act
            with pytest.raises(LayerError, match="sc.*forward-only"):
                net.backward()

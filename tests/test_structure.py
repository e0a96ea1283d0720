"""Split, Concat, Slice, Eltwise, Flatten, Reshape, Silence, Tile, Crop."""
import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.errors import LayerError, ShapeError


def rnd(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape)


def forward(text, arrays, num_top=1):
    layer, bottom, top = setup_layer(layer_param(text), arrays, num_top)
    layer.forward(bottom, top)
    return layer, bottom, top


# -- Split ------------------------------------------------------------------------------------
def test_split_three_tops_gradient_and_views():
    x = rnd(2, 3, 4)
    check_gradients('type: "Split"', [x], num_top=3)
    layer, bottom, top = forward('type: "Split"', [x], num_top=3)
    for t in top:
        np.testing.assert_array_equal(t.xdata, x)
        assert np.shares_memory(t.xdata, bottom[0].xdata)
        assert not np.shares_memory(t.xdiff, bottom[0].xdiff)
    bottom[0].xdata[0, 0, 0] = 42.0
    assert all(t.xdata[0, 0, 0] == 42.0 for t in top)


def test_split_backward_sums_top_diffs():
    layer, bottom, top = forward('type: "Split"', [rnd(3, 5)], num_top=3)
    diffs = [rnd(3, 5, seed=s) for s in (1, 2, 3)]
    for t, d in zip(top, diffs):
        t.xdiff[...] = d
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].xdiff, diffs[0] + diffs[1] + diffs[2], rtol=1e-14)


def test_split_view_follows_bottom_reshape():
    layer, bottom, top = forward('type: "Split"', [rnd(2, 3)], num_top=2)
    bottom[0].reshape(5, 7)      # larger than the old capacity: new buffer
    bottom[0].xdata[...] = rnd(5, 7, seed=4)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    for t in top:
        assert t.shape == (5, 7)
        np.testing.assert_array_equal(t.xdata, rnd(5, 7, seed=4))
        assert np.shares_memory(t.xdata, bottom[0].xdata)


def test_split_in_place_is_refused():
    from gradcheck import make_blobs
    from minicaffe.layer import create_layer
    layer = create_layer(layer_param('type: "Split"'))
    b = make_blobs([rnd(2, 2)])
    with pytest.raises(LayerError, match="in-place"):
        layer.setup(b, [b[0]])


# -- Concat -----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_concat_gradient_and_forward(axis):
    base = (2, 3, 4)
    shapes = []
    for k, extra in enumerate((1, 2, 3)):
        s = list(base)
        s[axis] = extra
        shapes.append(tuple(s))
    xs = [rnd(*s, seed=i) for i, s in enumerate(shapes)]
    text = f'type: "Concat" concat_param {{ axis: {axis} }}'
    check_gradients(text, xs)
    _, _, top = forward(text, xs)
    # reference: element-by-element placement along the axis
    ax = axis % 3
    ref_shape = list(base)
    ref_shape[ax] = 6
    ref = np.zeros(ref_shape)
    off = 0
    for x in xs:
        for idx in np.ndindex(x.shape):
            j = list(idx)
            j[ax] += off
            ref[tuple(j)] = x[idx]
        off += x.shape[ax]
    np.testing.assert_array_equal(top[0].xdata, ref)


def test_concat_default_axis_is_channels_and_legacy_concat_dim():
    xs = [rnd(2, 1, 3), rnd(2, 4, 3, seed=1)]
    _, _, top = forward('type: "Concat"', xs)
    assert top[0].shape == (2, 5, 3)
    ys = [rnd(1, 2, 3), rnd(3, 2, 3, seed=1)]
    _, _, top = forward('type: "Concat" concat_param { concat_dim: 0 }', ys)
    assert top[0].shape == (4, 2, 3)
    np.testing.assert_array_equal(top[0].xdata[1:], ys[1])
    with pytest.raises(LayerError, match="not both"):
        forward('type: "Concat" concat_param { concat_dim: 0 axis: 0 }', ys)


def test_concat_single_bottom_shares():
    x = rnd(2, 3)
    _, bottom, top = forward('type: "Concat"', [x])
    np.testing.assert_array_equal(top[0].xdata, x)
    assert np.shares_memory(top[0].xdata, bottom[0].xdata)
    check_gradients('type: "Concat"', [x])


def test_concat_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 3, 4\).*\(2, 5, 5\)"):
        forward('type: "Concat" concat_param { axis: 1 }', [rnd(2, 3, 4), rnd(2, 5, 5)])
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(2, 3, 1\)"):
        forward('type: "Concat"', [rnd(2, 3), rnd(2, 3, 1)])


# -- Slice ------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_points_gradient_and_forward(axis):
    shape = [4, 5, 6]
    x = rnd(*shape)
    text = f'type: "Slice" slice_param {{ axis: {axis} slice_point: 1 slice_point: 3 }}'
    check_gradients(text, [x], num_top=3)
    _, _, top = forward(text, [x], num_top=3)
    bounds = [(0, 1), (1, 3), (3, shape[axis])]
    for t, (a, b) in zip(top, bounds):
        ref = np.take(x, list(range(a, b)), axis=axis)
        np.testing.assert_array_equal(t.xdata, ref)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_equal_split(axis):
    x = rnd(4, 6, 2)
    text = f'type: "Slice" slice_param {{ axis: {axis} }}'
    check_gradients(text, [x], num_top=2)
    _, _, top = forward(text, [x], num_top=2)
    half = x.shape[axis] // 2
    np.testing.assert_array_equal(top[0].xdata, np.take(x, range(half), axis=axis))
    np.testing.assert_array_equal(top[1].xdata, np.take(x, range(half, 2 * half), axis=axis))


def test_slice_legacy_slice_dim_and_errors():
    x = rnd(3, 4, 6)
    _, _, top = forward('type: "Slice" slice_param { slice_dim: 2 slice_point: 2 }', [x], 2)
    assert top[0].shape == (3, 4, 2) and top[1].shape == (3, 4, 4)
    with pytest.raises(ShapeError, match="evenly divide"):
        forward('type: "Slice" slice_param { axis: 1 }', [x], 3)
    with pytest.raises(LayerError, match="slice_point"):
        forward('type: "Slice" slice_param { axis: 1 slice_point: 2 }', [x], 3)
    with pytest.raises(LayerError, match="increasing"):
        forward('type: "Slice" slice_param { axis: 2 slice_point: 3 slice_point: 2 }', [x], 3)
    with pytest.raises(ShapeError, match="beyond"):
        forward('type: "Slice" slice_param { axis: 1 slice_point: 7 }', [x], 2)


# -- Eltwise ----------------------------------------------------------------------------------
def test_eltwise_sum_with_coeffs():
    xs = [rnd(2, 3, 4, seed=s) for s in range(3)]
    text = 'type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2.5 }'
    check_gradients(text, xs)
    _, _, top = forward(text, xs)
    np.testing.assert_allclose(top[0].xdata, xs[0] - 0.5 * xs[1] + 2.5 * xs[2], rtol=1e-13)
    check_gradients('type: "Eltwise"', xs[:2])  # SUM is the default, coeff 1


@pytest.mark.parametrize("stable", ["true", "false"])
def test_eltwise_prod(stable):
    r = np.random.RandomState(3)
    xs = [r.uniform(0.5, 1.5, (2, 3, 4)) * r.choice([-1, 1], (2, 3, 4)) for _ in range(3)]
    text = f'type: "Eltwise" eltwise_param {{ operation: PROD stable_prod_grad: {stable} }}'
    check_gradients(text, xs)
    _, _, top = forward(text, xs)
    np.testing.assert_allclose(top[0].xdata, xs[0] * xs[1] * xs[2], rtol=1e-13)


def test_eltwise_prod_stable_grad_handles_zero():
    xs = [np.array([[0.0, 2.0]]), np.array([[3.0, 4.0]])]
    layer, bottom, top = forward('type: "Eltwise" eltwise_param { operation: PROD }', xs)
    top[0].xdiff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    np.testing.assert_array_equal(bottom[0].xdiff, [[3.0, 4.0]])
    np.testing.assert_array_equal(bottom[1].xdiff, [[0.0, 2.0]])


def test_eltwise_max_distinct_values():
    xs = [rnd(2, 3, 4, seed=s) for s in range(3)]
    text = 'type: "Eltwise" eltwise_param { operation: MAX }'
    check_gradients(text, xs)
    layer, bottom, top = forward(text, xs)
    ref = np.zeros_like(xs[0])
    arg = np.zeros(xs[0].shape, dtype=int)
    for idx in np.ndindex(ref.shape):
        vals = [x[idx] for x in xs]
        arg[idx] = int(np.argmax(vals))
        ref[idx] = vals[arg[idx]]
    np.testing.assert_array_equal(top[0].xdata, ref)
    np.testing.assert_array_equal(layer.max_idx, arg)


def test_eltwise_max_ties_follow_caffe():
    # Caffe: a tie between bottoms 0 and 1 goes to bottom 1; later bottoms must be strictly
    # greater to take over.
    a = np.array([[1.0, 2.0, 5.0]])
    b = np.array([[1.0, 3.0, 0.0]])
    c = np.array([[1.0, 3.0, 5.0]])
    layer, bottom, top = forward('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c])
    np.testing.assert_array_equal(layer.max_idx, [[1, 1, 0]])
    top[0].xdiff[...] = [[10.0, 20.0, 30.0]]
    layer.backward(top, [True] * 3, bottom)
    np.testing.assert_array_equal(bottom[0].xdiff, [[0, 0, 30.0]])
    np.testing.assert_array_equal(bottom[1].xdiff, [[10.0, 20.0, 0]])
    np.testing.assert_array_equal(bottom[2].xdiff, [[0, 0, 0]])


def test_eltwise_errors():
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(3, 2\)"):
        forward('type: "Eltwise"', [rnd(2, 3), rnd(3, 2)])
    with pytest.raises(LayerError, match="coeff"):
        forward('type: "Eltwise" eltwise_param { coeff: 1 }', [rnd(2), rnd(2)])
    with pytest.raises(LayerError, match="SUM"):
        forward('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }',
                [rnd(2), rnd(2)])


# -- Flatten ----------------------------------------------------------------------------------
def check_view(text, x, expected):
    """Gradients check out and the top is a view of ``x`` reshaped to ``expected``."""
    check_gradients(text, [x])
    layer, bottom, top = forward(text, [x])
    assert top[0].shape == expected
    np.testing.assert_array_equal(top[0].xdata, x.reshape(expected))
    assert np.shares_memory(top[0].xdata, bottom[0].xdata)
    return layer, bottom, top


@pytest.mark.parametrize("params,expected", [
    ("", (2, 60)),
    ("flatten_param { axis: 2 }", (2, 3, 20)),
    ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
    ("flatten_param { axis: 0 end_axis: -2 }", (24, 5)),
    ("flatten_param { axis: -3 end_axis: 2 }", (2, 12, 5)),
])
def test_flatten(params, expected):
    x = rnd(2, 3, 4, 5)
    layer, bottom, top = check_view(f'type: "Flatten" {params}', x, expected)
    # backward: the bottom's diff is the top's diff reshaped
    d = rnd(*expected, seed=9)
    top[0].xdiff[...] = d
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].xdiff, d.reshape(x.shape))


def test_flatten_follows_new_bottom_shape_and_refuses_in_place():
    layer, bottom, top = forward('type: "Flatten"', [rnd(2, 3, 2)])
    bottom[0].reshape(4, 5, 3)
    bottom[0].xdata[...] = rnd(4, 5, 3, seed=2)
    layer.reshape(bottom, top)
    assert top[0].shape == (4, 15)
    np.testing.assert_array_equal(top[0].xdata, rnd(4, 5, 3, seed=2).reshape(4, 15))
    top[0].xdiff[...] = 1.5
    layer.backward(top, [True], bottom)
    assert (bottom[0].xdiff == 1.5).all()
    from gradcheck import make_blobs
    from minicaffe.layer import create_layer
    b = make_blobs([rnd(2, 3)])
    with pytest.raises(LayerError, match="in-place"):
        create_layer(layer_param('type: "Flatten"')).setup(b, [b[0]])


# -- Reshape ----------------------------------------------------------------------------------
@pytest.mark.parametrize("params,expected", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 3 dim: -1 dim: 2 }", (2, 3, 10, 2)),
    ("shape { dim: -1 dim: 0 dim: 4 dim: 5 }", (2, 3, 4, 5)),
    ("shape { dim: 6 dim: 20 }", (6, 20)),
    ("axis: 1 num_axes: 2 shape { dim: -1 }", (2, 12, 5)),
    ("axis: -1 shape { dim: 1 dim: 1 }", (2, 3, 4, 5, 1, 1)),
    ("axis: 0 num_axes: 0 shape { dim: 1 }", (1, 2, 3, 4, 5)),
    ("axis: 1 shape { dim: 0 dim: -1 }", (2, 3, 20)),
])
def test_reshape(params, expected):
    x = rnd(2, 3, 4, 5)
    _, bottom, top = check_view(f'type: "Reshape" reshape_param {{ {params} }}', x, expected)
    assert np.shares_memory(top[0].xdiff, bottom[0].xdiff)


def test_reshape_errors():
    x = rnd(2, 3, 4)
    with pytest.raises(LayerError, match="more than one -1"):
        forward('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', [x])
    with pytest.raises(ShapeError, match=r"\(5, 5\).*\(2, 3, 4\)"):
        forward('type: "Reshape" reshape_param { shape { dim: 5 dim: 5 } }', [x])
    with pytest.raises(ShapeError, match="divisible"):
        forward('type: "Reshape" reshape_param { shape { dim: 5 dim: -1 } }', [x])
    with pytest.raises(LayerError, match="no axis"):
        forward('type: "Reshape" reshape_param { axis: 2 shape { dim: 0 dim: 0 } }', [x])
    with pytest.raises(LayerError, match="out of range"):
        forward('type: "Reshape" reshape_param { axis: 2 num_axes: 3 shape { dim: 4 } }', [x])
    # Caffe's rule: a 0 at position i copies bottom axis axis+i (here 1+1 = 2, size 4)
    # even in a partial reshape, so 2*4*(-1) over 12 elements of axes 1..2 cannot be inferred.
    with pytest.raises(ShapeError, match="divisible"):
        forward('type: "Reshape" reshape_param { axis: 1 num_axes: 2 '
                'shape { dim: 2 dim: 0 dim: -1 } }', [rnd(2, 3, 4, 5)])


# -- Silence ----------------------------------------------------------------------------------
def test_silence_backward_zeroes_diffs():
    layer, bottom, top = forward('type: "Silence"', [rnd(2, 3), rnd(4)], num_top=0)
    assert top == []
    for b in bottom:
        b.xdiff[...] = 7.0
    layer.backward(top, [True, False], bottom)
    assert (bottom[0].xdiff == 0).all()
    assert (bottom[1].xdiff == 7.0).all()


# -- Tile -------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,tiles", [(0, 2), (1, 3), (2, 2), (-1, 4)])
def test_tile(axis, tiles):
    x = rnd(2, 3, 4)
    text = f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}'
    check_gradients(text, [x])
    _, _, top = forward(text, [x])
    ax = axis % 3
    reps = [1, 1, 1]
    reps[ax] = tiles
    np.testing.assert_array_equal(top[0].xdata, np.tile(x, reps))


def test_tile_needs_positive_tiles():
    with pytest.raises(LayerError, match="tiles"):
        forward('type: "Tile"', [rnd(2, 3)])
    with pytest.raises(LayerError, match="positive"):
        forward('type: "Tile" tile_param { tiles: 0 }', [rnd(2, 3)])


# -- Crop -------------------------------------------------------------------------------------
@pytest.mark.parametrize("params,offsets", [
    ("", (0, 0, 0, 0)),
    ("crop_param { offset: 1 }", (0, 0, 1, 1)),
    ("crop_param { axis: 1 offset: 1 offset: 2 offset: 0 }", (0, 1, 2, 0)),
])
def test_crop(params, offsets):
    x = rnd(2, 4, 6, 5)
    ref_blob = np.zeros((1, 2, 3, 4))
    text = f'type: "Crop" {params}'
    check_gradients(text, [x, ref_blob], check_bottom=[0])
    _, _, top = forward(text, [x, ref_blob])
    start = 2 if "axis" not in params else 1
    expected_shape = [x.shape[i] if i < start else ref_blob.shape[i] for i in range(4)]
    assert top[0].shape == tuple(expected_shape)
    o = offsets
    for idx in np.ndindex(*expected_shape):
        assert top[0].xdata[idx] == x[tuple(i + oi for i, oi in zip(idx, o))]


def test_crop_out_of_bounds():
    with pytest.raises(ShapeError, match=r"axis 3.*\(2, 4, 6, 5\)"):
        forward('type: "Crop" crop_param { offset: 2 }', [rnd(2, 4, 6, 5), np.zeros((1, 1, 3, 4))])
    with pytest.raises(LayerError, match="offsets"):
        forward('type: "Crop" crop_param { offset: 1 offset: 2 offset: 3 }',
                [rnd(2, 4, 6, 5), np.zeros((1, 1, 3, 4))])

"""Filter and BatchReindex: rows picked against loops written here, gradients by finite
differences, Caffe's shape rules and error checks."""
import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer, layer_param, rand, setup_layer
from minicaffe.errors import LayerError, ShapeError


# --- Filter ----------------------------------------------------------------------------------
SELECTOR = np.array([1, 0, 0, 2.5, 0, -1.0])


def test_filter_forward_picks_selected_rows_in_order():
    x1, x2 = rand((6, 3, 2), 1), rand((6, 4), 2)
    layer, bottom, top = setup_layer(layer_param('type: "Filter"'),
                                     [x1, x2, SELECTOR.reshape(6, 1, 1, 1)], num_top=2)
    # At setup there is no selector data yet: Caffe gives the tops every row.
    assert top[0].shape == (6, 3, 2) and top[1].shape == (6, 4)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    keep = [i for i in range(6) if SELECTOR[i] != 0]
    assert keep == [0, 3, 5]
    assert top[0].shape == (3, 3, 2) and top[1].shape == (3, 4)
    for r, i in enumerate(keep):
        np.testing.assert_array_equal(top[0].data[r], x1[i])
        np.testing.assert_array_equal(top[1].data[r], x2[i])


def test_filter_backward_scatters_and_zeroes():
    x = rand((6, 2), 3)
    layer, bottom, top = forward_layer('type: "Filter"', [x, SELECTOR])
    dy = rand((3, 2), 4)
    top[0].diff[...] = dy
    bottom[0].diff[...] = 7.0      # backward overwrites
    layer.backward(top, [True, False], bottom)
    expect = np.zeros((6, 2))
    for r, i in enumerate([0, 3, 5]):
        expect[i] = dy[r]
    np.testing.assert_array_equal(bottom[0].diff, expect)


@pytest.mark.parametrize("shapes,selector", [
    ([(6, 3, 2), (6, 4)], SELECTOR.reshape(6, 1)),
    ([(5, 2, 3, 2)], np.array([0, 1, 1, 0, 1.0])),
    ([(4, 3)], np.ones((4, 1, 1, 1))),
])
def test_filter_gradients(shapes, selector):
    arrays = [rand(s, k) for k, s in enumerate(shapes)] + [selector]
    k = len(shapes)
    check_gradients('type: "Filter"', arrays, num_top=k, check_bottom=list(range(k)))


def test_filter_selects_nothing():
    layer, bottom, top = forward_layer('type: "Filter"', [rand((3, 2)), np.zeros(3)])
    assert top[0].shape == (0, 2)
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.zeros((3, 2)))


def test_filter_errors():
    with pytest.raises(LayerError, match="Filter layer 'under_test'.*2 tops"):
        setup_layer(layer_param('type: "Filter"'), [rand((3, 2)), rand((3, 2)), np.ones(3)],
                    num_top=1)
    with pytest.raises(ShapeError, match=r"singletons.*\(3, 2\)"):
        setup_layer(layer_param('type: "Filter"'), [rand((3, 2)), np.ones((3, 2))])
    with pytest.raises(ShapeError, match=r"bottom 0 .*\(4, 2\).*\(3\)"):
        setup_layer(layer_param('type: "Filter"'), [rand((4, 2)), np.ones(3)])
    layer, bottom, top = forward_layer('type: "Filter"', [rand((3, 2)), np.ones(3)])
    with pytest.raises(LayerError, match="selector"):
        layer.backward(top, [True, True], bottom)


# --- BatchReindex --------------------------------------------------------------------------
def test_batch_reindex_forward():
    x = rand((4, 2, 3), 13)
    perm = np.array([3.0, 0.0, 3.0, 1.0, 2.0, 2.0])
    _, _, top = forward_layer('type: "BatchReindex"', [x, perm])
    assert top[0].shape == (6, 2, 3)
    for i, j in enumerate(perm):
        np.testing.assert_array_equal(top[0].data[i], x[int(j)])


def test_batch_reindex_gradients():
    x = rand((4, 3), 14)
    check_gradients('type: "BatchReindex"', [x, np.array([2.0, 0.0, 2.0, 2.0, 1.0])],
                    check_bottom=[0])
    check_gradients('type: "BatchReindex"', [rand((3, 2, 2), 15), np.array([1.0])],
                    check_bottom=[0])


def test_batch_reindex_errors():
    with pytest.raises(LayerError, match="out of range"):
        forward_layer('type: "BatchReindex"', [rand((3, 2)), np.array([0.0, 3.0])])
    with pytest.raises(LayerError, match="out of range"):
        forward_layer('type: "BatchReindex"', [rand((3, 2)), np.array([-1.0])])
    with pytest.raises(LayerError, match="1-D"):
        forward_layer('type: "BatchReindex"', [rand((3, 2)), np.zeros((2, 1))])
    layer, bottom, top = forward_layer('type: "BatchReindex"', [rand((3, 2)), np.array([1.0])])
    with pytest.raises(LayerError, match="index"):
        layer.backward(top, [True, True], bottom)

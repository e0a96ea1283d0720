"""Parameter: the top views the parameter blob, gradients accumulate into it, no bottoms."""
import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer, rand
from minicaffe.errors import LayerError


# --- Parameter -----------------------------------------------------------------------------
def test_parameter_layer():
    layer, _, top = forward_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (2, 3)
    assert top[0].shape == (2, 3)
    np.testing.assert_array_equal(top[0].data, 0)           # Caffe: no filler, zeros
    layer.blobs[0].data[...] = np.arange(6).reshape(2, 3)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, np.arange(6).reshape(2, 3))
    layer.blobs[0].diff[...] = 1
    top[0].diff[...] = 2
    layer.backward(top, [], [])
    np.testing.assert_array_equal(layer.blobs[0].diff, 3)   # accumulated


def test_parameter_gradients():
    layer = check_gradients('type: "Parameter" parameter_param { shape { dim: 3 dim: 2 } }',
                            [])
    assert layer.blobs[0].shape == (3, 2)


def test_parameter_layer_takes_no_bottom():
    with pytest.raises(LayerError, match="bottom"):
        forward_layer('type: "Parameter" parameter_param { shape { dim: 2 } }', [rand((2,))])

"""HDF5Output: the data and label bottoms written to the file, and its error checks."""
import numpy as np
import pytest

from gradcheck import layer_param, rand, setup_layer
from minicaffe.errors import LayerError, ShapeError


# --- HDF5Output ------------------------------------------------------------------------------
def test_hdf5_output_writes_data_and_label(tmp_path):
    h5py = pytest.importorskip("h5py")
    fn = tmp_path / "out.h5"
    text = f'type: "HDF5Output" hdf5_output_param {{ file_name: "{fn}" }}'
    x, y = rand((3, 4), 13), np.arange(3.0)
    layer, bottom, top = setup_layer(layer_param(text), [x, y], num_top=0)
    assert fn.exists()
    with h5py.File(fn, "r") as f:
        assert list(f.keys()) == []
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    with h5py.File(fn, "r") as f:
        assert f["data"].shape == (3, 4, 1, 1) and f["label"].shape == (3, 1, 1, 1)
        np.testing.assert_array_equal(f["data"][...].reshape(3, 4), x)
        np.testing.assert_array_equal(f["label"][...].ravel(), y)
    bottom[0].data[...] = 2 * x                  # a second forward replaces the datasets
    layer.forward(bottom, top)
    with h5py.File(fn, "r") as f:
        np.testing.assert_array_equal(f["data"][...].reshape(3, 4), 2 * x)


def test_hdf5_output_errors(tmp_path):
    pytest.importorskip("h5py")
    fn = tmp_path / "out.h5"
    text = f'type: "HDF5Output" hdf5_output_param {{ file_name: "{fn}" }}'
    with pytest.raises(ShapeError, match=r"HDF5Output layer 'under_test'.*\(3, 4\).*\(2\)"):
        setup_layer(layer_param(text), [rand((3, 4)), np.zeros(2)], num_top=0)
    with pytest.raises(LayerError, match="file_name"):
        setup_layer(layer_param('type: "HDF5Output"'), [rand((3, 4)), np.zeros(3)], num_top=0)
    with pytest.raises(LayerError, match="exactly 2 bottom"):
        setup_layer(layer_param(text), [rand((3, 4))], num_top=0)
    bad = tmp_path / "no_such_dir" / "x.h5"
    with pytest.raises(LayerError, match="cannot create HDF5 file"):
        setup_layer(layer_param(f'type: "HDF5Output" hdf5_output_param {{ file_name: "{bad}" }}'),
                    [rand((3, 4)), np.zeros(3)], num_top=0)

"""A net's weights in Caffe's HDF5 layout (``.caffemodel.h5``, Net::ToHDF5 and
CopyTrainedLayersFromHDF5): group ``data/<layer name>`` holds dataset ``<i>`` for each
parameter blob the layer owns (a shared blob is stored once, by its owner), and with
``write_diff`` group ``diff/<layer name>`` the gradients of all of them."""
import logging

from .errors import MiniCaffeError
from .io.hdf5_file import create_atomically, load_array, require_h5py

log = logging.getLogger("minicaffe")


def write_hdf5_weights(path, layers, params, write_diff=False):
    """Write ``layers``' parameters to ``path``; ``params`` (the net's NetParams) says which
    blobs a layer owns."""
    owned = {lp: owner < 0 for lp, owner in zip(params.layer_indices, params.owner)}
    with create_atomically(path, "snapshot_format: HDF5") as f:
        data = f.create_group("data")
        diff = f.create_group("diff") if write_diff else None
        for li, layer in enumerate(layers):
            g_data = data.create_group(layer.name)
            g_diff = diff.create_group(layer.name) if diff is not None else None
            for pi, blob in enumerate(layer.blobs):
                if owned.get((li, pi), True):
                    g_data.create_dataset(str(pi), data=blob.cpu_data())
                if g_diff is not None:
                    g_diff.create_dataset(str(pi), data=blob.cpu_diff())


class Hdf5Weights:
    """An open ``.caffemodel.h5``'s ``data`` group: layer name -> its datasets."""

    def __init__(self, path):
        self.where = path
        h5py = require_h5py(f"{path}: reading HDF5 weights")
        try:
            self.file = h5py.File(path, "r")
        except OSError as e:
            raise MiniCaffeError(f"{path}: cannot open as HDF5 ({e})") from None
        self.data = self.file.get("data")
        if not isinstance(self.data, h5py.Group):
            self.file.close()
            raise MiniCaffeError(f"{path}: no 'data' group: not a Caffe HDF5 weights file")

    def close(self):
        self.file.close()


def copy_hdf5_weights(layer_by_name, src):
    """Copy each layer group of ``src`` (Hdf5Weights) into the same-named layer, as Caffe
    does: unknown layers are ignored; a blob missing from the file is fine only when the net
    shares it from an earlier layer."""
    where = src.where
    shared = _shared_blob_ids(layer_by_name)
    try:
        for name in src.data:
            if name not in layer_by_name:
                log.info("Ignoring source layer %s", name)
                continue
            group = src.data[name]
            blobs = layer_by_name[name].blobs
            if len(group) > len(blobs):
                raise MiniCaffeError(f"{where}: layer '{name}' has {len(group)} blobs in the "
                                     f"weights file but {len(blobs)} in the net")
            for pi, blob in enumerate(blobs):
                if str(pi) not in group:
                    if id(blob) in shared:
                        continue
                    raise MiniCaffeError(f"{where}: layer '{name}' has no blob {pi} in the "
                                         f"weights file; the net's layer has {len(blobs)}")
                blob.data = load_array(group, str(pi), where, blob.shape,
                                       f"param {pi} of layer '{name}'")
    finally:
        src.close()


def _shared_blob_ids(layer_by_name):
    """ids of the parameter blobs that a layer shares from an earlier one (not the owner)."""
    seen, shared = set(), set()
    for layer in layer_by_name.values():
        for blob in layer.blobs:
            (shared if id(blob) in seen else seen).add(id(blob))
    return shared

"""HDF5 files as Caffe's util/hdf5.cpp writes them (through h5py, an optional dependency:
``pip install minicaffe[hdf5]``): the file-type check, one-element int and string datasets,
and writing a file atomically (``atomic_file``)."""
import contextlib

import numpy as np

from ..errors import MiniCaffeError
from .atomic_file import atomic_path

_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def require_h5py(what):
    """The h5py module, or a MiniCaffeError saying that ``what`` needs it."""
    try:
        import h5py
    except ImportError:
        raise MiniCaffeError(f"{what} needs the h5py package: pip install minicaffe[hdf5] "
                             "(or pip install h5py)") from None
    return h5py


def is_hdf5(path):
    """True when ``path`` is an HDF5 file (H5Fis_hdf5: the signature at offset 0, 512, 1024,
    ...), without needing h5py."""
    try:
        with open(path, "rb") as f:
            offset = 0
            while True:
                f.seek(offset)
                head = f.read(len(_SIGNATURE))
                if head == _SIGNATURE:
                    return True
                if len(head) < len(_SIGNATURE) or offset >= 1 << 20:
                    return False
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False


@contextlib.contextmanager
def create_atomically(path, what):
    """An h5py.File open for writing whose content appears under ``path`` only once complete."""
    h5py = require_h5py(what)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            yield f


def save_int(group, name, value):
    """hdf5_save_int: a 1-element int32 dataset."""
    group.create_dataset(name, data=np.array([value], dtype=np.int32))


def save_string(group, name, text):
    """hdf5_save_string (H5LTmake_dataset_string): a scalar NUL-terminated fixed string."""
    h5py = require_h5py("writing an HDF5 string")
    raw = text.encode() + b"\0"
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(raw))
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    dset = h5py.h5d.create(group.id, name.encode(), tid, space)
    dset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"), mtype=tid)


def load_int(group, name, where):
    value = np.asarray(_dataset(group, name, where)[()]).reshape(-1)
    if value.size != 1 or value.dtype.kind not in "iu":
        raise MiniCaffeError(f"{where}: dataset '{name}' should hold one integer, found "
                             f"{value.size} value(s) of type {value.dtype}")
    return int(value[0])


def load_string(group, name, where):
    value = _dataset(group, name, where)[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size == 1 else value
    if not isinstance(value, (bytes, str)):
        raise MiniCaffeError(f"{where}: dataset '{name}' should hold a string")
    return value.decode() if isinstance(value, bytes) else value


def _dataset(group, name, where):
    import h5py
    ds = group.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise MiniCaffeError(f"{where}: no dataset '{name}' in {group.name}")
    return ds


def load_array(group, name, where, shape, what):
    """A float32 array from dataset ``name`` of ``group``, which must have shape ``shape``
    unless it is None (hdf5_load_nd_dataset); ``what`` names the blob in the error."""
    ds = _dataset(group, name, where)
    if ds.dtype.kind not in "fiu":
        raise MiniCaffeError(f"{where}: dataset '{ds.name}' has type {ds.dtype}, expected "
                             "float")
    if shape is not None and tuple(ds.shape) != tuple(shape):
        raise MiniCaffeError(f"{where}: cannot load {what} from '{ds.name}': shape mismatch, "
                             f"source {tuple(ds.shape)} vs target {tuple(shape)}")
    return np.asarray(ds[()], dtype=np.float32)

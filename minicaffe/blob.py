"""Blob: an N-D array of data and a gradient ("diff") of the same shape, as in Caffe.

Layers use ``xdata``/``xdiff``: the arrays in the compute module (NumPy on the CPU,
CuPy in GPU mode). ``data``/``diff`` are the pycaffe view: NumPy arrays the user may read
and write in place. On the CPU both names give the same array.

Storage follows Caffe's rule: reshaping to a count that fits the capacity reuses the
buffer (no allocation per iteration); the diff is allocated on first use.
"""
import numpy as np

from . import backend


class BlobShape(tuple):
    """The blob's shape: a tuple (pycaffe) that can also be called with an axis (C++ Caffe)."""

    def __call__(self, axis):
        return self[canonical_axis(axis, len(self))]


def canonical_axis(axis, num_axes):
    if not -num_axes <= axis < max(num_axes, 1):
        raise IndexError(f"axis {axis} out of range for a {num_axes}-axis blob")
    return axis + num_axes if axis < 0 else axis


def _count(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n


class Blob:
    def __init__(self, shape=(), dtype=np.float32, xp=None):
        self.dtype = np.dtype(dtype)
        self._xp = xp
        self._shape = BlobShape()
        self._data_buf = None
        self._diff_buf = None
        self._data = None
        self._diff = None
        self.reshape(*shape) if shape else self.reshape()

    # -- shape -----------------------------------------------------------------------------
    @property
    def xp(self):
        return self._xp if self._xp is not None else backend.xp()

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return _count(self._shape)

    @property
    def num_axes(self):
        return len(self._shape)

    def count_range(self, start, end=None):
        end = self.num_axes if end is None else end
        return _count(self._shape[start:end])

    def canonical_axis_index(self, axis):
        return canonical_axis(axis, self.num_axes)

    def _legacy(self, i):
        # Caffe's num/channels/height/width: missing leading axes count as 1.
        n = self.num_axes
        return 1 if i >= n else self._shape[i]

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"blob shape {shape} has a negative dimension")
        if shape == self._shape and self._data is not None:
            return
        self._shape = BlobShape(shape)
        count = _count(shape)
        xp = self.xp
        if self._data_buf is None or self._data_buf.size < count or \
                backend.get_array_module(self._data_buf) is not xp:
            self._data_buf = xp.zeros(max(count, 1), dtype=self.dtype)
            self._diff_buf = None
        self._data = self._data_buf[:count].reshape(shape)
        self._diff = None

    def reshape_like(self, other):
        self.reshape(other.shape)

    # -- arrays for layers (compute module) --------------------------------------------------
    @property
    def xdata(self):
        return self._data

    @xdata.setter
    def xdata(self, value):
        self._data[...] = value

    @property
    def xdiff(self):
        if self._diff is None:
            count = self.count
            if self._diff_buf is None or self._diff_buf.size < count:
                self._diff_buf = self.xp.zeros(max(self._data_buf.size, 1), dtype=self.dtype)
            self._diff = self._diff_buf[:count].reshape(self._shape)
        return self._diff

    @xdiff.setter
    def xdiff(self, value):
        self.xdiff[...] = value

    @property
    def has_diff(self):
        return self._diff is not None

    # -- pycaffe view (NumPy) ----------------------------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data[...] = value

    @property
    def diff(self):
        return self.xdiff

    @diff.setter
    def diff(self, value):
        self.xdiff[...] = value

    # -- sharing (parameter sharing, in-place views) -------------------------------------------
    def share_data(self, other):
        if other.count != self.count:
            raise ValueError(f"cannot share data of {other.shape} with {self.shape}")
        self._data_buf = other._data_buf
        self._data = other._data.reshape(self._shape)

    def share_diff(self, other):
        if other.count != self.count:
            raise ValueError(f"cannot share diff of {other.shape} with {self.shape}")
        other_diff = other.xdiff  # allocates the owner's diff first, so the buffer exists
        self._diff_buf = other._diff_buf
        self._diff = other_diff.reshape(self._shape)

    # -- proto conversion ----------------------------------------------------------------------
    def to_proto(self, proto=None, write_diff=False):
        from .io.protobinary import array_to_blobproto
        return array_to_blobproto(backend.to_numpy(self._data),
                                  backend.to_numpy(self.xdiff) if write_diff else None, proto)

    def from_proto(self, proto, reshape=True):
        from .io.protobinary import blobproto_to_array, blobproto_shape
        shape = blobproto_shape(proto)
        if reshape:
            self.reshape(shape)
        elif _count(shape) != self.count:
            raise ValueError(f"blob proto shape {shape} does not fit blob shape {tuple(self.shape)}")
        self._data[...] = self.xp.asarray(blobproto_to_array(proto).reshape(self._shape))
        if len(proto.diff) or len(proto.double_diff):
            self.xdiff[...] = self.xp.asarray(
                blobproto_to_array(proto, diff=True).reshape(self._shape))

    def __repr__(self):
        return f"Blob(shape={tuple(self._shape)}, dtype={self.dtype.name})"

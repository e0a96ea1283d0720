"""Blob: an N-D array of data and a gradient ("diff") of the same shape, as in Caffe.

Layers use ``xdata``/``xdiff``: the arrays in the compute module (NumPy on the CPU,
CuPy in GPU mode). ``data``/``diff`` are the pycaffe view: NumPy arrays the user may read
and write in place. On the CPU both names give the same array.

In GPU mode each buffer has a host mirror that follows Caffe's SyncedMemory: a *head* says
which side is newer. Handing out ``data``/``diff`` copies device to host if the device is
newer and makes the host the head (the caller may write through the array); handing out
``xdata``/``xdiff`` copies host to device if the host is the head and makes the device the
head (the layer may write). ``cpu_data()``/``cpu_diff()`` are the read-only host views: they
copy when needed but leave both sides in sync. As in pycaffe, a NumPy array kept from an
earlier ``.data`` is only guaranteed to reach the device if written before the next layer
use: take ``blob.data`` again after a forward.

Storage follows Caffe's rule: reshaping to a count that fits the capacity reuses the
buffer (no allocation per iteration); the diff is allocated on first use.
"""
import numpy as np

from . import backend
from .blob_limits import check_blob_size
from .errors import BlobSizeError

MAX_AXES = 32   # Caffe's kMaxBlobAxes

# Which side of a device buffer holds the newest values.
_HOST, _DEVICE, _SYNCED = 1, 2, 3


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


class _Mirror:
    """The host copy of one flat device buffer and its head (Caffe's SyncedMemory).

    Invariant: inside the owning blob's view [0, count) the head side holds the newest
    values (both when synced); outside it the device does (Blob.reshape settles the head
    before the view changes size)."""
    __slots__ = ("dev", "host", "head")

    def __init__(self, dev):
        self.dev = dev
        self.host = None
        self.head = _DEVICE

    def host_buffer(self):
        h = self.host
        if h is None:
            h = self.host = np.empty(self.dev.size, dtype=np.dtype(self.dev.dtype))
        return h

    def to_host(self, n):
        """The host buffer, with its first ``n`` values current."""
        h = self.host_buffer()
        if self.head == _DEVICE:
            if n:
                self.dev[:n].get(out=h[:n])
            self.head = _SYNCED
        return h

    def to_device(self, n):
        """Copy the first ``n`` host values to the device if the host is the head."""
        if self.head == _HOST:
            if n:
                self.dev[:n].set(self.host[:n])
            self.head = _SYNCED

    def settle(self, n):
        """Make the device hold the newest values everywhere (before the view changes)."""
        self.to_device(n)
        self.head = _DEVICE


class Blob:
    def __init__(self, shape=(), dtype=np.float32, xp=None):
        self.dtype = np.dtype(dtype)
        self._xp = xp
        self._mod = None            # module of the buffers
        self._shape = BlobShape()
        self._count = 0
        self._data_buf = None
        self._diff_buf = None
        self._data = None
        self._diff = None
        self._dm = None             # host mirrors of the device buffers (GPU mode only)
        self._gm = None
        self.reshape(*shape) if shape else self.reshape()

    # -- shape -----------------------------------------------------------------------------
    @property
    def xp(self):
        """The array module of the blob's storage (NumPy or CuPy)."""
        m = self._mod
        if m is None:
            return self._xp if self._xp is not None else backend.xp()
        return m

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return self._count

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
            raise BlobSizeError(f"blob shape {shape} has a negative dimension")
        if len(shape) > MAX_AXES:
            raise BlobSizeError(f"blob shape {shape} has {len(shape)} axes; at most {MAX_AXES} "
                                "are allowed (Caffe's kMaxBlobAxes)")
        if shape == self._shape and self._data is not None:
            return
        count = check_blob_size(shape, self.dtype)
        old_count = self._count
        self._shape = BlobShape(shape)
        self._count = count
        xp = self._xp if self._xp is not None else backend.xp()
        if self._data_buf is None or self._data_buf.size < count or self._mod is not xp:
            self._allocate(xp, max(count, 1))
        elif count != old_count:
            for m in (self._dm, self._gm):
                if m is not None:
                    m.settle(old_count)
        self._data = self._data_buf[:count].reshape(shape)
        self._diff = None

    def _allocate(self, xp, capacity):
        self._data_buf = self._zeros(xp, capacity)
        self._mod = xp
        self._dm = None if xp is np else _Mirror(self._data_buf)
        self._diff_buf = None
        self._gm = None

    def _zeros(self, xp, n):
        try:
            return xp.zeros(n, dtype=self.dtype)
        except MemoryError:  # NumPy's and CuPy's out-of-memory errors both derive from it
            where = "host" if xp is np else "device"
            raise BlobSizeError(f"blob shape {' x '.join(str(s) for s in self._shape)}: out of "
                                f"{where} memory allocating {n * self.dtype.itemsize / 2**30:.1f} "
                                "GiB") from None

    def reshape_like(self, other):
        self.reshape(other.shape)

    # -- arrays for layers (compute module) --------------------------------------------------
    @property
    def xdata(self):
        m = self._dm
        if m is not None:
            if m.head == _HOST:
                m.to_device(self._count)
            m.head = _DEVICE
        return self._data

    @xdata.setter
    def xdata(self, value):
        target = self.xdata
        if self._dm is not None and isinstance(value, np.ndarray) and \
                not backend.is_device_array(value):
            value = self._mod.asarray(value)
        target[...] = value

    def _diff_view(self):
        count = self._count
        buf = self._diff_buf
        if buf is None or buf.size < count:
            buf = self._diff_buf = self._zeros(self._mod, max(self._data_buf.size, 1))
            self._gm = None if self._mod is np else _Mirror(buf)
        self._diff = buf[:count].reshape(self._shape)
        return self._diff

    @property
    def xdiff(self):
        d = self._diff
        if d is None:
            d = self._diff_view()
        m = self._gm
        if m is not None:
            if m.head == _HOST:
                m.to_device(self._count)
            m.head = _DEVICE
        return d

    @xdiff.setter
    def xdiff(self, value):
        target = self.xdiff
        if self._gm is not None and isinstance(value, np.ndarray) and \
                not backend.is_device_array(value):
            value = self._mod.asarray(value)
        target[...] = value

    @property
    def has_diff(self):
        return self._diff is not None

    # -- pycaffe view (NumPy) ----------------------------------------------------------------
    @property
    def data(self):
        """The data as a NumPy array the caller may write (on a GPU: the synced host copy)."""
        m = self._dm
        if m is None:
            return self._data
        h = m.to_host(self._count)
        m.head = _HOST
        return h[:self._count].reshape(self._shape)

    @data.setter
    def data(self, value):
        m = self._dm
        if m is None:
            self._data[...] = value
        elif backend.is_device_array(value):
            self.xdata[...] = value
        else:
            m.host_buffer()[:self._count].reshape(self._shape)[...] = value
            m.head = _HOST

    @property
    def diff(self):
        """The diff as a NumPy array the caller may write (on a GPU: the synced host copy)."""
        if self._diff is None:
            self._diff_view()
        m = self._gm
        if m is None:
            return self._diff
        h = m.to_host(self._count)
        m.head = _HOST
        return h[:self._count].reshape(self._shape)

    @diff.setter
    def diff(self, value):
        if self._diff is None:
            self._diff_view()
        m = self._gm
        if m is None:
            self._diff[...] = value
        elif backend.is_device_array(value):
            self.xdiff[...] = value
        else:
            m.host_buffer()[:self._count].reshape(self._shape)[...] = value
            m.head = _HOST

    def cpu_data(self):
        """The data as a NumPy array to read only (no copy back to the device follows)."""
        m = self._dm
        if m is None:
            return self._data
        return m.to_host(self._count)[:self._count].reshape(self._shape)

    def cpu_diff(self):
        """The diff as a NumPy array to read only."""
        if self._diff is None:
            self._diff_view()
        m = self._gm
        if m is None:
            return self._diff
        return m.to_host(self._count)[:self._count].reshape(self._shape)

    @property
    def on_device(self):
        """True when the blob's storage is in device (CuPy) memory."""
        return self._dm is not None

    # -- sharing (parameter sharing, in-place views) -------------------------------------------
    def share_data(self, other):
        if other.count != self.count:
            raise ValueError(f"cannot share data of {other.shape} with {self.shape}")
        self._data_buf = other._data_buf
        self._mod = other._mod
        self._dm = other._dm
        self._data = other._data.reshape(self._shape)
        if self._diff_buf is not None and backend.get_array_module(self._diff_buf) is not \
                self._mod:
            self._diff_buf = None
            self._gm = None
            self._diff = None

    def share_diff(self, other):
        if other.count != self.count:
            raise ValueError(f"cannot share diff of {other.shape} with {self.shape}")
        other_diff = other.xdiff  # allocates the owner's diff first, so the buffer exists
        self._diff_buf = other._diff_buf
        self._gm = other._gm
        self._diff = other_diff.reshape(self._shape)

    # -- proto conversion ----------------------------------------------------------------------
    def to_proto(self, proto=None, write_diff=False):
        from .io.protobinary import array_to_blobproto
        return array_to_blobproto(self.cpu_data(), self.cpu_diff() if write_diff else None,
                                  proto)

    def from_proto(self, proto, reshape=True):
        from .io.protobinary import blobproto_to_array, blobproto_shape
        shape = blobproto_shape(proto)
        if reshape:
            self.reshape(shape)
        elif _count(shape) != self.count:
            raise ValueError(f"blob proto shape {shape} does not fit blob shape {tuple(self.shape)}")
        self.data = blobproto_to_array(proto).reshape(self._shape)
        if len(proto.diff) or len(proto.double_diff):
            self.diff = blobproto_to_array(proto, diff=True).reshape(self._shape)

    def __repr__(self):
        where = ", device" if self._dm is not None else ""
        return f"Blob(shape={tuple(self._shape)}, dtype={self.dtype.name}{where})"


def move_blobs(blobs, xp):
    """Move the storage of ``blobs`` to array module ``xp`` (NumPy or the device module),
    keeping their values, and keeping blobs that shared a buffer sharing it."""
    moved = {}

    def move(buf, mirror, count):
        key = id(buf)
        if key not in moved:
            if mirror is not None:
                mirror.settle(count)
            host = backend.to_numpy(buf)
            new = xp.asarray(host) if xp is not np else np.array(host)
            moved[key] = (new, None if xp is np else _Mirror(new), buf)  # keeps buf alive
        return moved[key][:2]

    seen = set()
    for b in blobs:
        if id(b) in seen or b._data_buf is None:
            continue
        seen.add(id(b))
        if b._mod is xp:
            continue
        b._data_buf, b._dm = move(b._data_buf, b._dm, b._count)
        b._data = b._data_buf[:b._count].reshape(b._shape)
        if b._diff_buf is not None:
            b._diff_buf, b._gm = move(b._diff_buf, b._gm, b._count)
            if b._diff is not None:
                b._diff = b._diff_buf[:b._count].reshape(b._shape)
        b._mod = xp

"""The NCCL communicator (``cupy.cuda.nccl``): all-reduce and broadcast of device buffers on
a dedicated stream, for one process per GPU on one machine (``--gpu 0,1``; see ``launcher``).

An operation waits on the compute stream (the gradients must be written first) and records
an event that ``wait`` polls against the watchdog's deadline; the compute stream then waits
on that event. NumPy buffers (test results, checksums) go through a device copy.
"""
import numpy as np

from .communicator import Communicator


def _nccl():
    from cupy.cuda import nccl  # optional: only a multi-GPU run gets here
    return nccl


def new_uid():
    """A fresh NCCL unique id, as a tuple of ints (pycaffe's ``caffe.NCCL.new_uid()``)."""
    return tuple(_nccl().get_unique_id())


def uid_to_text(uid):
    return ",".join(str(int(b)) for b in uid)


def uid_from_text(text):
    return tuple(int(b) for b in text.split(","))


class _Pending:
    def __init__(self, array, event, host=None):
        self.array, self.event, self.host = array, event, host


class NCCLCommunicator(Communicator):
    backend = "nccl"

    def __init__(self, size, rank, uid, timeout=None):
        import cupy as cp
        nccl = _nccl()
        super().__init__(rank, size, timeout)
        self._cp = cp
        uid = uid_from_text(uid) if isinstance(uid, str) else tuple(uid)
        self._comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._stream = cp.cuda.Stream(non_blocking=True)
        self._ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX}
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64,
                       np.dtype(np.int64): nccl.NCCL_INT64,
                       np.dtype(np.int32): nccl.NCCL_INT32}

    def _launch(self, array, run):
        cp = self._cp
        host = None
        if isinstance(array, np.ndarray):
            host, array = array, cp.asarray(array)
        self._stream.wait_event(cp.cuda.get_current_stream().record())
        with self._stream:
            run(array, self._types[np.dtype(array.dtype)])
        return _Pending(array, self._stream.record(), host)

    def iallreduce(self, array, op="sum"):
        return self._launch(array, lambda a, t: self._comm.allReduce(
            a.data.ptr, a.data.ptr, a.size, t, self._ops[op], self._stream.ptr))

    def ibcast(self, array, root=0):
        return self._launch(array, lambda a, t: self._comm.bcast(
            a.data.ptr, a.size, t, root, self._stream.ptr))

    def _done(self, handle):
        return handle.event.done

    def _complete(self, handle):
        self._cp.cuda.get_current_stream().wait_event(handle.event)
        if handle.host is not None:
            handle.host[...] = handle.array.get()

    def _abort_group(self, code):
        # The launcher sees this rank exit and ends the others.
        self._comm.abort()

"""The MPI communicator (mpi4py): non-blocking ``Iallreduce``/``Ibcast`` on host buffers.

CuPy arrays are staged through host copies (an MPI here is not assumed CUDA-aware); the GPU
path on one machine is NCCL (``nccl_comm``). ``abort`` is ``MPI_Abort`` on COMM_WORLD, which
makes the launcher (mpiexec) end every rank.
"""
import numpy as np

from .communicator import Communicator


def _mpi():
    from mpi4py import MPI  # optional: only a run under mpirun gets here
    return MPI


class _Staged:
    """A device array reduced through a host copy."""

    def __init__(self, device, host, request):
        self.device, self.host, self.request = device, host, request


class MPICommunicator(Communicator):
    backend = "mpi"

    def __init__(self, timeout=None):
        MPI = _mpi()
        self._comm = MPI.COMM_WORLD
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX}
        super().__init__(self._comm.Get_rank(), self._comm.Get_size(), timeout)

    @staticmethod
    def _host(array):
        return array if isinstance(array, np.ndarray) else None

    def iallreduce(self, array, op="sum"):
        host = self._host(array)
        if host is None:
            host = array.get()
            return _Staged(array, host, self._comm.Iallreduce(_mpi().IN_PLACE, host,
                                                             self._ops[op]))
        return self._comm.Iallreduce(_mpi().IN_PLACE, host, self._ops[op])

    def ibcast(self, array, root=0):
        host = self._host(array)
        if host is None:
            host = array.get()
            return _Staged(array, host, self._comm.Ibcast(host, root))
        return self._comm.Ibcast(host, root)

    def _done(self, handle):
        request = handle.request if isinstance(handle, _Staged) else handle
        return request.Test()

    def _complete(self, handle):
        if isinstance(handle, _Staged):
            handle.device.set(handle.host)

    def _abort_group(self, code):
        self._comm.Abort(code)

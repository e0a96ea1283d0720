"""The communicator interface every backend (MPI, NCCL) gives the data-parallel code, and
the watchdog that keeps a dead or hung rank from hanging the others.

Collectives are started (``iallreduce``) and waited (``wait``); every wait polls with a
deadline (``MINICAFFE_COMM_TIMEOUT`` seconds, default 300) and, past it, ends the whole run
through ``abort`` with a message naming the rank and the operation: a run never hangs
silently. Buffers are reduced in place; ``op`` is "sum" or "max".
"""
import os
import sys
import time

DEFAULT_TIMEOUT_S = 300.0
ABORT_PAUSE_S = 0.5


def timeout_from_environment():
    return float(os.environ.get("MINICAFFE_COMM_TIMEOUT", DEFAULT_TIMEOUT_S))


class Communicator:
    """A group of ``size`` processes; this one is ``rank``."""
    backend = "none"

    def __init__(self, rank, size, timeout=None):
        self.rank, self.size = int(rank), int(size)
        self.timeout = timeout_from_environment() if timeout is None else float(timeout)

    # -- what a backend provides -------------------------------------------------------------
    def iallreduce(self, array, op="sum"):
        """Start reducing ``array`` in place over all ranks; returns a handle for ``wait``."""
        raise NotImplementedError

    def _done(self, handle):
        """True once the operation of ``handle`` completed (never blocks)."""
        raise NotImplementedError

    def _complete(self, handle):
        """After ``_done``: make the result visible in the array handed in."""

    def ibcast(self, array, root=0):
        raise NotImplementedError

    def _abort_group(self, code):
        raise NotImplementedError

    # -- built on them -----------------------------------------------------------------------
    def wait(self, handle, what="allreduce"):
        """Wait for ``handle``, past the timeout abort the run (a rank died or hangs)."""
        deadline = time.monotonic() + self.timeout
        delay = 0.0
        while not self._done(handle):
            if time.monotonic() > deadline:
                self.abort(f"{what} did not complete within {self.timeout:g} s: another rank "
                           "died or hangs (MINICAFFE_COMM_TIMEOUT sets the limit)")
            time.sleep(delay)
            delay = min(delay * 2 or 1e-5, 1e-3)   # short at first: most waits end quickly
        self._complete(handle)

    def progress(self, handles):
        """Let started operations advance (MPI progresses only inside MPI calls)."""
        for h in handles:
            self._done(h)

    def allreduce(self, array, op="sum", what="allreduce"):
        self.wait(self.iallreduce(array, op), what)
        return array

    def bcast(self, array, root=0, what="broadcast"):
        self.wait(self.ibcast(array, root), what)
        return array

    def abort(self, message, code=1):
        """End every rank of the run now, with ``message`` on this rank's stderr."""
        sys.stderr.write(f"minicaffe: error: rank {self.rank} of {self.size}: {message}\n")
        sys.stderr.flush()
        time.sleep(ABORT_PAUSE_S)   # lets the launcher forward the message before it kills
        self._abort_group(code)
        os._exit(code)  # the backend's abort returned (it should not): end this rank at least

    def __repr__(self):
        return f"<{type(self).__name__} rank {self.rank} of {self.size}>"

"""Data-parallel training of one Solver per rank (Caffe's multi-GPU / Horovod scheme).

``DataParallel(solver, comm)`` is a solver callback (``solver.add_callback(dp)``):

* ``broadcast_params()`` copies rank 0's weights (and solver history) to every rank;
* during backward the gradient buckets are all-reduced as soon as their layers are done
  (``buckets``, ``backward_hooks``); ``on_gradients_ready`` waits for them and leaves the
  averaged gradients in the diffs, so every rank applies the same update and the weights
  stay bit-identical. ``check_every`` N > 0 verifies that every N iterations (an allreduce of
  a CRC of the weights) and stops the run where they differ;
* the signal action (stop, snapshot) is rank 0's, broadcast once per iteration, so all
  ranks stop or snapshot at the same iteration (a request during a test acts after it);
* as the solver's ``parallel`` it splits the test passes over the ranks (``local_iters``)
  and sums their results (``reduce_test``).
"""
import time
import zlib

import numpy as np

from .. import backend
from ..errors import MiniCaffeError
from . import sync_bn
from .backward_hooks import AfterBackward
from .buckets import DEFAULT_BUCKET_BYTES, GradientBuckets

ACTIONS = ("none", "stop", "snapshot")


class DataParallel:
    def __init__(self, solver, comm, bucket_bytes=DEFAULT_BUCKET_BYTES, check_every=0,
                 sync_batch_norm=False, layer_wise=True):
        self.solver, self.comm = solver, comm
        self.check_every = int(check_every)
        if sync_batch_norm:
            sync_bn.enable(solver.net, comm)
        self.buckets = GradientBuckets(solver.net, comm, bucket_bytes)
        self.hooks = AfterBackward(solver.net, self.buckets.layer_done,
                                   solver.param.iter_size) if layer_wise else None
        self._source = solver.action_function
        self._action = "none"
        if self._source is not None:
            solver.action_function = self._take_action
        solver.parallel = self
        self.iterations = 0

    # -- weights ----------------------------------------------------------------------------
    def _state_arrays(self):
        arrays = [b.xdata for blobs in self.solver.net.params.values() for b in blobs]
        return arrays + list(getattr(self.solver, "history", []))

    def broadcast_params(self):
        """Every rank starts from rank 0's weights and solver history."""
        for a in self._state_arrays():
            self.comm.bcast(a, what="initial weight broadcast")

    def checksum(self):
        crc = 0
        for blob, _ in self.solver.net.learnable_params:
            crc = zlib.crc32(np.ascontiguousarray(backend.to_numpy(blob.xdata)).view(np.uint8),
                             crc)
        return crc

    def check_weights(self):
        """Raise on every rank when the ranks' weights are not bit-identical."""
        c = float(self.checksum())
        both = self.comm.allreduce(np.array([c, -c]), op="max", what="weight checksum")
        if both[0] != -both[1]:
            raise MiniCaffeError(f"iteration {self.solver.iter}: the weights differ between "
                                 "ranks (checksums disagree); the ranks' updates diverged")

    # -- solver callback --------------------------------------------------------------------
    def on_start(self):
        if self._source is not None:
            code = np.array([ACTIONS.index(self._source()) if self.comm.rank == 0 else 0])
            self._action = ACTIONS[int(self.comm.bcast(code, what="signal action")[0])]
        self.buckets.reset()
        if self.hooks is not None:
            self.hooks.reset()

    def on_gradients_ready(self):
        self.buckets.finish(time.perf_counter)
        self.iterations += 1
        if self.check_every and self.iterations % self.check_every == 0:
            self.check_weights()

    def _take_action(self):
        action, self._action = self._action, "none"
        return action

    # -- test passes ------------------------------------------------------------------------
    def local_iters(self, n_iter):
        """How many of the ``n_iter`` test passes this rank runs (passes rank, rank+K, ...)."""
        return len(range(self.comm.rank, n_iter, self.comm.size))

    def reduce_test(self, tnet, sums, loss):
        """(sums over all ranks' passes, loss sum over all ranks) of a test."""
        sizes = [tnet.blobs[n].count for n in tnet.outputs]
        flat = np.zeros(1 + sum(sizes))
        flat[0] = loss
        if sums is not None:
            flat[1:] = np.concatenate([np.asarray(s, np.float64).ravel() for s in sums])
        self.comm.allreduce(flat, what="test results")
        out, off = [], 1
        for n in sizes:
            out.append(flat[off:off + n])
            off += n
        return out, float(flat[0])

    # -- figures for the benchmark ----------------------------------------------------------
    @property
    def bytes_per_iteration(self):
        return self.buckets.nbytes

    @property
    def comm_seconds(self):
        return self.buckets.comm_seconds

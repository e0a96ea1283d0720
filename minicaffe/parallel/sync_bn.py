"""Synchronised batch normalisation (SyncBN) for data-parallel training.

By default each rank's BatchNorm normalises with the statistics of its own batch (B/K
samples), as Caffe's multi-GPU training does, and keeps its own running averages (rank 0's
are the ones snapshotted). With SyncBN (``MINICAFFE_SYNC_BN=1``) the training-phase
statistics are those of the whole K x B/K batch: forward all-reduces each channel's sum and
sum of squares (and the sample count), backward the sums of dy and dy * (x - mean). A net
with BatchNorm then follows the single-process batch-B trajectory.

Cost: two blocking all-reduces of 2C float64 values per BatchNorm layer and iteration. They
are latency-bound (a few hundred bytes): on MPI over shared memory some microseconds each,
over Ethernet tens of microseconds (2 x layers x latency per iteration), and they serialise
forward and backward with the other ranks.

The layers are switched in place (``enable``): the instance keeps its name, blobs and
parameter entries, so snapshots stay plain BatchNorm layers that Caffe reads.
"""
import numpy as np

from ..layers.batch_norm import BatchNormLayer
from ..layers.scratch import reuse


class SyncBatchNormLayer(BatchNormLayer):
    """BatchNorm whose training statistics are reduced over ``sync_comm``."""
    sync_comm = None

    def forward(self, bottom, top):
        if self.use_global_stats or self._bc.count == 0:
            return super().forward(bottom, top)
        bc, xp = self._bc, self._bc.xp
        X, Y = bc.view(bottom[0].xdata), bc.view(top[0].xdata)
        local_m = bc.outer * bc.inner
        stats = xp.concatenate([bc.sum(X).astype(np.float64), bc.dot(X, X).astype(np.float64),
                                xp.full(1, float(local_m))])
        self.sync_comm.allreduce(stats, what=f"SyncBN statistics of '{self.name}'")
        C = bc.dim
        m = float(stats[2 * C])
        mean = stats[:C] / m
        var = xp.maximum(stats[C:2 * C] / m - mean * mean, 0.0)
        self._centered = cen = reuse(self._centered, bc.shape, bottom[0].xdata)
        xp.subtract(X, bc.vec(mean, 0), out=cen)
        self._update_moving_average(mean, var, m)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        self._inv_std_b = bc.vec(inv_std, 1)
        xp.multiply(cen, self._inv_std_b, out=Y)
        self._inv_std, self._m = inv_std, m
        self._last_global, self._last_fused, self._last_compiled = False, False, False

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or self._bc.count == 0 or self._last_global is not False:
            return super().backward(top, propagate_down, bottom)
        bc, xp = self._bc, self._bc.xp
        dy, dx = bc.view(top[0].xdiff), bc.view(bottom[0].xdiff)
        cen, inv_std, C = self._centered, self._inv_std, bc.dim
        sums = xp.concatenate([bc.sum(dy).astype(np.float64),
                               bc.dot(dy, cen).astype(np.float64)])
        self.sync_comm.allreduce(sums, what=f"SyncBN gradients of '{self.name}'")
        # dx = inv_std * (dy - mean(dy)) - c * inv_std^3 * mean(dy * c), means over all ranks
        mean_dy = sums[:C] / self._m
        k = sums[C:] * (inv_std ** 3 / self._m)
        tmp = xp.empty(bc.shape, dtype=cen.dtype)
        xp.multiply(cen, bc.vec(k, 2), out=tmp)
        xp.subtract(dy, bc.vec(mean_dy, 0), out=dx)
        xp.multiply(dx, self._inv_std_b, out=dx)
        xp.subtract(dx, tmp, out=dx)


def enable(net, comm):
    """Make the BatchNorm layers of ``net`` synchronise over ``comm``; returns how many."""
    n = 0
    for layer in net.layers:
        if type(layer) is BatchNormLayer:
            layer.__class__ = SyncBatchNormLayer
            layer.sync_comm = comm
            n += 1
    return n

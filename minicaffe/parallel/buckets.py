"""Gradient buckets: the learnable parameters grouped, in the order backward finishes them,
into flat buffers of about ``bucket_bytes`` that are all-reduced as soon as they are ready.

A parameter's gradient is final once backward has run the lowest-indexed layer that holds
it (a shared parameter collects from every layer naming it). Backward visits layers from the
last to the first, so after layer ``li`` every bucket whose parameters all sit at ``li`` or
later can start (``layer_done``); ``finish`` starts what is left, waits for all, divides by
the number of ranks (gradients are averaged, as Caffe's multi-GPU solvers) and copies back.

Parameters with ``lr_mult`` 0 are left out: their update is zero whatever their gradient.
"""
from .. import backend

DEFAULT_BUCKET_BYTES = 4 << 20


class Bucket:
    def __init__(self, blobs, ready_layer):
        self.blobs = blobs
        self.ready_layer = ready_layer
        xp = backend.get_array_module(blobs[0].xdiff)
        self.flat = xp.empty(sum(b.count for b in blobs), dtype=blobs[0].xdiff.dtype)
        self.handle = None

    @property
    def nbytes(self):
        return self.flat.nbytes

    def gather(self):
        off = 0
        for b in self.blobs:
            self.flat[off:off + b.count] = b.xdiff.reshape(-1)
            off += b.count

    def scatter(self, scale):
        self.flat *= self.flat.dtype.type(scale)
        off = 0
        for b in self.blobs:
            b.xdiff[...] = self.flat[off:off + b.count].reshape(b.xdiff.shape)
            off += b.count


def ready_layers(net):
    """[(blob, index of the layer after whose backward its gradient is final)] for the
    learnable blobs with a nonzero lr_mult; a blob no layer back-propagates into counts as
    ready from the start (index +inf)."""
    params = net._params   # the net's parameter table: which layer holds which blob
    need = [net.layer_need_backward(i) for i in range(len(net.layers))]
    ready = {}
    for j, ((li, _), owner) in enumerate(zip(params.layer_indices, params.owner)):
        root = j if owner < 0 else owner
        at = li if need[li] else float("inf")
        ready[root] = min(ready.get(root, float("inf")), at)
    return [(params.blobs[j], ready[j]) for j, (spec, owner)
            in enumerate(zip(params.specs, params.owner))
            if owner < 0 and spec.lr_mult != 0 and params.blobs[j].count]


class GradientBuckets:
    def __init__(self, net, comm, bucket_bytes=DEFAULT_BUCKET_BYTES):
        self.comm = comm
        order = sorted(ready_layers(net), key=lambda e: -e[1])
        self.buckets = []
        blobs, size = [], 0
        for i, (blob, at) in enumerate(order):
            blobs.append(blob)
            size += blob.xdiff.nbytes
            nxt = order[i + 1][0] if i + 1 < len(order) else None
            if nxt is None or size >= bucket_bytes or nxt.xdiff.dtype != blob.xdiff.dtype:
                self.buckets.append(Bucket(blobs, at))   # ``at`` is the bucket's lowest
                blobs, size = [], 0
        self._next = 0
        self.comm_seconds = 0.0

    @property
    def nbytes(self):
        """Bytes all-reduced per iteration."""
        return sum(b.nbytes for b in self.buckets)

    def reset(self):
        self._next = 0

    def _start(self, bucket):
        bucket.gather()
        bucket.handle = self.comm.iallreduce(bucket.flat)

    def layer_done(self, li):
        """Backward has run layer ``li``: start the buckets that are complete now."""
        while self._next < len(self.buckets) and self.buckets[self._next].ready_layer >= li:
            self._start(self.buckets[self._next])
            self._next += 1
        self.comm.progress([b.handle for b in self.buckets[:self._next]])

    def finish(self, timer):
        """Start what backward did not, wait for all, average and copy back; the time spent
        waiting is added to ``comm_seconds``."""
        while self._next < len(self.buckets):
            self._start(self.buckets[self._next])
            self._next += 1
        start = timer()
        for b in self.buckets:
            self.comm.wait(b.handle, f"gradient allreduce ({b.nbytes} bytes)")
            b.handle = None
        self.comm_seconds += timer() - start
        scale = 1.0 / self.comm.size
        for b in self.buckets:
            b.scatter(scale)

"""Which records a rank reads: record i of a data layer's sequence (LMDB order, image list,
HDF5 rows, wrapping around at the end as the layers do) goes to rank i % K, as Caffe's
parallel readers. Every rank walks the same sequence, so the shards are disjoint and
together see every record once per epoch (when the layers' random generators agree, which
the parallel launch ensures by seeding every rank alike)."""
from . import world


class RecordStride:
    """Takes every ``count``-th record starting at ``rank`` from a sequence read by
    ``advance()``; with one rank it is the sequence itself."""

    def __init__(self, rank=0, count=1):
        self.rank, self.count = int(rank), int(count)
        self._skip = self.rank

    def next(self, advance):
        for _ in range(self._skip):
            advance()
        self._skip = self.count - 1
        return advance()


def record_stride():
    """The stride of this process in the current run (``world``'s solver count and rank)."""
    return RecordStride(world.solver_rank(), world.solver_count())

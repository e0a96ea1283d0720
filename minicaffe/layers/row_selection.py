"""Layers that pick rows of the batch (axis 0) and scatter their gradient back.

* Filter: bottoms x_1..x_K and a selector s (the last bottom, shape (N, 1, ...)); top k holds
  the rows i of x_k (along axis 0) with s[i] != 0, in order. Backward copies the top diff
  back to those rows and zeroes the others. K tops for K + 1 bottoms. As in Caffe, the
  reshape done at setup (before any selector data exists) gives the tops all N rows; every
  later reshape reads the selector. The selector gets no gradient: a selector blob that
  needs one is an error, as in Caffe; ``force_backward`` leaves the selector out (where
  Caffe would abort).
* BatchReindex: top[i] = bottom0[bottom1[i]] along the first axis; backward sums the rows back.
"""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register, shape_text


def scatter_add_rows(xp, dst, idx, src):
    """dst[idx[i]] += src[i] for every i, repeated indices accumulating."""
    at = getattr(xp.add, "at", None)
    if at is not None:
        at(dst, idx, src)
    else:  # older CuPy: ufunc.at missing
        import cupyx
        cupyx.scatter_add(dst, idx, src)


@register("Filter")
class FilterLayer(Layer):
    min_num_bottom = 2
    min_num_top = 1

    def layer_setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            self.fail(f"needs one top per filtered bottom (bottoms minus the selector): "
                      f"{len(bottom)} bottoms need {len(bottom) - 1} tops, got {len(top)}")
        self.refuse_in_place(bottom, top)
        self._selector = len(bottom) - 1
        self._first_reshape = True
        self.indices = None

    def allow_force_backward(self, bottom_index):
        # force_backward never asks for the selector's gradient (Caffe would abort there).
        return bottom_index != self._selector

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        sel = bottom[-1]
        if sel.num_axes < 1:
            self.fail("the selector (last bottom) needs at least one axis", ShapeError)
        if any(s != 1 for s in sel.shape[1:]):
            self.fail(f"selector (last bottom) dimensions must be singletons (1) except the "
                      f"first; got shape {shape_text(sel.shape)}", ShapeError)
        n = sel.shape[0]
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes < 1 or b.shape[0] != n:
                self.fail(f"each bottom needs the selector's first dimension: bottom {i} has "
                          f"shape {shape_text(b.shape)}, the selector {shape_text(sel.shape)}",
                          ShapeError)
        xp = sel.xp
        self.indices = xp.flatnonzero(sel.xdata.reshape(-1))
        num = int(self.indices.size)
        if self._first_reshape:        # no selector data yet at setup: all rows (Caffe)
            num = bottom[0].shape[0]
            self._first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((num,) + tuple(b.shape[1:]))

    def forward(self, bottom, top):
        idx = self.indices
        for t, b in zip(top, bottom):
            shape = (int(idx.size),) + tuple(b.shape[1:])
            if tuple(t.shape) != shape:     # forward right after setup, without a reshape
                t.reshape(shape)
            b.xp.take(b.xdata, idx, axis=0, out=t.xdata)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            self.fail("cannot backpropagate to the selector (last bottom); the blob feeding it "
                      "must not need a gradient")
        idx = self.indices
        for i, (t, b) in enumerate(zip(top, bottom)):
            if not propagate_down[i]:
                continue
            dx = b.xdiff
            dx[...] = 0
            if idx.size:
                dx[idx] = t.xdiff


@register("BatchReindex")
class BatchReindexLayer(Layer):
    """top[i] = bottom0[int(bottom1[i])]; bottom 1 is a 1-D blob of indices into bottom 0's
    first axis. Gradient only to bottom 0 (rows picked several times accumulate)."""
    exact_num_bottom = 2
    exact_num_top = 1

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        data, index = bottom
        if index.num_axes != 1:
            self.fail(f"the index bottom must be 1-D, got shape {shape_text(index.shape)}",
                      ShapeError)
        if data.num_axes < 1:
            self.fail("the data bottom needs at least one axis", ShapeError)
        top[0].reshape((index.shape[0],) + tuple(data.shape[1:]))

    def _indices(self, bottom):
        xp = bottom[1].xp
        r = bottom[1].xdata
        n = bottom[0].shape[0]
        bad = (r < 0) | (r >= n)
        if r.size and bool(bad.any()):
            first = float(r[int(xp.argmax(bad))])
            self.fail(f"index {first:g} is out of range for a batch of {n} "
                      f"(bottom shape {shape_text(bottom[0].shape)})")
        return r.astype(np.int64)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        idx = self._indices(bottom)
        k = idx.shape[0]
        if top[0].count == 0:
            return
        x = bottom[0].xdata.reshape(bottom[0].shape[0], -1)
        xp.take(x, idx, axis=0, out=top[0].xdata.reshape(k, -1))

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            self.fail("cannot backpropagate to the index bottom")
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        n = bottom[0].shape[0]
        dx = bottom[0].xdiff.reshape(n, -1) if n else bottom[0].xdiff
        dx[...] = 0
        if top[0].count == 0:
            return
        idx = self._indices(bottom)
        scatter_add_rows(xp, dx, idx, top[0].xdiff.reshape(idx.shape[0], -1))

"""STOCHASTIC pooling: Caffe's GPU kernels (StoPoolForwardTrain, StoPoolForwardTest,
StoPoolBackward in pooling_layer.cu) as array code over the kernel offsets, NumPy or CuPy.

Windows ignore padding (Caffe refuses pad for STOCHASTIC) and are clipped to the image:
rows [ph*sh, min(ph*sh + kh, H)), columns likewise. Inputs are meant to be non-negative
(after a ReLU), so that a window's pixels weighted by value form a distribution.

    TRAIN: u ~ U(0, 1] per output; the output is the first pixel, in row-major window order,
           whose running sum reaches u * (window sum), and backward sends the output's
           gradient to that pixel only (adding up where windows overlap).
    TEST:  y = sum(x^2) / (FLT_MIN + sum(x)), the probability-weighted mean (0 for an
           all-zero window). Caffe has no TEST backward.

The running sums are taken offset by offset in the window's scan order, one float add over
all windows at a time, so they round as Caffe's per-window loop does: the last running sum is
bit for bit the window sum that scaled u, and a window with a positive sum always finds its
pixel.
"""
import numpy as np

from .. import backend
from ..backend import get_array_module
from .scratch import reuse

FLT_MIN = float(np.finfo(np.float32).tiny)   # Caffe's TEST denominator starts here, not at 0


def draw_unit_interval(xp, shape, dtype):
    """u in (0, 1], curand's range, from minicaffe's seeded sources. Excluding 0 keeps a
    threshold of 0 (which the window's first pixel meets even when it is 0) to all-zero
    windows."""
    if xp is np:
        u = backend.rng().random(shape, dtype=np.float32)
    else:
        u = xp.random.random_sample(shape, dtype=xp.float32)
    return xp.subtract(1, u, dtype=dtype)


class StochasticPooling:
    """The arithmetic of one Pooling layer with pool: STOCHASTIC. ``offsets`` are the layer's
    kernel offsets ``(k, out, inp)``: slices of the top and of the bottom where offset k
    (row-major in the window) of those outputs' windows lies inside the image."""

    def __init__(self):
        self.pick = None       # TRAIN: int32 offset k chosen by each output, -1 for none
        self._in_shape = None
        self._sum = None
        self._run = None
        self._hit = None
        self._free = None
        self._tmp = None

    def forward(self, x, y, offsets, train):
        if train:
            self._forward_train(x, y, offsets)
        else:
            self._forward_test(x, y, offsets)

    def _forward_train(self, x, y, offsets):
        xp = get_array_module(x)
        total = self._sum = reuse(self._sum, y.shape, y)
        total[...] = 0
        for k, out, inp in offsets:
            total[out] += x[inp]
        thres = draw_unit_interval(xp, y.shape, y.dtype)
        thres *= total
        run = self._run = reuse(self._run, y.shape, y)
        hit = self._hit = reuse(self._hit, y.shape, y, np.bool_)
        free = self._free = reuse(self._free, y.shape, y, np.bool_)
        pick = self.pick = reuse(self.pick, y.shape, y, np.int32)
        run[...] = 0
        free[...] = True
        pick[...] = -1
        # A window no offset reaches (stride beyond the kernel) keeps 0; so does one whose
        # running sum never meets the threshold (negative inputs only), where Caffe's kernel
        # writes nothing at all.
        y[...] = 0
        for k, out, inp in offsets:
            run[out] += x[inp]
            h, f = hit[out], free[out]
            xp.greater_equal(run[out], thres[out], out=h)
            h &= f
            f ^= h
            xp.copyto(pick[out], k, where=h)
            xp.copyto(y[out], x[inp], where=h)
        self._in_shape = x.shape

    def _forward_test(self, x, y, offsets):
        xp = get_array_module(x)
        total = self._sum = reuse(self._sum, y.shape, y)
        square = self._tmp = reuse(self._tmp, y.shape, y)
        total[...] = FLT_MIN
        y[...] = 0
        for k, out, inp in offsets:
            total[out] += x[inp]
            y[out] += xp.multiply(x[inp], x[inp], out=square[out])
        xp.divide(y, total, out=y)

    def backward(self, dy, dx, offsets):
        """dx = the top diff at each output's chosen pixel (summed over overlapping windows)."""
        xp = get_array_module(dx)
        hit = self._hit
        share = self._tmp = reuse(self._tmp, dy.shape, dy)
        dx[...] = 0
        for k, out, inp in offsets:
            xp.equal(self.pick[out], k, out=hit[out])
            dx[inp] += xp.multiply(dy[out], hit[out], out=share[out])

    def rand_idx(self, kernel, stride):
        """Caffe's ``rand_idx_`` after a TRAIN forward: for each output, the flat index into the
        bottom blob of its chosen pixel (int64; -1 where none was chosen)."""
        xp = get_array_module(self.pick)
        n, c, h, w = self._in_shape
        ph, pw = self.pick.shape[2:]
        i, j = xp.divmod(self.pick.astype(np.int64), kernel[1])
        rows = xp.arange(ph, dtype=np.int64)[:, None] * stride[0] + i
        cols = xp.arange(pw, dtype=np.int64)[None, :] * stride[1] + j
        planes = xp.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1)
        return xp.where(self.pick >= 0, (planes * h + rows) * w + cols, -1)

"""BatchNorm kernels (numba, CPU) over arrays viewed as (outer, dim, inner): N, C, H*W.

One channel per parallel task; sums accumulate in float64 in a fixed order, so results do
not depend on the thread count and in-place equals out-of-place bit for bit.

* ``stats(x3, mean, var)``: per-channel mean and biased variance (float64 outputs), the
  variance from the centred values (a second pass over a channel that is still in cache);
* ``normalize(x3, mean, inv_std, cen3, y3)``: cen = x - mean (when ``cen3`` is given) and
  y = (x - mean) * inv_std in one pass (y may be x: in place);
* ``backward(dy3, cen3, inv_std, dx3)``: with m = outer*inner,
  dx = inv_std * (dy - mean(dy)) - cen * inv_std^3 * mean(dy * cen), two passes per channel
  (dx may be dy).

Why compiled: NumPy needs four or five passes over the activation for each of these, three
of them on one core; here it is two passes on every core.
"""
import numba
import numpy as np


# reassoc: lets the float64 sums vectorise (a single running sum waits ~4 cycles per add); the
# order is still fixed by the compiled code, so results repeat exactly.
@numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
def stats(x3, mean, var):
    outer, dim, inner = x3.shape
    m = outer * inner
    for c in numba.prange(dim):
        s = 0.0
        for n in range(outer):
            for i in range(inner):
                s += x3[n, c, i]
        mu = s / m
        ss = 0.0
        for n in range(outer):
            for i in range(inner):
                d = x3[n, c, i] - mu
                ss += d * d
        mean[c] = mu
        var[c] = ss / m


@numba.njit(parallel=True, cache=True, nogil=True)
def _normalize(x3, mean, inv_std, cen3, y3, keep):
    outer, dim, inner = x3.shape
    for c in numba.prange(dim):
        mu = x3.dtype.type(mean[c])
        k = y3.dtype.type(inv_std[c])
        for n in range(outer):
            for i in range(inner):
                d = x3[n, c, i] - mu
                if keep:
                    cen3[n, c, i] = d
                y3[n, c, i] = d * k


def normalize(x3, mean, inv_std, cen3, y3):
    _normalize(x3, mean, inv_std, y3 if cen3 is None else cen3, y3, cen3 is not None)


@numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"})
def backward(dy3, cen3, inv_std, dx3):
    outer, dim, inner = dy3.shape
    m = outer * inner
    for c in numba.prange(dim):
        sdy = 0.0
        sdc = 0.0
        for n in range(outer):
            for i in range(inner):
                g = np.float64(dy3[n, c, i])
                sdy += g
                sdc += g * cen3[n, c, i]
        s = inv_std[c]
        mean_dy = dx3.dtype.type(sdy / m)
        k = dx3.dtype.type(sdc / m * s * s * s)
        s = dx3.dtype.type(s)
        for n in range(outer):
            for i in range(inner):
                dx3[n, c, i] = (dy3[n, c, i] - mean_dy) * s - cen3[n, c, i] * k

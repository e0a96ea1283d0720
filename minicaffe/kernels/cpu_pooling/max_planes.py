"""MAX pooling over a whole plane at a time: forward through the plane buffer (``planes``),
backward through the flat plane.

Each window row's first strict maximum and its column come first, for all windows of the
plane in one loop, then the kh rows of each window are combined in row order (a later row's
maximum wins only when strictly greater): the same first strict maximum in row-major order
as the one-window loops. The buffer pads with NaN, which never wins.
"""
import numba
import numpy as np

from .direct import FLT_MAX, dims
from .planes import fill, flat_dims, layout, row_offset


@numba.njit(nogil=True, inline="always")
def _take(v, m, k, t):
    """The running first strict maximum m (at column k) after value v at column t."""
    g = v > m
    return (v if g else m), (t if g else k)


@numba.njit(nogil=True)
def _rows_max(buf, hm, hk, nq, kw, sw, lowest):
    """Each window's row part: first strict maximum and its column offset. Called with
    literal kw and sw: inlined by LLVM, the window unrolls and the loop over windows
    vectorizes."""
    for q in range(nq):
        jj = q * sw
        m = lowest
        k = np.int32(0)
        for t in range(kw):
            m, k = _take(buf[jj + t], m, k, np.int32(t))
        hm[q] = m
        hk[q] = k


@numba.njit(nogil=True)
def _rows_max_tail(buf, ov, hm, hk, rows, ws, ow_n, nfix, kw, sw, over, lowest):
    """Redo the last nfix windows of each buffer row, whose columns past ws are overhang."""
    for r in range(rows):
        for ow in range(ow_n - nfix, ow_n):
            m = lowest
            k = np.int32(0)
            for t in range(kw):
                col = ow * sw + t
                v = buf[r * ws + col] if col < ws else ov[r * over + col - ws]
                m, k = _take(v, m, k, np.int32(t))
            hm[r * ow_n + ow] = m
            hk[r * ow_n + ow] = k


@numba.njit(nogil=True)
def _combine(parts_m, parts_k, nrows, abase, w, yp, ap, no, lowest):
    """Each window's maximum and argmax from the row parts of its first nrows rows (views of
    hm, hk), in row order. Called with literal nrows: the rows unroll and the loop over
    windows vectorizes. Indices are the loop's own (a view per row): an index that might be
    negative puts the load under numba's wraparound select, a masked vector load that cost
    ~20% of this kernel."""
    for t in range(no):
        m = parts_m[0][t]
        a = parts_k[0][t]
        for k in range(1, nrows):
            v = parts_m[k][t]
            c = np.int32(parts_k[k][t] + np.int32(k * w))
            g = v > m
            m = v if g else m
            a = c if g else a
        ab = np.int32(a + abase[t])
        yp[t] = m
        ap[t] = ab if m > lowest else np.int32(-1)


@numba.njit(nogil=True)
def _combine_any(hm, hk, kh, sh, ng, ow_n, abase, w, yp, ap, no, lowest):
    """``_combine`` for any kh: one pass over the windows per row, which vectorizes with kh
    unknown."""
    for t in range(no):
        yp[t] = lowest
        ap[t] = -1
    for k in range(kh):
        off = row_offset(k, sh, ng * ow_n, ow_n)
        kw_ = np.int32(k * w)
        for t in range(no):
            v = hm[off + t]
            m = yp[t]
            a = ap[t]
            c = np.int32(abase[t] + kw_ + hk[off + t])
            g = v > m
            yp[t] = v if g else m
            ap[t] = c if g else a


@numba.njit(parallel=True, cache=True, nogil=True)
def max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw):
    planes, h, w, oh_n, ow_n, y2 = flat_dims(x3, y3)
    a2 = argmax3.reshape(planes, oh_n * ow_n)
    lowest = x3.dtype.type(-FLT_MAX)
    no, ws, over, nfix, ng, gsz, ncopy, e0, e1, _ = layout(oh_n, ow_n, w, kh, kw, sh, sw, pw)
    rows = sh * ng
    nq = rows * ow_n
    abase = np.empty(no, np.int32)      # flat index of each window's top-left pixel
    for oh in range(oh_n):
        for ow in range(ow_n):
            abase[oh * ow_n + ow] = (oh * sh - ph) * w + ow * sw - pw
    nchunk = min(planes, 256)
    for c in numba.prange(nchunk):
        buf = np.full(sh * gsz + kw, np.nan, x3.dtype)
        ov = np.full(rows * over + 1, np.nan, x3.dtype)
        hm = np.empty(nq, x3.dtype)
        hk = np.empty(nq, np.int32)
        o1 = row_offset(1, sh, ng * ow_n, ow_n)
        o2 = row_offset(2, sh, ng * ow_n, ow_n)
        parts_m = (hm[:no], hm[o1:o1 + no], hm[o2:o2 + no])
        parts_k = (hk[:no], hk[o1:o1 + no], hk[o2:o2 + no])
        for p in range(c * planes // nchunk, (c + 1) * planes // nchunk):
            fill(x3, p, buf, ov, h, sh, ph, pw, ng, gsz, ws, ncopy, e0, e1, over)
            yp = y2[p]
            ap = a2[p]
            if kw == 3 and sw == 2:
                _rows_max(buf, hm, hk, nq, 3, 2, lowest)
                for r in range(rows):       # the tail unrolled, as in ave_planes
                    o = r * ws + ws - 2
                    m, k = _take(buf[o], lowest, np.int32(0), np.int32(0))
                    m, k = _take(buf[o + 1], m, k, np.int32(1))
                    m, k = _take(ov[r], m, k, np.int32(2))
                    hm[(r + 1) * ow_n - 1] = m
                    hk[(r + 1) * ow_n - 1] = k
            elif kw == 2 and sw == 2:
                _rows_max(buf, hm, hk, nq, 2, 2, lowest)
            elif kw == 3 and sw == 1:
                _rows_max(buf, hm, hk, nq, 3, 1, lowest)
                _rows_max_tail(buf, ov, hm, hk, rows, ws, ow_n, 2, 3, 1, 2, lowest)
            else:
                _rows_max(buf, hm, hk, nq, kw, sw, lowest)
                if nfix > 0:
                    _rows_max_tail(buf, ov, hm, hk, rows, ws, ow_n, nfix, kw, sw, over,
                                   lowest)
            if kh == 3:
                _combine(parts_m, parts_k, 3, abase, w, yp, ap, no, lowest)
            elif kh == 2:
                _combine(parts_m, parts_k, 2, abase, w, yp, ap, no, lowest)
            else:
                _combine_any(hm, hk, kh, sh, ng, ow_n, abase, w, yp, ap, no, lowest)


@numba.njit(parallel=True, cache=True, nogil=True)
def max_backward(dy3, argmax3, dx3):
    """Each output's gradient added at its argmax in the flat plane."""
    planes, h, w, oh_n, ow_n = dims(dx3, dy3)
    zero = dx3.dtype.type(0)
    dx2 = dx3.reshape(planes, h * w)
    for p in numba.prange(planes):
        d = dx2[p]
        for q in range(h * w):
            d[q] = zero
        for oh in range(oh_n):
            for ow in range(ow_n):
                at = argmax3[p, oh, ow]
                if at >= 0:
                    d[at] += dy3[p, oh, ow]

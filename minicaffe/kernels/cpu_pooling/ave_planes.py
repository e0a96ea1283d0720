"""AVE pooling forward and backward over a whole plane at a time, through the plane buffer
(``planes``).

The buffer pads with 0 (adding +0.0 changes no sum: the sums start at +0.0 and so are never
-0.0). Forward adds each window's pixels in row-major order, as the one-window loops do;
backward adds each pixel's shares in output order, as they do, so results match bit for bit.
"""
import numba
import numpy as np

from .direct import span
from .planes import fill, flat_dims, layout, pool_sizes, row_offset


@numba.njit(nogil=True, error_model="numpy")
def _sums(rows, nrows, yp, pool, no, kw, sw, zero):
    """Window means from the first nrows of the buffer's ``rows`` (views from each window
    row's start), pixels in row-major order. Called with literal nrows, kw and sw: inlined by
    LLVM, the window unrolls and the loop vectorizes."""
    for t in range(no):
        a = zero
        for k in range(nrows):
            for c in range(kw):
                a += rows[k][t * sw + c]
        yp[t] = a / pool[t]


@numba.njit(nogil=True)
def _acc_rows(acc, src, no, sw):
    for t in range(no):
        acc[t] += src[t * sw]


@numba.njit(nogil=True, error_model="numpy")
def _sums_any(buf, acc, yp, pool, no, kh, kw, sh, sw, gsz, ws, zero):
    """``_sums`` for any window: one pass over the outputs per pixel of the window, which
    vectorizes with the window unknown."""
    for t in range(no):
        acc[t] = zero
    for k in range(kh):
        off = row_offset(k, sh, gsz, ws)
        for cc in range(kw):
            if sw == 1:
                _acc_rows(acc, buf[off + cc:], no, 1)
            elif sw == 2:
                _acc_rows(acc, buf[off + cc:], no, 2)
            else:
                _acc_rows(acc, buf[off + cc:], no, sw)
    for t in range(no):
        yp[t] = acc[t] / pool[t]


@numba.njit(nogil=True, error_model="numpy")
def _sum_tail(buf, ov, yp, pool, oh_n, ow_n, ng, ws, nfix, kh, kw, sh, sw, over, zero):
    """Redo the last nfix windows of each output row from the buffer and the overhang."""
    for oh in range(oh_n):
        for ow in range(ow_n - nfix, ow_n):
            a = zero
            for k in range(kh):
                r = (k % sh) * ng + oh + k // sh
                for c in range(kw):
                    col = ow * sw + c
                    a += buf[r * ws + col] if col < ws else ov[r * over + col - ws]
            yp[oh * ow_n + ow] = a / pool[oh * ow_n + ow]


@numba.njit(parallel=True, cache=True, nogil=True)
def ave_forward(x3, y3, kh, kw, sh, sw, ph, pw):
    planes, h, w, oh_n, ow_n, y2 = flat_dims(x3, y3)
    zero = x3.dtype.type(0)
    no, ws, over, nfix, ng, gsz, ncopy, e0, e1, _ = layout(oh_n, ow_n, w, kh, kw, sh, sw, pw)
    pool = pool_sizes(oh_n, ow_n, h, w, kh, kw, sh, sw, ph, pw, x3.dtype)
    o1 = row_offset(1, sh, gsz, ws)
    o2 = row_offset(2, sh, gsz, ws)
    nchunk = min(planes, 256)
    for c in numba.prange(nchunk):
        buf = np.zeros(sh * gsz + kw, x3.dtype)
        ov = np.zeros(sh * ng * over + 1, x3.dtype)
        acc = np.empty(no, x3.dtype)
        rows = (buf, buf[o1:], buf[o2:])
        for p in range(c * planes // nchunk, (c + 1) * planes // nchunk):
            fill(x3, p, buf, ov, h, sh, ph, pw, ng, gsz, ws, ncopy, e0, e1, over)
            yp = y2[p]
            if kh == 3 and kw == 3 and sw == 2:
                _sums(rows, 3, yp, pool, no, 3, 2, zero)
            elif kh == 3 and kw == 3 and sw == 1:
                _sums(rows, 3, yp, pool, no, 3, 1, zero)
            elif kh == 2 and kw == 2 and sw == 2:
                _sums(rows, 2, yp, pool, no, 2, 2, zero)
            else:
                _sums_any(buf, acc, yp, pool, no, kh, kw, sh, sw, gsz, ws, zero)
            if kh == 3 and kw == 3 and sh == 2 and sw == 2:
                # the example's windows, unrolled: _sum_tail's conditional loads cost ~15%
                for oh in range(oh_n):
                    b0 = oh * ws + ws - 2
                    b1 = gsz + b0
                    b2 = b0 + ws
                    a = zero + buf[b0]
                    a += buf[b0 + 1]
                    a += ov[oh]
                    a += buf[b1]
                    a += buf[b1 + 1]
                    a += ov[ng + oh]
                    a += buf[b2]
                    a += buf[b2 + 1]
                    a += ov[oh + 1]
                    t = (oh + 1) * ow_n - 1
                    yp[t] = a / pool[t]
            elif nfix > 0:
                _sum_tail(buf, ov, yp, pool, oh_n, ow_n, ng, ws, nfix, kh, kw, sh, sw, over,
                          zero)


@numba.njit(nogil=True)
def _spread_rows(d, part, no, sw):
    for t in range(no):
        d[t * sw] += part[t]


@numba.njit(parallel=True, cache=True, nogil=True)
def ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw):
    # Each pixel must get its shares in output order, (oh, ow) ascending, as the direct
    # loops add them. A pixel's window row offset k falls as oh rises, and its column offset
    # c falls as ow rises, so the spread runs k, then c, from the last down. (The spread
    # stays in this function: as a helper, inlined or not, it ran 3-9% slower.)
    planes, h, w, oh_n, ow_n, dy2 = flat_dims(dx3, dy3)
    zero = dx3.dtype.type(0)
    no, ws, over, nfix, ng, gsz, ncopy, e0, e1, _ = layout(oh_n, ow_n, w, kh, kw, sh, sw, pw)
    nbuf = sh * gsz + kw
    j_ov = max(ws - pw, 0)          # first image column past the buffer rows
    pool = pool_sizes(oh_n, ow_n, h, w, kh, kw, sh, sw, ph, pw, dx3.dtype)
    nchunk = min(planes, 256)
    for c in numba.prange(nchunk):
        buf = np.empty(nbuf, dx3.dtype)
        share = np.empty(no, dx3.dtype)
        part = np.empty(no, dx3.dtype)
        for p in range(c * planes // nchunk, (c + 1) * planes // nchunk):
            dyp = dy2[p]
            for t in range(no):
                share[t] = dyp[t] / pool[t]
            for q in range(nbuf):
                buf[q] = zero
            if kw == 3 and sw == 2:
                # Column offsets 2 and 0 meet at even pixels: pixel 2u gets part[u], the share
                # of window u-1 (offset 2), then share[u] (offset 0); odd pixels get offset 1.
                # A row's last window would put its offset 2 on the next row: its part is 0
                # there (adding +0.0 changes nothing).
                part[0] = zero
                for u in range(1, no):
                    part[u] = share[u - 1]
                for oh in range(1, oh_n):
                    part[oh * ow_n] = zero
                for k in range(kh - 1, -1, -1):
                    off = row_offset(k, sh, gsz, ws)
                    d = buf[off:off + 2 * no]
                    for u in range(no):
                        d[2 * u] = (d[2 * u] + part[u]) + share[u]
                        d[2 * u + 1] = d[2 * u + 1] + share[u]
            elif kw == 2 and sw == 2:
                for k in range(kh - 1, -1, -1):
                    off = row_offset(k, sh, gsz, ws)
                    d = buf[off:off + 2 * no]
                    for u in range(no):
                        d[2 * u + 1] = d[2 * u + 1] + share[u]
                        d[2 * u] = d[2 * u] + share[u]
            else:
                for k in range(kh - 1, -1, -1):
                    for cc in range(kw - 1, -1, -1):
                        # the last cc // sw windows of a row reach past it: share 0 there
                        for t in range(no):
                            part[t] = share[t]
                        for oh in range(oh_n):
                            for ow in range(max(ow_n - cc // sw, 0), ow_n):
                                part[oh * ow_n + ow] = zero
                        d = buf[row_offset(k, sh, gsz, ws) + cc:]
                        if sw == 1:
                            _spread_rows(d, part, no, 1)
                        else:
                            _spread_rows(d, part, no, sw)
            dxp = dx3[p]
            for i in range(h):
                r = i + ph
                dst = dxp[i]
                if r < sh * ng:
                    o = row_offset(r, sh, gsz, ws) + pw
                    src = buf[o:o + ncopy]
                    for jj in range(ncopy):
                        dst[jj] = src[jj]
                    for jj in range(ncopy, w):
                        dst[jj] = zero
                else:
                    for jj in range(w):
                        dst[jj] = zero
            if nfix > 0 and j_ov < w:
                # image columns past the buffer rows: only the last windows of a row reach them
                for oh in range(oh_n):
                    h0, h1, _ = span(oh, sh, ph, kh, h)
                    for ow in range(ow_n - nfix, ow_n):
                        w0, w1, _ = span(ow, sw, pw, kw, w)
                        s = share[oh * ow_n + ow]
                        for i in range(h0, h1):
                            for j in range(max(w0, j_ov), w1):
                                dxp[i, j] += s

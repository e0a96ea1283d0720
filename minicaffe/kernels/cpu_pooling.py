"""Pooling kernels (numba, CPU) over planes: x3 (N*C, H, W), y3 (N*C, PH, PW), one plane
(image x channel) per parallel task. Same functions and arguments as the CUDA family
``minicaffe.kernels.cuda.pooling``:

* ``max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw)``: the window's first strict maximum
  in row-major order, starting from -FLT_MAX (a NaN pixel never wins); argmax3 (int32) gets
  the winner's flat index h * W + w in its plane, -1 when none;
* ``max_backward(dy3, argmax3, dx3)``: dx3 = 0, then each output adds its gradient at its
  winner;
* ``ave_forward(x3, y3, kh, kw, sh, sw, ph, pw, size)``: the window's real pixels summed and
  divided by the window clipped to the padded image (recomputed here; ``size``, the layer's
  table of those divisors, is accepted for the common signature and not read);
* ``ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw, size)``: dx3 = 0, then each output spreads
  dy / divisor over its window's real pixels.

Window geometry (Caffe's): output (oh, ow) starts at (oh*sh - ph, ow*sw - pw); its pixels are
those of the kh x kw window that fall inside the image.

How they run. A plane's output rows are short (16 or 8 values), too short for LLVM's vector
loops, and one window at a time is a chain of dependent compares (the MAX scan's branch
mispredicts, too). So each task copies its plane into a small buffer whose rows are the
padded image rows grouped by (padded row % sh), each cut to OW*sw columns: there, pixel (i, j)
of window (oh, ow) sits at an offset fixed by (i, j) plus (oh*OW + ow)*sw, and each pass is one
loop over all outputs of the plane, which vectorizes. MAX takes each window row's first strict
maximum, then combines the rows in order; the buffer pads with NaN for MAX (never wins) and
0 for AVE (adding +0.0 changes no sum: the sums start at +0.0 and so are never -0.0). A
window that reaches past column OW*sw (the last one or two of a row when kw > sw) reads the
next buffer row there and is redone from the overhang columns. Results are bit for bit those
of the one-window-at-a-time loops (``_*_direct``): MAX finds the same first strict maximum
(a row's first maximum stands unless a later row's is strictly greater), AVE adds the same
pixels in the same order, and ave_backward adds each pixel's shares in output order, as
those loops do. The direct loops still serve arrays that are not
C-contiguous and geometries with few output columns (global pooling), where the buffer does
not pay. max_backward indexes the flat plane with the argmax (no division per output).

The entry points (max_forward, ...) are plain Python that pick a parallel kernel: a cached
non-parallel numba function calling a cached parallel one segfaults when it is loaded from a
cache that another process partly wrote (numba/numba#4807, #8578; seen here).
"""
import numba
import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


def _rows(a):
    """(planes, rows * cols) view of a C-contiguous array, or None (the caller then takes the
    direct loops)."""
    return a.reshape(a.shape[0], a.shape[1] * a.shape[2]) if a.flags.c_contiguous else None


@numba.njit(cache=True, nogil=True)
def _layout(oh_n, ow_n, w, kh, kw, sh, sw, pw):
    """Buffer geometry shared by the kernels: row width ws, overhang columns per row and the
    windows that reach them (nfix), rows per group (ng), group size, image columns copied
    into a buffer row (ncopy), and the overhang columns inside the image, [e0, e1)."""
    ws = ow_n * sw
    over = max(kw - sw, 0)
    nfix = (over + sw - 1) // sw
    ng = oh_n + (kh - 1) // sh
    ncopy = max(min(w, ws - pw), 0)
    e0 = max(pw - ws, 0)
    e1 = min(w - ws + pw, over)
    # The last nfix windows of every row are redone one by one: worth it with many columns.
    buffered = ow_n >= 4 and 2 * nfix <= ow_n
    return ws, over, nfix, ng, ng * ws, ncopy, e0, e1, buffered


@numba.njit(cache=True, nogil=True)
def _pool_sizes(oh_n, ow_n, h, w, kh, kw, sh, sw, ph, pw, dtype):
    """AVE divisors, flat over (oh, ow): the window clipped to the padded image."""
    pool = np.empty(oh_n * ow_n, dtype)
    for oh in range(oh_n):
        h0 = oh * sh - ph
        rows = min(h0 + kh, h + ph) - h0
        for ow in range(ow_n):
            w0 = ow * sw - pw
            pool[oh * ow_n + ow] = rows * (min(w0 + kw, w + pw) - w0)
    return pool


@numba.njit(nogil=True)
def _fill_buffer(x3, p, buf, ov, h, sh, ph, pw, ng, gsz, ws, ncopy, e0, e1, over):
    """Copy plane ``p`` into the forward kernels' buffer: image row i goes to group
    (i + ph) % sh, row (i + ph) // sh, cut to ncopy columns; the columns past the buffer rows
    go to the overhang ``ov``. Rows outside the image keep the buffer's padding value."""
    for g in range(sh):
        for j in range(ng):
            i = j * sh + g - ph
            if 0 <= i < h:
                o = g * gsz + j * ws + pw
                dst = buf[o:o + ncopy]
                src = x3[p, i]
                for jj in range(ncopy):
                    dst[jj] = src[jj]
                # through x3, not src: through src the copy above ran slower
                for e in range(e0, e1):
                    ov[(g * ng + j) * over + e] = x3[p, i, ws - pw + e]


# -- MAX forward ---------------------------------------------------------------------------
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
            v = buf[jj + t]
            g = v > m
            m = v if g else m
            k = np.int32(t) if g else k
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
                g = v > m
                m = v if g else m
                k = np.int32(t) if g else k
            hm[r * ow_n + ow] = m
            hk[r * ow_n + ow] = k


@numba.njit(parallel=True, cache=True, nogil=True)
def _max_forward_direct(x3, y3, argmax3, kh, kw, sh, sw, ph, pw):
    planes, h, w = x3.shape
    oh_n, ow_n = y3.shape[1], y3.shape[2]
    lowest = x3.dtype.type(-FLT_MAX)
    for p in numba.prange(planes):
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, h)
            h0 = max(h0, 0)
            for ow in range(ow_n):
                w0 = ow * sw - pw
                w1 = min(w0 + kw, w)
                w0 = max(w0, 0)
                best = lowest
                at = -1
                for i in range(h0, h1):
                    for j in range(w0, w1):
                        v = x3[p, i, j]
                        if v > best:
                            best = v
                            at = i * w + j
                y3[p, oh, ow] = best
                argmax3[p, oh, ow] = at


@numba.njit(parallel=True, cache=True, nogil=True)
def _max_forward_buffered(x3, y2, a2, oh_n, ow_n, kh, kw, sh, sw, ph, pw):
    planes, h, w = x3.shape
    lowest = x3.dtype.type(-FLT_MAX)
    ws, over, nfix, ng, gsz, ncopy, e0, e1, _ = _layout(oh_n, ow_n, w, kh, kw, sh, sw, pw)
    rows = sh * ng
    nq = rows * ow_n
    no = oh_n * ow_n
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
        o1 = (1 % sh) * ng * ow_n + (1 // sh) * ow_n
        o2 = (2 % sh) * ng * ow_n + (2 // sh) * ow_n
        m0 = hm[:no]
        k0 = hk[:no]
        m1 = hm[o1:o1 + no]
        k1 = hk[o1:o1 + no]
        m2 = hm[o2:o2 + no]
        k2 = hk[o2:o2 + no]
        w1 = np.int32(w)
        w2 = np.int32(2 * w)
        for p in range(c * planes // nchunk, (c + 1) * planes // nchunk):
            _fill_buffer(x3, p, buf, ov, h, sh, ph, pw, ng, gsz, ws, ncopy, e0, e1, over)
            if kw == 3 and sw == 2:
                _rows_max(buf, hm, hk, nq, 3, 2, lowest)
            elif kw == 2 and sw == 2:
                _rows_max(buf, hm, hk, nq, 2, 2, lowest)
            elif kw == 3 and sw == 1:
                _rows_max(buf, hm, hk, nq, 3, 1, lowest)
            else:
                _rows_max(buf, hm, hk, nq, kw, sw, lowest)
            if kw == 3 and sw == 2:
                for r in range(rows):
                    o = r * ws + ws - 2
                    v0 = buf[o]
                    v1 = buf[o + 1]
                    v2 = ov[r]
                    g = v0 > lowest
                    m = v0 if g else lowest
                    g = v1 > m
                    m = v1 if g else m
                    k = np.int32(1) if g else np.int32(0)
                    g = v2 > m
                    m = v2 if g else m
                    k = np.int32(2) if g else k
                    hm[(r + 1) * ow_n - 1] = m
                    hk[(r + 1) * ow_n - 1] = k
            elif nfix > 0:
                _rows_max_tail(buf, ov, hm, hk, rows, ws, ow_n, nfix, kw, sw, over, lowest)
            # Combine the kh row parts of each window in row order (a later row wins only
            # when strictly greater). Everything is loaded before the selects: a load under
            # a select becomes a masked vector load, which cost ~20% of this kernel.
            yp = y2[p]
            ap = a2[p]
            if kh == 3:
                for t in range(no):
                    v0 = m0[t]
                    v1 = m1[t]
                    v2 = m2[t]
                    c0 = k0[t]
                    c1 = np.int32(k1[t] + w1)
                    c2 = np.int32(k2[t] + w2)
                    g = v1 > v0
                    m = v1 if g else v0
                    a = c1 if g else c0
                    g = v2 > m
                    m = v2 if g else m
                    a = c2 if g else a
                    ab = np.int32(a + abase[t])
                    yp[t] = m
                    ap[t] = ab if m > lowest else np.int32(-1)
            elif kh == 2:
                for t in range(no):
                    v0 = m0[t]
                    v1 = m1[t]
                    c0 = k0[t]
                    c1 = np.int32(k1[t] + w1)
                    g = v1 > v0
                    m = v1 if g else v0
                    a = c1 if g else c0
                    ab = np.int32(a + abase[t])
                    yp[t] = m
                    ap[t] = ab if m > lowest else np.int32(-1)
            else:
                for t in range(no):
                    yp[t] = lowest
                    ap[t] = -1
                for k in range(kh):
                    off = (k % sh) * ng * ow_n + (k // sh) * ow_n
                    mk = hm[off:off + no]
                    kk = hk[off:off + no]
                    kw_ = np.int32(k * w)
                    for t in range(no):
                        v = mk[t]
                        m = yp[t]
                        a = ap[t]
                        c = np.int32(abase[t] + kw_ + kk[t])
                        g = v > m
                        yp[t] = v if g else m
                        ap[t] = c if g else a


def max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw):
    oh_n, ow_n = y3.shape[1], y3.shape[2]
    y2, a2 = _rows(y3), _rows(argmax3)
    if y2 is not None and a2 is not None and \
            _layout(oh_n, ow_n, x3.shape[2], kh, kw, sh, sw, pw)[-1]:
        _max_forward_buffered(x3, y2, a2, oh_n, ow_n, kh, kw, sh, sw, ph, pw)
    else:
        _max_forward_direct(x3, y3, argmax3, kh, kw, sh, sw, ph, pw)


# -- MAX backward --------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True, nogil=True)
def _max_backward_direct(dy3, argmax3, dx3):
    planes, h, w = dx3.shape
    oh_n, ow_n = dy3.shape[1], dy3.shape[2]
    for p in numba.prange(planes):
        for i in range(h):
            for j in range(w):
                dx3[p, i, j] = 0
        for oh in range(oh_n):
            for ow in range(ow_n):
                at = argmax3[p, oh, ow]
                if at >= 0:
                    dx3[p, at // w, at % w] += dy3[p, oh, ow]


@numba.njit(parallel=True, cache=True, nogil=True)
def _max_backward_flat(dy3, argmax3, dx2):
    planes, hw = dx2.shape
    oh_n, ow_n = dy3.shape[1], dy3.shape[2]
    zero = dx2.dtype.type(0)
    for p in numba.prange(planes):
        d = dx2[p]
        for q in range(hw):
            d[q] = zero
        for oh in range(oh_n):
            for ow in range(ow_n):
                at = argmax3[p, oh, ow]
                if at >= 0:
                    d[at] += dy3[p, oh, ow]


def max_backward(dy3, argmax3, dx3):
    dx2 = _rows(dx3)
    if dx2 is not None:
        _max_backward_flat(dy3, argmax3, dx2)
    else:
        _max_backward_direct(dy3, argmax3, dx3)


# -- AVE forward ---------------------------------------------------------------------------
@numba.njit(nogil=True, error_model="numpy")
def _sum3(r0, r1, r2, yp, pool, no, kw, sw, zero):
    """Window sums over three buffer rows, pixels in row-major order (literal kw, sw, as in
    _rows_max)."""
    for t in range(no):
        a = zero
        for c in range(kw):
            a += r0[t * sw + c]
        for c in range(kw):
            a += r1[t * sw + c]
        for c in range(kw):
            a += r2[t * sw + c]
        yp[t] = a / pool[t]


@numba.njit(nogil=True, error_model="numpy")
def _sum2(r0, r1, yp, pool, no, kw, sw, zero):
    for t in range(no):
        a = zero
        for c in range(kw):
            a += r0[t * sw + c]
        for c in range(kw):
            a += r1[t * sw + c]
        yp[t] = a / pool[t]


@numba.njit(nogil=True)
def _acc_rows(acc, src, no, sw):
    for t in range(no):
        acc[t] += src[t * sw]


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
def _ave_forward_direct(x3, y3, kh, kw, sh, sw, ph, pw):
    planes, h, w = x3.shape
    oh_n, ow_n = y3.shape[1], y3.shape[2]
    for p in numba.prange(planes):
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, h + ph)
            rows = h1 - h0
            h0 = max(h0, 0)
            h1 = min(h1, h)
            for ow in range(ow_n):
                w0 = ow * sw - pw
                w1 = min(w0 + kw, w + pw)
                pool = rows * (w1 - w0)
                w0 = max(w0, 0)
                w1 = min(w1, w)
                acc = x3.dtype.type(0)
                for i in range(h0, h1):
                    for j in range(w0, w1):
                        acc += x3[p, i, j]
                y3[p, oh, ow] = acc / x3.dtype.type(pool)


@numba.njit(parallel=True, cache=True, nogil=True)
def _ave_forward_buffered(x3, y2, oh_n, ow_n, kh, kw, sh, sw, ph, pw):
    planes, h, w = x3.shape
    zero = x3.dtype.type(0)
    ws, over, nfix, ng, gsz, ncopy, e0, e1, _ = _layout(oh_n, ow_n, w, kh, kw, sh, sw, pw)
    no = oh_n * ow_n
    pool = _pool_sizes(oh_n, ow_n, h, w, kh, kw, sh, sw, ph, pw, x3.dtype)
    o1 = (1 % sh) * gsz + (1 // sh) * ws
    o2 = (2 % sh) * gsz + (2 // sh) * ws
    nchunk = min(planes, 256)
    for c in numba.prange(nchunk):
        buf = np.zeros(sh * gsz + kw, x3.dtype)
        ov = np.zeros(sh * ng * over + 1, x3.dtype)
        acc = np.empty(no, x3.dtype)
        for p in range(c * planes // nchunk, (c + 1) * planes // nchunk):
            _fill_buffer(x3, p, buf, ov, h, sh, ph, pw, ng, gsz, ws, ncopy, e0, e1, over)
            yp = y2[p]
            if kh == 3 and kw == 3 and sw == 2:
                _sum3(buf, buf[o1:], buf[o2:], yp, pool, no, 3, 2, zero)
            elif kh == 3 and kw == 3 and sw == 1:
                _sum3(buf, buf[o1:], buf[o2:], yp, pool, no, 3, 1, zero)
            elif kh == 2 and kw == 2 and sw == 2:
                _sum2(buf, buf[o1:], yp, pool, no, 2, 2, zero)
            else:
                for t in range(no):
                    acc[t] = zero
                for k in range(kh):
                    off = (k % sh) * gsz + (k // sh) * ws
                    for cc in range(kw):
                        if sw == 1:
                            _acc_rows(acc, buf[off + cc:], no, 1)
                        elif sw == 2:
                            _acc_rows(acc, buf[off + cc:], no, 2)
                        else:
                            _acc_rows(acc, buf[off + cc:], no, sw)
                for t in range(no):
                    yp[t] = acc[t] / pool[t]
            if kh == 3 and kw == 3 and sh == 2 and sw == 2:
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


def ave_forward(x3, y3, kh, kw, sh, sw, ph, pw, size=None):
    oh_n, ow_n = y3.shape[1], y3.shape[2]
    y2 = _rows(y3)
    if y2 is not None and _layout(oh_n, ow_n, x3.shape[2], kh, kw, sh, sw, pw)[-1]:
        _ave_forward_buffered(x3, y2, oh_n, ow_n, kh, kw, sh, sw, ph, pw)
    else:
        _ave_forward_direct(x3, y3, kh, kw, sh, sw, ph, pw)


# -- AVE backward --------------------------------------------------------------------------
@numba.njit(nogil=True)
def _spread_rows(d, part, no, sw):
    for t in range(no):
        d[t * sw] += part[t]


@numba.njit(parallel=True, cache=True, nogil=True)
def _ave_backward_direct(dy3, dx3, kh, kw, sh, sw, ph, pw):
    planes, h, w = dx3.shape
    oh_n, ow_n = dy3.shape[1], dy3.shape[2]
    for p in numba.prange(planes):
        for i in range(h):
            for j in range(w):
                dx3[p, i, j] = 0
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, h + ph)
            rows = h1 - h0
            h0 = max(h0, 0)
            h1 = min(h1, h)
            for ow in range(ow_n):
                w0 = ow * sw - pw
                w1 = min(w0 + kw, w + pw)
                share = dy3[p, oh, ow] / dy3.dtype.type(rows * (w1 - w0))
                w0 = max(w0, 0)
                w1 = min(w1, w)
                for i in range(h0, h1):
                    for j in range(w0, w1):
                        dx3[p, i, j] += share


@numba.njit(parallel=True, cache=True, nogil=True)
def _ave_backward_buffered(dy2, dx3, oh_n, ow_n, kh, kw, sh, sw, ph, pw):
    # Each pixel must get its shares in output order, (oh, ow) ascending, as the direct
    # loops add them. A pixel's window row offset k falls as oh rises, and its column offset
    # c falls as ow rises, so the spread runs k, then c, from the last down.
    planes, h, w = dx3.shape
    zero = dx3.dtype.type(0)
    ws, over, nfix, ng, gsz, ncopy, e0, e1, _ = _layout(oh_n, ow_n, w, kh, kw, sh, sw, pw)
    no = oh_n * ow_n
    nbuf = sh * gsz + kw
    j_ov = max(ws - pw, 0)          # first image column past the buffer rows
    pool = _pool_sizes(oh_n, ow_n, h, w, kh, kw, sh, sw, ph, pw, dx3.dtype)
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
                # Column offsets 2 and 0 meet at even pixels: pixel 2u gets part[u], the
                # share of window u-1 (offset 2), then share[u] (offset 0); odd pixels get
                # offset 1. A row's last window would put its offset 2 on the next row:
                # its part is 0 there (adding +0.0 changes nothing).
                part[0] = zero
                for u in range(1, no):
                    part[u] = share[u - 1]
                for oh in range(1, oh_n):
                    part[oh * ow_n] = zero
                for k in range(kh - 1, -1, -1):
                    off = (k % sh) * gsz + (k // sh) * ws
                    d = buf[off:off + 2 * no]
                    for u in range(no):
                        d[2 * u] = (d[2 * u] + part[u]) + share[u]
                        d[2 * u + 1] = d[2 * u + 1] + share[u]
            elif kw == 2 and sw == 2:
                for k in range(kh - 1, -1, -1):
                    off = (k % sh) * gsz + (k // sh) * ws
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
                        d = buf[(k % sh) * gsz + (k // sh) * ws + cc:]
                        if sw == 1:
                            _spread_rows(d, part, no, 1)
                        else:
                            _spread_rows(d, part, no, sw)
            dxp = dx3[p]
            for i in range(h):
                r = i + ph
                dst = dxp[i]
                if r < sh * ng:
                    o = (r % sh) * gsz + (r // sh) * ws + pw
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
                    h0 = oh * sh - ph
                    h1 = min(h0 + kh, h)
                    h0 = max(h0, 0)
                    for ow in range(ow_n - nfix, ow_n):
                        w0 = max(ow * sw - pw, j_ov)
                        w1 = min(ow * sw - pw + kw, w)
                        s = share[oh * ow_n + ow]
                        for i in range(h0, h1):
                            for j in range(w0, w1):
                                dxp[i, j] += s


def ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw, size=None):
    oh_n, ow_n = dy3.shape[1], dy3.shape[2]
    dy2 = _rows(dy3)
    if dy2 is not None and _layout(oh_n, ow_n, dx3.shape[2], kh, kw, sh, sw, pw)[-1]:
        _ave_backward_buffered(dy2, dx3, oh_n, ow_n, kh, kw, sh, sw, ph, pw)
    else:
        _ave_backward_direct(dy3, dx3, kh, kw, sh, sw, ph, pw)

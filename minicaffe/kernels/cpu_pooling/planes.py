"""The plane buffer of the whole-plane pooling passes (``max_planes``, ``ave_planes``).

Each task copies its plane into a small buffer whose rows are the padded image rows grouped
by (padded row % sh), each cut to OW*sw columns: there, pixel (i, j) of window (oh, ow) sits
at an offset fixed by (i, j) plus (oh*OW + ow)*sw, so each pass is one loop over all outputs
of the plane, which vectorizes. A window that reaches past column OW*sw (the last one or two
of a row when kw > sw) reads the next buffer row there and is redone from the overhang
columns ``ov``.

numba's cache checks only the file of a cached function: after editing this file, clear the
cache (``__pycache__`` or ``NUMBA_CACHE_DIR``) or the passes keep their old copy of it.
"""
import numba
import numpy as np

from .direct import dims, span


@numba.njit(nogil=True, inline="always")
def flat_dims(img3, out3):
    """``dims(img3, out3)`` and the (planes, OH*OW) view of the C-contiguous ``out3``, made
    once: a reshape per plane costs a call into numba's runtime."""
    planes, h, w, oh_n, ow_n = dims(img3, out3)
    return planes, h, w, oh_n, ow_n, out3.reshape(planes, oh_n * ow_n)


@numba.njit(cache=True, nogil=True)
def layout(oh_n, ow_n, w, kh, kw, sh, sw, pw):
    """Buffer geometry shared by the kernels: outputs per plane (no), row width ws, overhang
    columns per row and the windows that reach them (nfix), rows per group (ng), group size,
    image columns copied into a buffer row (ncopy), the overhang columns inside the image,
    [e0, e1), and whether the buffer pays."""
    ws = ow_n * sw
    over = max(kw - sw, 0)
    nfix = (over + sw - 1) // sw
    ng = oh_n + (kh - 1) // sh
    ncopy = max(min(w, ws - pw), 0)
    e0 = max(pw - ws, 0)
    e1 = min(w - ws + pw, over)
    # The last nfix windows of every row are redone one by one: worth it with many columns.
    buffered = ow_n >= 4 and 2 * nfix <= ow_n
    return oh_n * ow_n, ws, over, nfix, ng, ng * ws, ncopy, e0, e1, buffered


@numba.njit(nogil=True, inline="always")
def row_offset(k, sh, group, width):
    """Where window row k of the first output row starts: group k % sh, row k // sh
    (``width`` per row, ``group`` per group; in the buffer or in a table of row results)."""
    return (k % sh) * group + (k // sh) * width


@numba.njit(cache=True, nogil=True)
def pool_sizes(oh_n, ow_n, h, w, kh, kw, sh, sw, ph, pw, dtype):
    """AVE divisors, flat over (oh, ow): the window clipped to the padded image."""
    pool = np.empty(oh_n * ow_n, dtype)
    for oh in range(oh_n):
        rows = span(oh, sh, ph, kh, h)[2]
        for ow in range(ow_n):
            pool[oh * ow_n + ow] = rows * span(ow, sw, pw, kw, w)[2]
    return pool


@numba.njit(nogil=True)
def fill(x3, p, buf, ov, h, sh, ph, pw, ng, gsz, ws, ncopy, e0, e1, over):
    """Copy plane ``p`` into the buffer: image row i goes to group (i + ph) % sh, row
    (i + ph) // sh, cut to ncopy columns; the columns past the buffer rows go to the overhang
    ``ov``. Rows outside the image keep the buffer's padding value."""
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

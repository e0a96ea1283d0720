"""The pooling kernels one window at a time: the reference the whole-plane passes match bit
for bit, and the path for arrays that are not C-contiguous and for geometries with few output
columns (global pooling), where the plane buffer does not pay."""
import numba
import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


@numba.njit(nogil=True, inline="always")
def span(o, s, p, k, n):
    """Along one axis, the image pixels [a, b) of window ``o`` (stride s, pad p, kernel k,
    image length n) and the window's length clipped to the padded image (AVE's divisor)."""
    lo = o * s - p
    hi = min(lo + k, n + p)
    return max(lo, 0), min(hi, n), hi - lo


@numba.njit(nogil=True, inline="always")
def dims(img3, out3):
    """planes, H, W of the image-shaped array and OH, OW of the output-shaped one."""
    return img3.shape[0], img3.shape[1], img3.shape[2], out3.shape[1], out3.shape[2]


@numba.njit(nogil=True, inline="always")
def zero_plane(d):
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            d[i, j] = 0


@numba.njit(parallel=True, cache=True, nogil=True)
def max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw):
    planes, h, w, oh_n, ow_n = dims(x3, y3)
    lowest = x3.dtype.type(-FLT_MAX)
    for p in numba.prange(planes):
        for oh in range(oh_n):
            h0, h1, _ = span(oh, sh, ph, kh, h)
            for ow in range(ow_n):
                w0, w1, _ = span(ow, sw, pw, kw, w)
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
def max_backward(dy3, argmax3, dx3):
    planes, h, w, oh_n, ow_n = dims(dx3, dy3)
    for p in numba.prange(planes):
        zero_plane(dx3[p])
        for oh in range(oh_n):
            for ow in range(ow_n):
                at = argmax3[p, oh, ow]
                if at >= 0:
                    dx3[p, at // w, at % w] += dy3[p, oh, ow]


@numba.njit(parallel=True, cache=True, nogil=True)
def ave_forward(x3, y3, kh, kw, sh, sw, ph, pw):
    planes, h, w, oh_n, ow_n = dims(x3, y3)
    for p in numba.prange(planes):
        for oh in range(oh_n):
            h0, h1, rows = span(oh, sh, ph, kh, h)
            for ow in range(ow_n):
                w0, w1, cols = span(ow, sw, pw, kw, w)
                acc = x3.dtype.type(0)
                for i in range(h0, h1):
                    for j in range(w0, w1):
                        acc += x3[p, i, j]
                y3[p, oh, ow] = acc / x3.dtype.type(rows * cols)


@numba.njit(parallel=True, cache=True, nogil=True)
def ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw):
    planes, h, w, oh_n, ow_n = dims(dx3, dy3)
    for p in numba.prange(planes):
        zero_plane(dx3[p])
        for oh in range(oh_n):
            h0, h1, rows = span(oh, sh, ph, kh, h)
            for ow in range(ow_n):
                w0, w1, cols = span(ow, sw, pw, kw, w)
                share = dy3[p, oh, ow] / dy3.dtype.type(rows * cols)
                for i in range(h0, h1):
                    for j in range(w0, w1):
                        dx3[p, i, j] += share

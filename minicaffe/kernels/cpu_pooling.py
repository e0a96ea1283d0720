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
"""
import numba
import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


@numba.njit(parallel=True, cache=True, nogil=True)
def max_forward(x3, y3, argmax3, kh, kw, sh, sw, ph, pw):
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
def max_backward(dy3, argmax3, dx3):
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
def ave_forward(x3, y3, kh, kw, sh, sw, ph, pw, size=None):
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
def ave_backward(dy3, dx3, kh, kw, sh, sw, ph, pw, size=None):
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

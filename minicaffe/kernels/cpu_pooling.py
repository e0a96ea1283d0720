"""MAX pooling backward (numba, CPU) over (planes, H, W) arrays, one plane (image x channel)
per parallel task.

Caffe's geometry (see minicaffe.layers.pooling): output (oh, ow) covers rows oh*sh - ph + i
(0 <= i < kh) and columns ow*sw - pw + j (0 <= j < kw) that fall inside the image. Forward
(vectorised NumPy) keeps each window's maximum ``best``; Caffe's winner -- the first pixel of a
strict ">" scan from -FLT_MAX in row-major window order -- is the first pixel equal to
``best``, and only when ``best`` > -FLT_MAX (NaN pixels never equal it). The gradient of each
output goes to its winner. This is the step NumPy cannot vectorise (a scattered sum).
"""
import numba
import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


@numba.njit(parallel=True, cache=True, nogil=True)
def max_backward(x, best, dy, dx, kh, kw, sh, sw, ph, pw):
    planes, h, w = x.shape
    oh_n, ow_n = dy.shape[1], dy.shape[2]
    lowest = x.dtype.type(-FLT_MAX)
    for p in numba.prange(planes):
        for i in range(h):
            for j in range(w):
                dx[p, i, j] = 0
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, h)
            h0 = max(h0, 0)
            for ow in range(ow_n):
                b = best[p, oh, ow]
                if not b > lowest:
                    continue
                w0 = ow * sw - pw
                w1 = min(w0 + kw, w)
                w0 = max(w0, 0)
                found = False
                for i in range(h0, h1):
                    for j in range(w0, w1):
                        if x[p, i, j] == b:
                            dx[p, i, j] += dy[p, oh, ow]
                            found = True
                            break
                    if found:
                        break

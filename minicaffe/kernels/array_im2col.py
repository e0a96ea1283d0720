"""Sliding-window helpers shared by Convolution, Deconvolution and Pooling.

Geometry arguments are (height, width) pairs: ``kernel``, ``stride``, ``pad``, ``dilation``.

Column layout (channels last).  The image batch is first copied, per group, into a
zero-bordered channels-last buffer ``padded`` (G, N, H+2ph, W+2pw, Cg); ``im2col`` then
gathers every window with one strided copy into

    col[g, (n, oh, ow), (i, j, c)] = x[n, g*Cg + c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]

(0 outside x), so a convolution of the whole batch is ONE matrix product per group,
(Og, KH*KW*Cg) @ col^T, and the window rows copy runs of KW*Cg contiguous values.

Kernel-offset loops.  ``window_offsets`` lists, for every kernel offset (i, j), the block of
output positions whose window sample at that offset falls inside the image, as a pair of
slices into the output and the matching strided slices into the input. Pooling forward and
backward are written as loops over these kh*kw offsets only; each step is one
vectorised operation over the whole batch.

This is the array-module (NumPy/CuPy) im2col; ``im2col_nchw``, ``im2col`` and ``col2im`` hand
over to the compiled family where there is one: numba's ``kernels/cpu_im2col.py`` on NumPy,
CUDA's ``kernels/cuda/im2col.py`` on CuPy.
"""
import threading

import numpy as np

from .. import backend, kernels

FLT_MAX = float(np.finfo(np.float32).max)   # Caffe's initial value for max pooling


def conv_output_size(size, kernel, stride, pad, dilation=1):
    """Caffe's convolution output length: (size + 2p - (d(k-1)+1)) // s + 1."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def deconv_output_size(size, kernel, stride, pad, dilation=1):
    """Caffe's deconvolution output length: s(size-1) + d(k-1)+1 - 2p."""
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


def pool_output_size(size, kernel, stride, pad, ceil_mode=True, padded=None):
    """Caffe's pooling output length: ceil (or floor) of (size + 2p - k)/s, plus one; when the
    layer pads (``padded``: pad_h or pad_w nonzero, default ``pad != 0``), a last window that
    would start in the padding is dropped."""
    span = size + 2 * pad - kernel
    pooled = (-(-span // stride) if ceil_mode else span // stride) + 1
    if (pad if padded is None else padded) and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def _axis_offset(start, out_len, stride, in_len):
    """Positions o in [0, out_len) with 0 <= o*stride + start < in_len, as an output slice and
    the matching strided input slice; None when there are none."""
    lo = -(start // stride) if start < 0 else 0    # ceil(-start / stride)
    hi = min(out_len, (in_len - 1 - start) // stride + 1)
    if hi <= lo:
        return None
    first = lo * stride + start
    return slice(lo, hi), slice(first, first + (hi - lo - 1) * stride + 1, stride)


def window_offsets(kernel, stride, pad, in_hw, out_hw, dilation=(1, 1)):
    """For each kernel offset k = i*kw + j (row-major, i.e. Caffe's scan order inside a window):
    ``(k, (out_h, out_w), (in_h, in_w))`` -- slices such that ``x[..., in_h, in_w]`` holds
    sample (i, j) of the windows ``y[..., out_h, out_w]``. Offsets that only ever sample the
    padding are skipped."""
    rows = _sampling_offsets(kernel[0], dilation[0], pad[0], out_hw[0], stride[0], in_hw[0])
    cols = _sampling_offsets(kernel[1], dilation[1], pad[1], out_hw[1], stride[1], in_hw[1])
    return [(i * kernel[1] + j, (r[0], c[0]), (r[1], c[1])) for i, r in rows for j, c in cols]


def _sampling_offsets(k, d, p, out_len, stride, in_len):
    """[(i, _axis_offset of kernel offset i)] for the offsets that sample the image. Only
    i with -(out_len-1)*stride <= i*d - p < in_len can, so a kernel far larger than the
    image (all padding but a few rows) costs what those rows cost."""
    lo = max(0, -(-(p - (out_len - 1) * stride) // d))
    hi = min(k, -(-(in_len + p) // d))
    found = ((i, _axis_offset(i * d - p, out_len, stride, in_len)) for i in range(lo, hi))
    return [(i, a) for i, a in found if a is not None]


class Scratch:
    """A reusable work array: ``get`` returns a C-contiguous array of the asked shape backed by
    storage that only grows, so per-iteration calls with unchanged shapes allocate nothing."""

    def __init__(self):
        self._buf = None

    def get(self, xp, shape, dtype):
        count = int(np.prod(shape, dtype=np.int64))
        dtype = np.dtype(dtype)
        buf = self._buf
        if buf is None or buf.dtype != dtype or buf.size < count or \
                backend.get_array_module(buf) is not xp:
            buf = self._buf = xp.empty(max(count, 1), dtype=dtype)
        return buf[:count].reshape(shape)


def _as_strided(x, shape, strides):
    xp = backend.get_array_module(x)
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


_local = threading.local()


def workspace(name):
    """A Scratch shared by every layer of this thread, for buffers that live only inside one
    forward or backward call (layers run one at a time, so one set serves a whole net)."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    if name not in bufs:
        bufs[name] = Scratch()
    return bufs[name]


def to_padded_nhwc(x, padded, pad):
    """Copy ``x`` (N, G, Cg, H, W) into ``padded`` (G, N, H+2ph, W+2pw, Cg), channels last,
    with a zero border of ``pad`` = (ph, pw)."""
    n, g, cg, h, w = x.shape
    ph, pw = pad
    if ph:
        padded[:, :, :ph] = 0
        padded[:, :, ph + h:] = 0
    if pw:
        padded[:, :, ph:ph + h, :pw] = 0
        padded[:, :, ph:ph + h, pw + w:] = 0
    padded[:, :, ph:ph + h, pw:pw + w] = x.transpose(1, 0, 3, 4, 2)
    return padded


def im2col_nchw(x, col, kernel, stride, pad, dilation, out_hw):
    """``im2col`` of ``x`` (N, G, Cg, H, W) zero-padded by ``pad``: the compiled CPU kernel
    in one parallel pass where there is one, else ``to_padded_nhwc`` then ``im2col``."""
    xp = backend.get_array_module(col)
    fast = kernels.get("im2col", xp)
    if fast is not None and hasattr(fast, "im2col_nchw"):
        return fast.im2col_nchw(x, col, kernel, stride, pad, dilation, out_hw)
    n, g, cg, h, w = x.shape
    padded = workspace("padded").get(xp, (g, n, h + 2 * pad[0], w + 2 * pad[1], cg), x.dtype)
    to_padded_nhwc(x, padded, pad)
    return im2col(padded, col, kernel, stride, dilation, out_hw)


def _windows(padded, kernel, stride, dilation, out_hw):
    """Strided view (G, N, OH, OW, KH, KW, Cg) of every window of ``padded``."""
    sg, sn, sh, sw, sc = padded.strides
    g, n = padded.shape[:2]
    return _as_strided(padded, (g, n) + tuple(out_hw) + tuple(kernel) + (padded.shape[4],),
                       (sg, sn, sh * stride[0], sw * stride[1], sh * dilation[0],
                        sw * dilation[1], sc))


def im2col(padded, col, kernel, stride, dilation, out_hw):
    """Fill ``col`` (G, N*OH*OW, KH*KW*Cg) with the windows of ``padded`` (G, N, Hp, Wp, Cg):

        col[g, (n, oh, ow), (i, j, c)] = padded[g, n, oh*sh + i*dh, ow*sw + j*dw, c]

    One strided copy; each window row is KH runs of KW*Cg contiguous values (stride 1). (The
    CPU kernels have no padded-input im2col: ``im2col_nchw`` is their entry point.)"""
    fast = getattr(kernels.get("im2col", backend.get_array_module(col)), "im2col", None)
    if fast is not None:
        return fast(padded, col, kernel, stride, dilation, out_hw)
    g, n = padded.shape[:2]
    kh, kw = kernel
    view = col.reshape((g, n) + tuple(out_hw) + (kh, kw, padded.shape[4]))
    view[...] = _windows(padded, kernel, stride, dilation, out_hw)
    return col


def col2im(col, padded, kernel, stride, dilation, out_hw):
    """The adjoint of ``im2col``: ``padded`` (G, N, Hp, Wp, Cg) = the sum of every column
    entry at the position it was taken from (a loop over the KH*KW kernel offsets)."""
    fast = kernels.get("im2col", backend.get_array_module(col))
    if fast is not None:
        return fast.col2im(col, padded, kernel, stride, dilation, out_hw)
    g, n, hp, wp, cg = padded.shape
    kh, kw = kernel
    oh, ow = out_hw
    cols = col.reshape(g, n, oh, ow, kh, kw, cg)
    padded[...] = 0
    for i in range(kh):
        r0 = i * dilation[0]
        rows = slice(r0, r0 + (oh - 1) * stride[0] + 1, stride[0])
        for j in range(kw):
            c0 = j * dilation[1]
            padded[:, :, rows, c0:c0 + (ow - 1) * stride[1] + 1:stride[1]] += cols[:, :, :, :, i, j]
    return padded

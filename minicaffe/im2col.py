"""Sliding-window helpers shared by Convolution, Deconvolution and Pooling.

Geometry arguments are (height, width) pairs: ``kernel``, ``stride``, ``pad``, ``dilation``.

Column layout.  ``im2col`` turns an image batch ``x`` of shape (N, C, H, W) into a matrix of
shape (C*kh*kw, N*OH*OW):

    col[(c, i, j), (n, oh, ow)] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]   (0 outside x)

so a convolution of the whole batch is ONE matrix product per group (weights of shape
(M, C*kh*kw) times ``col``), with the result laid out as (M, N, OH, OW). The long axis
(n, oh, ow) is innermost, which keeps the copies in ``im2col``/``col2im`` reading and writing
contiguous runs.

Kernel-offset loops.  ``window_offsets`` lists, for every kernel offset (i, j), the block of
output positions whose window sample at that offset falls inside the image, as a pair of
slices into the output and the matching strided slices into the input. Pooling forward and
backward and ``col2im`` are written as loops over these kh*kw offsets only; each step is one
vectorised operation over the whole batch.
"""
import numpy as np

from . import backend

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
    out = []
    for i in range(kernel[0]):
        rows = _axis_offset(i * dilation[0] - pad[0], out_hw[0], stride[0], in_hw[0])
        for j in range(kernel[1]):
            cols = _axis_offset(j * dilation[1] - pad[1], out_hw[1], stride[1], in_hw[1])
            if rows is not None and cols is not None:
                out.append((i * kernel[1] + j, (rows[0], cols[0]), (rows[1], cols[1])))
    return out


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


def im2col(x, col, kernel, stride, pad, dilation, padded=None):
    """Fill ``col`` (C*kh*kw, N*OH*OW) with the windows of ``x`` (N, C, H, W).

    With padding, ``padded`` is a scratch array of shape (N, C, H+2ph, W+2pw): x is copied into
    its interior (its border is zeroed here), then every window is gathered by one strided copy.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    ph, pw = pad
    if ph or pw:
        padded[:, :, :ph] = 0
        padded[:, :, ph + h:] = 0
        padded[:, :, ph:ph + h, :pw] = 0
        padded[:, :, ph:ph + h, pw + w:] = 0
        padded[:, :, ph:ph + h, pw:pw + w] = x
        x = padded
    oh = conv_output_size(h, kh, stride[0], ph, dilation[0])
    ow = conv_output_size(w, kw, stride[1], pw, dilation[1])
    sn, sc, sh, sw = x.strides
    windows = _as_strided(x, (c, kh, kw, n, oh, ow),
                          (sc, sh * dilation[0], sw * dilation[1], sn, sh * stride[0], sw * stride[1]))
    col.reshape(c, kh, kw, n, oh, ow)[...] = windows
    return col


def col2im(col, dx, kernel, stride, pad, dilation):
    """The adjoint of ``im2col``: ``dx`` (N, C, H, W) = sum of every column entry at the pixel it
    was taken from (entries taken from the padding are dropped). Overwrites ``dx``."""
    n, c, h, w = dx.shape
    kh, kw = kernel
    oh = conv_output_size(h, kh, stride[0], pad[0], dilation[0])
    ow = conv_output_size(w, kw, stride[1], pad[1], dilation[1])
    cols = col.reshape(c, kh, kw, n, oh, ow)
    dx[...] = 0
    for k, (out_h, out_w), (in_h, in_w) in window_offsets(kernel, stride, pad, (h, w), (oh, ow),
                                                          dilation):
        i, j = divmod(k, kw)
        dx[:, :, in_h, in_w] += cols[:, i, j, :, out_h, out_w].transpose(1, 0, 2, 3)
    return dx


def to_rows(x3, rows):
    """(N, C, L) -> (C, N*L): channels become matrix rows (the layout the GEMMs use)."""
    n, c, l = x3.shape
    rows.reshape(c, n, l)[...] = x3.transpose(1, 0, 2)
    return rows


def from_rows(rows, y3, bias=None):
    """(C, N*L) -> (N, C, L) written into ``y3``, adding ``bias`` (C,) per channel if given."""
    n, c, l = y3.shape
    src = rows.reshape(c, n, l).transpose(1, 0, 2)
    if bias is None:
        y3[...] = src
    else:
        xp = backend.get_array_module(y3)
        xp.add(src, bias.reshape(1, c, 1), out=y3)
    return y3

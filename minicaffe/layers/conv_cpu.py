"""Convolution on NumPy arrays one image at a time, the images split over the cores.

Each thread of ``cpu_threads.run`` takes its own images; per image and group it builds the
columns with the serial kernel ``kernels.cpu_im2col.image_columns`` (under 1 MB for the
example's layers, so they stay in the core's cache) and multiplies them with single-threaded
BLAS straight into the NCHW output. Same products as the whole-batch path in ``conv.py``
(see its docstring for the column layout, the flipped-kernel image gradient and the weight
gradient taken from the flipped columns), only cut per image: no batch-sized column buffer,
no output transposes, and nothing kept from forward to backward.

Used for Convolution on NumPy arrays when the numba kernels are on and BLAS's threads can be
held to one (threadpoolctl); the whole-batch path serves CuPy, Deconvolution and the rest.
Strided convolutions take their image gradient from the whole-batch path (col2im).
"""
import numpy as np

from .. import cpu_threads
from .. import im2col as cols
from ..kernels import cpu

# Images per work item. The weight gradient is summed per item, then over the items in order,
# so it does not depend on the number of threads.
CHUNK = 4


def usable(layer, xp):
    return (xp is np and not layer.reverse and cpu.get("im2col", np) is not None and
            cpu_threads.available())


def _kernel():
    return cpu.get("im2col", np).image_columns


def _scratch(name, shape, dtype):
    return cols.workspace(name).get(np, shape, dtype)   # per thread: workspaces are


def forward(layer, x, y, bias):
    """y (N, G, Cgo, OH*OW) = the convolution of x (N, G, Cgi, H, W) (+ bias (G, Cgo))."""
    image_columns = _kernel()
    wk = layer._weights_rows(np)                       # (G, Cgo, kh*kw*Cgi)
    g_n, cgi, h, w = x.shape[1:]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel, layer.stride, layer.pad, \
        layer.dilation
    oh, ow = layer.res_hw

    def part(lo, hi):
        col = _scratch("conv_col", (g_n, oh * ow, kh * kw * cgi), x.dtype)
        tmp = _scratch("conv_tmp", (h + 2 * ph, (w + 2 * pw) * cgi), x.dtype)
        for n in range(lo, hi):
            image_columns(x, n, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
            for g in range(g_n):
                out = y[n, g]
                np.matmul(wk[g], col[g].T, out=out)
                if bias is not None:
                    out += bias[g][:, None]

    cpu_threads.run(part, x.shape[0], CHUNK)


def weight_and_image_gradients(layer, x, dy, dx, want_w, want_x):
    """Accumulate dW (when ``want_w``) and fill dx (N, G, Cgi, H*W) (when ``want_x``, stride 1
    only: ``layer.flipped``) from x (N, G, Cgi, H, W) and dy (N, G, Cgo, OH, OW)."""
    image_columns = _kernel()
    g_n, cgi, h, w = x.shape[1:]
    cgo, (oh, ow) = dy.shape[2], layer.res_hw
    (kh, kw), (dh, dw) = layer.kernel, layer.dilation
    kk = kh * kw
    flip = want_x
    if flip:
        if not layer.flipped:
            raise ValueError("the per-image image gradient needs a stride-1 convolution")
        wf = layer._weights_flipped(np)                # (G, Cgi, kk*Cgo)
        fph, fpw = layer.flip_pad
    else:
        (sh, sw), (ph, pw) = layer.stride, layer.pad

    def part(lo, hi):
        acc = None
        if flip:
            col = _scratch("conv_colf", (g_n, h * w, kk * cgo), dy.dtype)
            tmp = _scratch("conv_tmpf", (oh + 2 * fph, (ow + 2 * fpw) * cgo), dy.dtype)
            if want_w:
                acc = np.zeros((g_n, cgi, kk * cgo), dy.dtype)
                prod = _scratch("conv_prod", (cgi, kk * cgo), dy.dtype)
            for n in range(lo, hi):
                image_columns(dy, n, col, tmp, kh, kw, 1, 1, fph, fpw, dh, dw, h, w)
                for g in range(g_n):
                    np.matmul(wf[g], col[g].T, out=dx[n, g])
                    if want_w:
                        np.matmul(x[n, g].reshape(cgi, h * w), col[g], out=prod)
                        acc[g] += prod
            return acc
        col = _scratch("conv_col", (g_n, oh * ow, kk * cgi), x.dtype)
        tmp = _scratch("conv_tmp", (h + 2 * ph, (w + 2 * pw) * cgi), x.dtype)
        acc = np.zeros((g_n, cgo, kk * cgi), x.dtype)
        prod = _scratch("conv_prod", (cgo, kk * cgi), x.dtype)
        for n in range(lo, hi):
            image_columns(x, n, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
            for g in range(g_n):
                np.matmul(dy[n, g].reshape(cgo, oh * ow), col[g], out=prod)
                acc[g] += prod
        return acc

    parts = cpu_threads.run(part, x.shape[0], CHUNK)
    if want_w and parts:
        total = parts[0]
        for p in parts[1:]:
            total += p
        if flip:
            layer._add_weight_diff_flipped(total)
        else:
            layer._add_weight_diff_rows(total)

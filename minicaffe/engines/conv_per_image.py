"""Convolution on NumPy arrays one image at a time, the images split over the cores.

Each thread of ``engines.cpu_threads.run`` takes its own images; per image and group it
builds the columns with the serial kernel ``kernels.cpu_im2col.image_columns`` (under 1 MB for
the example's layers, so they stay in the core's cache) and multiplies them with
single-threaded BLAS straight into the NCHW output. Same products as the Convolution layer's
whole-batch path (see its docstring for the column layout, the flipped-kernel image gradient
and the weight gradient taken from the flipped columns), only cut per image: no batch-sized
column buffer, no output transposes, and nothing kept from forward to backward.

Used for Convolution on NumPy arrays when the numba kernels are on and BLAS's threads can be
held to one (threadpoolctl); the whole-batch path serves CuPy, Deconvolution and the rest.
Strided convolutions take their image gradient from the whole-batch path (col2im).
"""
import numpy as np

from . import cpu_threads
from ..kernels import array_im2col as cols
from ..kernels import cpu

# Images per work item. The weight gradient is summed per item, then over the items in order,
# so it does not depend on the number of threads.
CHUNK = 4


def usable(layer, xp):
    return (xp is np and not layer.reverse and cpu.get("im2col", np) is not None and
            cpu_threads.available())


def _kernel():
    return cpu.get("im2col", np).image_columns


def caffe_order(layer):
    """Whether to build columns in Caffe's (c, i, j) x (oh, ow) order, whose copies are runs of
    OW values, rather than in (i, j, c) order (runs of KW*Cg): for a first layer on RGB input,
    runs of 32 instead of 15. The weights then serve as they are, (Co, Ci*kh*kw)."""
    return layer.kernel[1] * layer.cg_in < layer.res_hw[1]


def _scratch(name, shape, dtype):
    return cols.workspace(name).get(np, shape, dtype)   # workspaces are per thread


def _columns_of_input(layer, x):
    """(kernel, columns buffer shape, tmp shape, whether the columns are Caffe's order)."""
    g_n, cgi, h, w = x.shape[1:]
    (kh, kw), (ph, pw), (oh, ow) = layer.kernel, layer.pad, layer.res_hw
    if caffe_order(layer):
        return (cpu.get("im2col", np).image_columns_caffe, (g_n, kh * kw * cgi, oh * ow),
                (cgi, h + 2 * ph, w + 2 * pw), True)
    return (_kernel(), (g_n, oh * ow, kh * kw * cgi), (h + 2 * ph, (w + 2 * pw) * cgi), False)


def forward(layer, x, y, bias):
    """y (N, G, Cgo, OH*OW) = the convolution of x (N, G, Cgi, H, W) (+ bias (G, Cgo))."""
    g_n = x.shape[1]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel, layer.stride, layer.pad, \
        layer.dilation
    oh, ow = layer.res_hw
    columns, col_shape, tmp_shape, caffe = _columns_of_input(layer, x)
    # Caffe's order multiplies the weights as they are; the other wants (i, j, c) rows.
    wk = layer.blobs[0].xdata.reshape(g_n, layer.cg_out, -1) if caffe else \
        layer._weights_rows(np)

    def part(lo, hi):
        col = _scratch("conv_col", col_shape, x.dtype)
        tmp = _scratch("conv_tmp", tmp_shape, x.dtype)
        for n in range(lo, hi):
            columns(x, n, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
            for g in range(g_n):
                out = y[n, g]
                np.matmul(wk[g], col[g] if caffe else col[g].T, out=out)
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
        columns, col_shape, tmp_shape, caffe = _columns_of_input(layer, x)

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
        col = _scratch("conv_col", col_shape, x.dtype)
        tmp = _scratch("conv_tmp", tmp_shape, x.dtype)
        acc = np.zeros((g_n, cgo, kk * cgi), x.dtype)
        prod = _scratch("conv_prod", (cgo, kk * cgi), x.dtype)
        for n in range(lo, hi):
            columns(x, n, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
            for g in range(g_n):
                np.matmul(dy[n, g].reshape(cgo, oh * ow), col[g].T if caffe else col[g],
                          out=prod)
                acc[g] += prod
        return acc

    parts = cpu_threads.run(part, x.shape[0], CHUNK)
    if want_w and parts:
        total = parts[0]
        for p in parts[1:]:
            total += p
        if flip:
            layer._add_weight_diff_flipped(total)
        elif caffe:             # already in W's own (Co, Ci/G * kh * kw) order
            dw = layer.blobs[0].xdiff.reshape(total.shape)
            dw += total
        else:
            layer._add_weight_diff_rows(total)

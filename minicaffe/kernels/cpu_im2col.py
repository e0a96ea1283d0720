"""Column kernels (numba, CPU), one image per parallel task, in the channels-last column
layout of ``kernels.array_im2col``:

    col[g, (n, oh, ow), (i, j, c)] = padded[g, n, oh*sh + i*dh, ow*sw + j*dw, c]

* ``col2im(col, padded, kernel, stride, dilation, out_hw)``: as the CUDA family
  ``minicaffe.kernels.cuda.im2col`` (strided convolutions' image gradient);
* ``im2col_nchw(x, col, kernel, stride, pad, dilation, out_hw)``: the columns straight from
  the layer's (N, G, Cg, H, W) input, each image padded and turned channels last in a small
  per-task buffer that stays in cache. This replaces the whole-batch padded copy and the
  strided copy (two passes over memory, one core) with one parallel pass.

Why compiled: the NumPy versions copy runs of only KW*Cg values (15 for a 5x5 kernel over RGB)
and col2im is KH*KW strided additions; here each image is one task for both cores. (The
padded-input ``im2col`` of the CUDA family has no CPU twin: ``im2col_nchw`` takes its place.)
"""
import numba
import numpy as np


@numba.njit(nogil=True, inline="always")
def _image_columns(x, n, r0, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    """Image n of x (N, G, Cg, H, W) into rows r0.. of col (G, rows, KH*KW*Cg), through
    ``tmp`` (H+2ph, (W+2pw)*Cg), the zero-bordered image channels last. Copies go through
    flat views (plain offsets): 3-4 % faster per image than 2-D slices in an interleaved probe."""
    g_n, cg, h, w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    run = kw * cg
    wp = (w + 2 * pw) * cg
    k_len = kh * run
    t1 = tmp.reshape(-1)
    t1[:] = 0
    for g in range(g_n):
        for c in range(cg):
            for y in range(h):
                base = (y + ph) * wp + pw * cg + c
                for z in range(w):
                    t1[base + z * cg] = x[n, g, c, y, z]
        c1 = col[g].reshape(-1)
        for oh in range(oh_n):
            for ow in range(ow_n):
                d0 = (r0 + oh * ow_n + ow) * k_len
                for i in range(kh):
                    s0 = (oh * sh + i * dh) * wp
                    if dw == 1:
                        s = s0 + ow * sw * cg
                        d = d0 + i * run
                        c1[d:d + run] = t1[s:s + run]
                    else:
                        for j in range(kw):
                            s = s0 + (ow * sw + j * dw) * cg
                            d = d0 + (i * kw + j) * cg
                            c1[d:d + cg] = t1[s:s + cg]


@numba.njit(parallel=True, cache=True, nogil=True)
def _nchw_kernel(x, col, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    n_img, cg, h, w = x.shape[0], x.shape[2], x.shape[3], x.shape[4]
    for n in numba.prange(n_img):
        tmp = np.empty((h + 2 * ph, (w + 2 * pw) * cg), dtype=x.dtype)
        _image_columns(x, n, n * oh_n * ow_n, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh_n,
                       ow_n)


@numba.njit(cache=True, nogil=True)
def image_columns(x, n, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    """One image's columns, serial: for the per-image convolution (``engines.conv_per_image``),
    whose threads each take their own images."""
    _image_columns(x, n, 0, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n)


@numba.njit(cache=True, nogil=True)
def image_columns_caffe(x, n, col, tmp, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n):
    """One image in Caffe's own column order, serial: col[g, (c, i, j), (oh, ow)] = x[n, g, c,
    oh*sh - ph + i*dh, ow*sw - pw + j*dw] (0 outside), through ``tmp`` (Cg, H+2ph, W+2pw).
    Each copy is a run of OW values: the better order where KW*Cg is short (an RGB input:
    runs of 15 values; conv1's columns in 50 instead of 90 us per image in a probe)."""
    g_n, cg, h, w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    hp, wp = h + 2 * ph, w + 2 * pw
    ohw = oh_n * ow_n
    t1 = tmp.reshape(-1)
    for g in range(g_n):
        t1[:] = 0
        for c in range(cg):
            for y in range(h):
                base = (c * hp + y + ph) * wp + pw
                for z in range(w):
                    t1[base + z] = x[n, g, c, y, z]
        c1 = col[g].reshape(-1)
        for c in range(cg):
            for i in range(kh):
                for j in range(kw):
                    d0 = ((c * kh + i) * kw + j) * ohw
                    for oh in range(oh_n):
                        s = (c * hp + oh * sh + i * dh) * wp + j * dw
                        d = d0 + oh * ow_n
                        if sw == 1:
                            c1[d:d + ow_n] = t1[s:s + ow_n]
                        else:
                            for q in range(ow_n):
                                c1[d + q] = t1[s + q * sw]


@numba.njit(parallel=True, cache=True, nogil=True)
def _col2im_kernel(col, padded, kh, kw, sh, sw, dh, dw, oh_n, ow_n):
    g_n, n_img, hp, wp, cg = padded.shape
    for n in numba.prange(n_img):
        for g in range(g_n):
            padded[g, n] = 0
            for oh in range(oh_n):
                for ow in range(ow_n):
                    r = (n * oh_n + oh) * ow_n + ow
                    for i in range(kh):
                        for j in range(kw):
                            b = (i * kw + j) * cg
                            padded[g, n, oh * sh + i * dh, ow * sw + j * dw] += col[g, r, b:b + cg]


def _cols3(col, padded_shape, kernel, out_hw):
    g, n = padded_shape[:2]
    return col.reshape(g, n * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * padded_shape[-1])


def col2im(col, padded, kernel, stride, dilation, out_hw):
    _col2im_kernel(_cols3(col, padded.shape, kernel, out_hw), padded, kernel[0], kernel[1],
                   stride[0], stride[1], dilation[0], dilation[1], out_hw[0], out_hw[1])
    return padded


def im2col_nchw(x, col, kernel, stride, pad, dilation, out_hw):
    """col (G, N*OH*OW, KH*KW*Cg) from x (N, G, Cg, H, W), zero outside x."""
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    _nchw_kernel(x, col, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1],
                 dilation[0], dilation[1], out_hw[0], out_hw[1])
    return col

"""The remaining simple BVLC Caffe layers: Filter, HDF5Output, Im2col, MemoryData and SPP, with
Caffe's parameters, defaults, formulas and output-shape rules.

* Filter: bottoms x_1..x_K and a selector s (the last bottom, shape (N, 1, ...)); top k holds
  the rows i of x_k (along axis 0) with s[i] != 0, in order. Backward copies the top diff
  back to those rows and zeroes the others. K tops for K + 1 bottoms. As in Caffe, the
  reshape done at setup (before any selector data exists) gives the tops all N rows; every
  later reshape reads the selector. The selector gets no gradient: a selector blob that
  needs one is an error, as in Caffe; ``force_backward`` leaves the selector out (where
  Caffe would abort).
* HDF5Output (hdf5_output_param.file_name): the file is created (truncated) at setup; every
  forward writes the data and label bottoms, as 4-D (num, channels, height, width) arrays, to
  the datasets "data" and "label". Caffe can write only once (a second write of the same
  dataset name fails there); here a later forward replaces both datasets. No tops, no
  backward. Needs h5py.
* Im2col (convolution_param kernel/stride/pad/dilation): top (N, C*kh*kw, OH, OW) with
  row c*kh*kw + i*kw + j holding x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] (0 in the
  padding) -- Caffe's column layout, one image per item. Backward is col2im (sums overlaps).
* MemoryData (memory_data_param batch_size/channels/height/width): serves arrays handed over
  with ``reset(data, labels)`` (pycaffe: ``net.set_input_arrays``) batch by batch, wrapping
  around. Tops: data (B, C, H, W) and labels, (B,) after setup and (B, 1, 1, 1) after each
  forward, as in Caffe. No transformation is applied to the arrays (Caffe warns likewise).
* SPP (spp_param pyramid_height, pool): for level l < pyramid_height, Pooling with
  bins = 2^l, kernel = ceil(size / bins), pad = (kernel*bins - size + 1) / 2 and
  stride = kernel on each axis; every level flattened to (N, C*ph*pw) and concatenated along
  axis 1. With pyramid_height 1 the top is the single pooling output (N, C, 1, 1).
"""
import logging
import math

import numpy as np

from ..errors import LayerError, ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2
from ..blob import Blob
from ..kernels import array_im2col as win
from .conv import read_geometry

log = logging.getLogger("minicaffe")


def _fmt(shape):
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _no_in_place(layer, bottom, top):
    for t in top:
        if any(t is b for b in bottom):
            layer.fail("does not allow in-place computation (give the top blob its own name)")


def _legacy_shape(layer, blob, what):
    """Caffe's (num, channels, height, width) of a blob with at most 4 axes."""
    if blob.num_axes > 4:
        layer.fail(f"{what} needs at most 4 axes (Caffe's num/channels/height/width), got shape "
                   f"{_fmt(blob.shape)}", ShapeError)
    return (blob.num, blob.channels, blob.height, blob.width)


# ---------------------------------------------------------------------------------------------
@register("Filter")
class FilterLayer(Layer):
    min_num_bottom = 2
    min_num_top = 1

    def layer_setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            self.fail(f"needs one top per filtered bottom (bottoms minus the selector): "
                      f"{len(bottom)} bottoms need {len(bottom) - 1} tops, got {len(top)}")
        _no_in_place(self, bottom, top)
        self._selector = len(bottom) - 1
        self._first_reshape = True
        self.indices = None

    def allow_force_backward(self, bottom_index):
        # force_backward never asks for the selector's gradient (Caffe would abort there).
        return bottom_index != self._selector

    def reshape(self, bottom, top):
        _no_in_place(self, bottom, top)
        sel = bottom[-1]
        if sel.num_axes < 1:
            self.fail("the selector (last bottom) needs at least one axis", ShapeError)
        if any(s != 1 for s in sel.shape[1:]):
            self.fail(f"selector (last bottom) dimensions must be singletons (1) except the "
                      f"first; got shape {_fmt(sel.shape)}", ShapeError)
        n = sel.shape[0]
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes < 1 or b.shape[0] != n:
                self.fail(f"each bottom needs the selector's first dimension: bottom {i} has "
                          f"shape {_fmt(b.shape)}, the selector {_fmt(sel.shape)}", ShapeError)
        xp = sel.xp
        self.indices = xp.flatnonzero(sel.xdata.reshape(-1))
        num = int(self.indices.size)
        if self._first_reshape:        # no selector data yet at setup: all rows (Caffe)
            num = bottom[0].shape[0]
            self._first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((num,) + tuple(b.shape[1:]))

    def forward(self, bottom, top):
        idx = self.indices
        for t, b in zip(top, bottom):
            shape = (int(idx.size),) + tuple(b.shape[1:])
            if tuple(t.shape) != shape:     # forward right after setup, without a reshape
                t.reshape(shape)
            b.xp.take(b.xdata, idx, axis=0, out=t.xdata)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            self.fail("cannot backpropagate to the selector (last bottom); the blob feeding it "
                      "must not need a gradient")
        idx = self.indices
        for i, (t, b) in enumerate(zip(top, bottom)):
            if not propagate_down[i]:
                continue
            dx = b.xdiff
            dx[...] = 0
            if idx.size:
                dx[idx] = t.xdiff


# ---------------------------------------------------------------------------------------------
@register("HDF5Output")
class HDF5OutputLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 0

    def layer_setup(self, bottom, top):
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            self.fail("hdf5_output_param.file_name is required")
        try:
            import h5py
        except ImportError:
            self.fail("HDF5Output needs the h5py package: pip install h5py")
        try:
            with h5py.File(self.file_name, "w"):
                pass
        except OSError as e:
            self.fail(f"cannot create HDF5 file '{self.file_name}': {e}")

    def reshape(self, bottom, top):
        d = _legacy_shape(self, bottom[0], "the data bottom")
        lab = _legacy_shape(self, bottom[1], "the label bottom")
        if d[0] != lab[0]:
            self.fail(f"data and label bottoms must have the same batch size (num): data "
                      f"{_fmt(bottom[0].shape)}, label {_fmt(bottom[1].shape)}", ShapeError)
        self._shapes = (d, lab)

    def forward(self, bottom, top):
        import h5py
        arrays = [np.ascontiguousarray(b.cpu_data()).reshape(s)
                  for b, s in zip(bottom, self._shapes)]
        log.info("Saving HDF5 file %s", self.file_name)
        try:
            with h5py.File(self.file_name, "a") as f:
                for name, a in zip(("data", "label"), arrays):
                    if name in f:
                        del f[name]
                    f.create_dataset(name, data=a)
        except OSError as e:
            self.fail(f"cannot write HDF5 file '{self.file_name}': {e}")
        log.info("Successfully saved %d rows", arrays[0].shape[0])

    def backward(self, top, propagate_down, bottom):
        pass


# ---------------------------------------------------------------------------------------------
def _windows_view(xp, padded, kernel, stride, dilation, out_hw):
    """Strided view (M, C, kh, kw, OH, OW) of ``padded`` (M, C, Hp, Wp):
    view[m, c, i, j, oh, ow] = padded[m, c, oh*sh + i*dh, ow*sw + j*dw]."""
    sm, sc, sh, sw = padded.strides
    shape = padded.shape[:2] + tuple(kernel) + tuple(out_hw)
    strides = (sm, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1])
    return xp.lib.stride_tricks.as_strided(padded, shape=shape, strides=strides)


@register("Im2col")
class Im2colLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        read_geometry(self, self.layer_param.convolution_param, bottom[0])
        self._padded = win.Scratch()
        self._key = None

    def reshape(self, bottom, top):
        _no_in_place(self, bottom, top)
        b = bottom[0]
        if b.num_axes != self.axis + 3:
            self.fail(f"bottom num_axes may not change: got shape {_fmt(b.shape)}", ShapeError)
        c, h, w = b.shape[self.axis:]
        ext = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel))
        if h + 2 * self.pad[0] < ext[0] or w + 2 * self.pad[1] < ext[1]:
            self.fail(f"kernel {self.kernel} (dilation {self.dilation}, pad {self.pad}) does not "
                      f"fit the input of shape {_fmt(b.shape)}", ShapeError)
        self.out_hw = tuple((s + 2 * p - e) // st + 1 for s, p, e, st in
                            zip((h, w), self.pad, ext, self.stride))
        self.num = b.count_range(0, self.axis)
        self.chw = (c, h, w)
        top[0].reshape(tuple(b.shape[:self.axis]) + (c * self.kernel[0] * self.kernel[1],) +
                       self.out_hw)
        key = ((h, w), self.out_hw)
        if key != self._key:
            self._key = key
            self.offsets = win.window_offsets(self.kernel, self.stride, self.pad, (h, w),
                                              self.out_hw, self.dilation)

    def forward(self, bottom, top):
        x = bottom[0].xdata
        xp = bottom[0].xp
        c, h, w = self.chw
        ph, pw = self.pad
        x = x.reshape(self.num, c, h, w)
        if ph or pw:
            padded = self._padded.get(xp, (self.num, c, h + 2 * ph, w + 2 * pw), x.dtype)
            padded[...] = 0
            padded[:, :, ph:ph + h, pw:pw + w] = x
        else:
            padded = x
        kh, kw = self.kernel
        cols = top[0].xdata.reshape((self.num, c, kh, kw) + self.out_hw)
        cols[...] = _windows_view(xp, padded, self.kernel, self.stride, self.dilation,
                                  self.out_hw)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        c, h, w = self.chw
        kh, kw = self.kernel
        dx = bottom[0].xdiff.reshape(self.num, c, h, w)
        dy = top[0].xdiff.reshape((self.num, c, kh * kw) + self.out_hw)
        dx[...] = 0
        for k, (oh, ow), (ih, iw) in self.offsets:
            dx[:, :, ih, iw] += dy[:, :, k, oh, ow]


# ---------------------------------------------------------------------------------------------
@register("MemoryData")
class MemoryDataLayer(Layer):
    exact_num_bottom = 0
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)
        if self.batch_size * self.channels * self.height * self.width <= 0:
            self.fail("batch_size, channels, height, and width must be specified and positive "
                      "in memory_data_param")
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size)
        self._data = self._labels = None
        self.n = self.pos = 0

    def reset(self, data, labels):
        """Serve ``data`` (N, C, H, W) and ``labels`` (N, or N x 1 x 1 x 1) from the next
        forward on, ``batch_size`` items at a time: float32 C-contiguous NumPy arrays with N a
        multiple of batch_size (pycaffe's rules). The arrays are kept, not copied: changes
        made to them later show in the batches served after."""
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, None, None, None])
        for name, a, chw in (("data array", data, (self.channels, self.height, self.width)),
                             ("labels array", labels, (1, 1, 1))):
            if not isinstance(a, np.ndarray):
                self.fail(f"{name} must be a NumPy array, got {type(a).__name__}")
            if not a.flags.c_contiguous:
                self.fail(f"{name} must be C contiguous (np.ascontiguousarray)")
            if a.ndim != 4:
                self.fail(f"{name} must be 4-d, got shape {_fmt(a.shape)}", ShapeError)
            if a.dtype != np.float32:
                self.fail(f"{name} must be float32, got {a.dtype}")
            if tuple(a.shape[1:]) != chw:
                self.fail(f"{name} has shape {_fmt(a.shape)}; memory_data_param needs "
                          f"(N, {', '.join(str(s) for s in chw)})", ShapeError)
        if data.shape[0] != labels.shape[0]:
            self.fail(f"data and labels must have the same first dimension: data "
                      f"{_fmt(data.shape)}, labels {_fmt(labels.shape)}", ShapeError)
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            self.fail(f"first dimensions of input arrays must be a (positive) multiple of "
                      f"batch size {self.batch_size}, got {data.shape[0]}", ShapeError)
        if self.layer_param.HasField("transform_param"):
            log.warning("%s layer '%s' does not transform array data on reset()", self.type,
                        self.name)
        self._data, self._labels = data, labels
        self.n, self.pos = int(data.shape[0]), 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        if self._data is None:
            self.fail("has no data: call net.set_input_arrays(data, labels) (Caffe's Reset) "
                      "before the forward pass", LayerError)
        b, pos = self.batch_size, self.pos
        top[0].reshape(b, self.channels, self.height, self.width)
        top[1].reshape(b, 1, 1, 1)
        for t, a in zip(top, (self._data, self._labels)):
            t.xdata[...] = t.xp.asarray(a[pos:pos + b])
        self.pos = (pos + b) % self.n

    def backward(self, top, propagate_down, bottom):
        pass


# ---------------------------------------------------------------------------------------------
SPP = caffe_pb2.SPPParameter
POOL = caffe_pb2.PoolingParameter


@register("SPP")
class SPPLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.spp_param
        self.height = int(p.pyramid_height)
        if self.height < 1:
            self.fail(f"spp_param.pyramid_height must be at least 1, got {self.height}")
        methods = {SPP.MAX: POOL.MAX, SPP.AVE: POOL.AVE, SPP.STOCHASTIC: POOL.STOCHASTIC}
        if p.pool not in methods:
            self.fail(f"unknown pooling method {p.pool}")
        self.method = methods[p.pool]
        if self.method == POOL.STOCHASTIC:
            self.fail("STOCHASTIC pooling is not supported")
        self._key = None
        self.pools = []
        self._outs = []
        self._aux = None     # shares the bottom's data, own diff: sums the levels' gradients

    def _pooling_param(self, level, h, w):
        bins = 2 ** level
        lp = caffe_pb2.LayerParameter(name=f"{self.name}/level{level}", type="Pooling",
                                      phase=self.phase)
        pp = lp.pooling_param
        pp.pool = self.method
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        pp.kernel_h, pp.kernel_w = kh, kw
        pp.stride_h, pp.stride_w = kh, kw
        pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        return lp

    def _build(self, bottom, top, h, w):
        from .pooling import PoolingLayer
        self.pools, self._outs = [], []
        for level in range(self.height):
            out = top[0] if self.height == 1 else Blob(dtype=bottom[0].dtype)
            pool = PoolingLayer(self._pooling_param(level, h, w))
            try:
                pool.setup([bottom[0]], [out])
            except LayerError as e:
                self.fail(f"pyramid level {level} ({2 ** level}x{2 ** level} bins) cannot pool "
                          f"the input of shape {_fmt(bottom[0].shape)}: {e}", ShapeError)
            self.pools.append(pool)
            self._outs.append(out)

    def reshape(self, bottom, top):
        _no_in_place(self, bottom, top)
        b = bottom[0]
        if b.num_axes != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape "
                      f"{_fmt(b.shape)}", ShapeError)
        n, c, h, w = b.shape
        if h <= 0 or w <= 0:
            self.fail(f"input dimensions cannot be zero, got shape {_fmt(b.shape)}", ShapeError)
        if (h, w, b.dtype) != self._key:
            self._key = (h, w, b.dtype)
            self._build(bottom, top, h, w)
        for pool, out in zip(self.pools, self._outs):
            pool.reshape([b], [out])
        if self.height == 1:
            return
        self.lengths = [out.count_range(1) for out in self._outs]
        top[0].reshape(n, sum(self.lengths))
        if self._aux is None or self._aux.dtype != b.dtype:
            self._aux = Blob(dtype=b.dtype)
        if tuple(self._aux.shape) != tuple(b.shape):
            self._aux.reshape(b.shape)
        self._aux.share_data(b)

    def forward(self, bottom, top):
        if self.height == 1:
            self.pools[0].forward(bottom, top)
            return
        y = top[0].xdata
        n, start = y.shape[0], 0
        for pool, out, length in zip(self.pools, self._outs, self.lengths):
            pool.forward(bottom, [out])
            y[:, start:start + length] = out.xdata.reshape(n, length)
            start += length

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.height == 1:
            self.pools[0].backward(top, propagate_down, bottom)
            return
        dy = top[0].xdiff
        start = 0
        self._aux.share_data(bottom[0])
        for level, (pool, out, length) in enumerate(zip(self.pools, self._outs, self.lengths)):
            out.xdiff[...] = dy[:, start:start + length].reshape(out.shape)
            start += length
            if level == 0:
                pool.backward([out], [True], bottom)       # overwrites bottom diff
            else:
                pool.backward([out], [True], [self._aux])
                bottom[0].xdiff[...] += self._aux.xdiff

"""Pooling (pooling_param): MAX and AVE over kh x kw windows, Caffe's geometry; STOCHASTIC
goes to ``stochastic_pooling`` (same output size, offsets without padding).

For output position (ph, pw) the window starts at (ph*sh - pad_h, pw*sw - pad_w):

    MAX:  y = max of the window's real pixels (padding never wins); the argmax is the first
          maximum in row-major window order (Caffe's strict ">" scan).
    AVE:  y = sum of the window's real pixels / pool_size, where pool_size counts the window
          clipped to the padded image [-pad, size + pad) -- padding counts, overhang does not.

Where compiled kernels apply (``kernels.get("pooling", xp)``: numba on NumPy arrays, CUDA on
CuPy arrays), both methods run as kernels over the planes (image x channel): MAX forward keeps
each window's winner (int32 flat index in its plane) for backward and the mask top, and MAX
backward adds each output's gradient at its winner.

Otherwise both directions loop over the kh*kw kernel offsets only (see
``kernels.array_im2col.window_offsets``): at each offset one strided slice of the input meets the block of
outputs whose window samples it. MAX forward only takes running maxima (one ``fmax`` per
offset); the winning pixels are found again from the bottom and a kept copy of the output when
backward (or the mask top) needs them, scanning the offsets in order so that ties go to the
first pixel.

On NumPy float32 blobs, AVE pooling on small planes runs on oneDNN instead when
``engines.selection`` picks it (the default where the library loads) and
``engines/onednn/pool_layer.py`` finds it the faster engine there.
"""
import numpy as np

from ..kernels import array_im2col as win
from .. import kernels
from ..backend import get_array_module
from ..engines import selection
from ..engines.onednn.pool_layer import PoolLayerEngine
from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2
from .stochastic_pooling import StochasticPooling

P = caffe_pb2.PoolingParameter
ARGMAX_PLANES_FORWARD_ONLY = 4096


@register("Pooling")
class PoolingLayer(Layer):
    exact_num_bottom = 1
    min_num_top = 1
    max_num_top = 2

    # -- setup -------------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        p = self.layer_param.pooling_param
        self.method = p.pool
        if len(top) > 1 and self.method != P.MAX:
            self.fail(f"only MAX pooling has a second top (the argmax mask); got {len(top)} tops")
        self.global_pooling = p.global_pooling
        has_kh, has_kw = p.HasField("kernel_h"), p.HasField("kernel_w")
        if self.global_pooling:
            if p.HasField("kernel_size") or has_kh or has_kw:
                self.fail("with global_pooling: true the filter size cannot be specified")
        else:
            if p.HasField("kernel_size") == (has_kh and has_kw):
                self.fail("filter size is kernel_size OR kernel_h and kernel_w; not both")
            if not p.HasField("kernel_size") and not (has_kh and has_kw):
                self.fail("for non-square filters both kernel_h and kernel_w are required")
        if p.HasField("pad_h") or p.HasField("pad_w"):
            if p.HasField("pad") or not (p.HasField("pad_h") and p.HasField("pad_w")):
                self.fail("pad is pad OR pad_h and pad_w are required")
            self.pad = (p.pad_h, p.pad_w)
        else:
            self.pad = (p.pad, p.pad)
        if self.method == P.STOCHASTIC:
            if self.pad != (0, 0):
                self.fail(f"padding is implemented only for MAX and AVE pooling, got pad "
                          f"{self.pad} with STOCHASTIC")
            self.stochastic = StochasticPooling()
        if p.HasField("stride_h") or p.HasField("stride_w"):
            if p.HasField("stride") or not (p.HasField("stride_h") and p.HasField("stride_w")):
                self.fail("stride is stride OR stride_h and stride_w are required")
            self.stride = (p.stride_h, p.stride_w)
        else:
            self.stride = (p.stride, p.stride)
        if min(self.stride) <= 0:
            self.fail(f"stride must be positive, got {self.stride}")
        if self.global_pooling:
            if self.pad != (0, 0) or self.stride != (1, 1):
                self.fail("with global_pooling: true only pad = 0 and stride = 1 are allowed")
        else:
            self.kernel = (p.kernel_size, p.kernel_size) if p.HasField("kernel_size") \
                else (p.kernel_h, p.kernel_w)
            if min(self.kernel) <= 0:
                self.fail(f"filter dimensions cannot be zero, got {self.kernel}")
            if self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
                self.fail(f"pad {self.pad} must be smaller than the kernel {self.kernel}")
        self.ceil_mode = p.round_mode == P.CEIL
        self._best = win.Scratch()     # MAX: copy of the output, to find the winners again
        self._hit = win.Scratch()      # MAX: bool, this offset's pixel is the window's max
        self._free = win.Scratch()     # MAX: bool, window's winner not found yet
        self._tmp = win.Scratch()      # float work array
        self._argmax = win.Scratch()   # MAX with kernels: int32 winner of each output
        self._key = None
        self.engine = None             # a PoolLayerEngine when oneDNN serves the layer

    def reshape(self, bottom, top):
        x = bottom[0]
        if x.num_axes != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape "
                      f"{tuple(x.shape)}", ShapeError)
        n, c, h, w = x.shape
        if self.global_pooling:
            self.kernel = (h, w)
        # Caffe applies its "last window starts inside" rule to both axes if either is padded.
        self.out_hw = tuple(win.pool_output_size(s, k, st, pd, self.ceil_mode, any(self.pad))
                            for s, k, st, pd in zip((h, w), self.kernel, self.stride, self.pad))
        if min(self.out_hw) <= 0:
            self.fail(f"kernel {self.kernel} with pad {self.pad} does not fit the input "
                      f"{tuple(x.shape)}", ShapeError)
        out_shape = (n, c) + self.out_hw
        for t in top:
            if t is x:
                self.fail("cannot run in place")
            t.reshape(out_shape)
        xp, dtype = x.xp, x.dtype
        # Compiled kernels when available (numba on NumPy arrays, CUDA on CuPy arrays).
        self.fast = kernels.get("pooling", xp)
        # One window covering the whole image: plain reductions instead of offset loops.
        self.whole = self.out_hw == (1, 1) and self.pad == (0, 0)
        if self.whole:
            self.fast = None
        if self.fast is not None:
            if self.method == P.MAX:
                # A forward-only net without a mask top never reads the argmax back: a few
                # planes' worth, reused, instead of one per output (31 MiB at the example's
                # test batch of 1000).
                planes = n * c
                if not self.keeps_backward_state and len(top) == 1:
                    planes = min(planes, ARGMAX_PLANES_FORWARD_ONLY)
                self.argmax = self._argmax.get(xp, (planes,) + self.out_hw, np.int32)
            self.geometry = self.kernel + self.stride + self.pad
        else:
            self._array_buffers(xp, out_shape, dtype)
        key = ((h, w), self.kernel, dtype, xp)
        if key != self._key:
            self._key = key
            every = (slice(None), slice(None))
            self.offsets = [(k, every + o, every + i) for k, o, i in win.window_offsets(
                self.kernel, self.stride, self.pad, (h, w), self.out_hw)]
            self.pool_size = xp.asarray(self._pool_size(h, w), dtype=dtype)
            base, offset = self._mask_tables(w)
            self.mask_base, self.mask_offset = xp.asarray(base, dtype=dtype), offset.tolist()
        self._choose_engine(x)

    def _choose_engine(self, x):
        """oneDNN when ``engines.selection`` picks it and it takes (and wins) this input."""
        if self.method == P.STOCHASTIC or \
                selection.pooling_engine(self.layer_param, x.xp, x.dtype) != selection.ONEDNN:
            self.engine = None
            return
        self.engine = self.engine or PoolLayerEngine(self)
        if not self.engine.reshape(x.shape):
            self.engine = None

    def _array_buffers(self, xp, out_shape, dtype):
        """Work arrays of the offset-loop (array) path."""
        self.tmp = self._tmp.get(xp, out_shape, dtype)
        if self.method == P.MAX:
            self.best = self._best.get(xp, out_shape, dtype)
            self.hit = self._hit.get(xp, out_shape, np.bool_)
            self.free = self._free.get(xp, out_shape, np.bool_)

    def _pool_size(self, h, w):
        """(PH, PW) window sizes clipped to the padded image (Caffe's AVE divisor)."""
        sizes = []
        for out, k, s, pd, size in zip(self.out_hw, self.kernel, self.stride, self.pad, (h, w)):
            start = np.arange(out) * s - pd
            sizes.append(np.minimum(start + k, size + pd) - start)
        return np.outer(sizes[0], sizes[1])

    def _mask_tables(self, w):
        """mask = base[ph, pw] + offset[k]: the flat index h*W + w of offset k's pixel."""
        rows = np.arange(self.out_hw[0]) * self.stride[0] - self.pad[0]
        cols = np.arange(self.out_hw[1]) * self.stride[1] - self.pad[1]
        i, j = np.divmod(np.arange(self.kernel[0] * self.kernel[1]), self.kernel[1])
        return rows[:, None] * w + cols[None, :], i * w + j

    # -- forward -----------------------------------------------------------------------------
    def forward(self, bottom, top):
        x, y = bottom[0].xdata, top[0].xdata
        if self.method == P.STOCHASTIC:
            self.stochastic.forward(x, y, self.offsets, self.phase == caffe_pb2.TRAIN)
        elif self.engine is not None:
            self.engine.forward(x, y)
        elif self.method == P.MAX:
            self._forward_max(x, y, top[1].xdata if len(top) > 1 else None)
        else:
            self._forward_ave(x, y)

    @staticmethod
    def _planes(a):
        n, c, h, w = a.shape
        return a.reshape(n * c, h, w)

    @staticmethod
    def _rows(a):
        """(N*C, H*W): one row per plane (sizes spelt out: -1 cannot be inferred at N*C 0)."""
        n, c, h, w = a.shape
        return a.reshape(n * c, h * w)

    def _forward_max(self, x, y, mask):
        xp = get_array_module(x)
        if self.fast is not None:
            # max(, 1): an empty batch has no planes, and range() takes no step 0
            xs, ys, step = self._planes(x), self._planes(y), max(self.argmax.shape[0], 1)
            for a in range(0, xs.shape[0], step):
                b = min(a + step, xs.shape[0])
                self.fast.max_forward(xs[a:b], ys[a:b], self.argmax[:b - a], *self.geometry)
            if mask is not None:
                mask.reshape(self.argmax.shape)[...] = self.argmax
            return
        if self.whole:
            n, c = x.shape[:2]
            xp.max(self._rows(x), axis=1, out=y.reshape(n * c))
            if mask is not None:
                mask.reshape(n * c)[...] = self._rows(x).argmax(axis=1)
            return
        y[...] = -win.FLT_MAX
        for k, out, inp in self.offsets:
            xp.fmax(y[out], x[inp], out=y[out])    # fmax: a NaN pixel never wins, as in Caffe
        self.best[...] = y     # kept for backward: the top may be changed in place later
        if mask is not None:
            mask[...] = -1
            for k, out, inp, hit in self._winners(x):
                xp.copyto(mask[out], self.mask_base[out[2:]] + self.mask_offset[k], where=hit)

    def _winners(self, x):
        """For each kernel offset (in Caffe's scan order): the outputs whose max pixel is that
        offset's pixel and was not already found at an earlier offset (ties: first wins)."""
        xp = get_array_module(x)
        self.free[...] = True
        for k, out, inp in self.offsets:
            hit, free = self.hit[out], self.free[out]
            xp.equal(x[inp], self.best[out], out=hit)
            hit &= free
            free ^= hit
            yield k, out, inp, hit

    def _forward_ave(self, x, y):
        xp = get_array_module(x)
        n, c = x.shape[:2]
        if self.fast is not None:
            self.fast.ave_forward(self._planes(x), self._planes(y), *self.geometry,
                                  self.pool_size)
            return
        if self.whole:
            xp.sum(self._rows(x), axis=1, out=y.reshape(n * c))
        else:
            y[...] = 0
            for k, out, inp in self.offsets:
                y[out] += x[inp]
        xp.divide(y, self.pool_size, out=y)

    # -- backward ----------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].xdiff, bottom[0].xdiff
        if self.method == P.STOCHASTIC:
            # Caffe's TEST forward chooses no pixels; its backward would route the gradient
            # through stale or zero indices.
            if self.phase != caffe_pb2.TRAIN:
                self.fail("STOCHASTIC pooling has no backward in the TEST phase")
            self.stochastic.backward(dy, dx, self.offsets)
            return
        if self.engine is not None:
            self.engine.backward(dy, dx)
            return
        if self.fast is not None:
            if self.method == P.MAX:
                if self.argmax.shape[0] != dx.shape[0] * dx.shape[1]:
                    self.fail("backward needs the argmax of every output, which a forward-only "
                              "net does not keep (Net.set_forward_only)")
                self.fast.max_backward(self._planes(dy), self.argmax, self._planes(dx))
            else:
                self.fast.ave_backward(self._planes(dy), self._planes(dx), *self.geometry,
                                       self.pool_size)
            return
        xp = get_array_module(dx)
        n, c = dx.shape[:2]
        if self.method == P.MAX:
            dx[...] = 0
            if self.whole:
                flat = self._rows(bottom[0].xdata)
                self._rows(dx)[xp.arange(n * c), flat.argmax(axis=1)] = dy.reshape(-1)
                return
            for k, out, inp, hit in self._winners(bottom[0].xdata):
                dx[inp] += xp.multiply(dy[out], hit, out=self.tmp[out])
        else:
            share = xp.divide(dy, self.pool_size, out=self.tmp)
            if self.whole:
                dx[...] = share
                return
            dx[...] = 0
            for k, out, inp in self.offsets:
                dx[inp] += share[out]

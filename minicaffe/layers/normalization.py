"""BatchNorm and the learned affine layers that follow it: Scale and Bias (BVLC Caffe semantics).

All three work on an array viewed as (outer, dim, inner) against a vector of length ``dim``:
BatchNorm with (N, C, H*W...) and a per-channel vector, Scale and Bias with the slice of axes
their parameter covers. ``_Broadcast`` does that arithmetic vectorised: per-``dim`` sums and
dot products as BLAS matrix-vector products (or a row-wise dot), elementwise passes written
into preallocated outputs. When the vector would broadcast over short inner rows it is first
expanded to a (dim * inner) row (cheap: at most 1/8 of the activation), so every elementwise
pass runs over long contiguous rows.

BatchNorm keeps between forward and backward only the centred input x - mean (one
activation-sized buffer) and per-channel vectors; its backward needs one activation-sized
temporary. Forward and backward never read the top's data, so running in place (top ==
bottom) gives the same results as running out of place.

On CuPy arrays (GPU mode) the three layers run the fused kernels of
``minicaffe.kernels.channels`` instead: BatchNorm's statistics in one pass and the moving
averages and normalisation fused, no host reads (global statistics included); Scale/Bias as
one affine kernel and one per-channel reduction for their gradients.
"""
import numpy as np

from .. import backend, kernels
from ..kernels import cuda as _kernels
from ..blob import Blob
from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2

# Expand a per-dim vector to a full (dim * inner) row only when the array has at least this
# many rows of it, so the expanded copy stays small next to the activation.
_EXPAND_MIN_OUTER = 8


def _rowdot(xp, a, b):
    """Dot product of each row of two 2-D arrays."""
    vecdot = getattr(xp, "vecdot", None)
    if vecdot is not None:
        return vecdot(a, b)
    return xp.einsum("ij,ij->i", a, b)


class _Broadcast:
    """Arithmetic between an array of shape (outer, dim, inner) and length-``dim`` vectors."""

    def __init__(self, outer, dim, inner, xp, dtype, slots=3):
        self.outer, self.dim, self.inner = outer, dim, inner
        self.xp, self.dtype = xp, np.dtype(dtype)
        self.count = outer * dim * inner
        if inner == 1:
            self.mode, self.shape = "rows", (outer, dim)
        elif dim == 1:
            self.mode, self.shape = "scalar", (outer, inner)
        elif outer >= _EXPAND_MIN_OUTER:
            self.mode, self.shape = "expand", (outer, dim * inner)
            self._bufs = xp.empty((slots, dim, inner), dtype=self.dtype)
        else:
            self.mode, self.shape = "bcast", (outer, dim, inner)
        self._ones_inner = xp.ones(inner, dtype=self.dtype) if inner > 1 else None
        self._ones_outer = xp.ones(outer, dtype=self.dtype) if outer > 1 else None

    def view(self, a):
        """``a`` (any shape of the right count) as the array this object broadcasts against."""
        return a.reshape(self.shape)

    def vec(self, v, slot):
        """Vector ``v`` (length dim) shaped to broadcast against ``view`` arrays."""
        v = v.reshape(self.dim).astype(self.dtype, copy=False)
        if self.mode == "rows":
            return v
        if self.mode == "scalar":
            return v.reshape(1, 1)
        if self.mode == "expand":
            buf = self._bufs[slot]
            buf[...] = v[:, None]
            return buf.reshape(self.dim * self.inner)
        return v.reshape(self.dim, 1)

    def sum(self, a):
        """Per-dim sum over the outer and inner axes: shape (dim,)."""
        outer, dim, inner = self.outer, self.dim, self.inner
        if inner == 1:
            a2 = a.reshape(outer, dim)
            return self._ones_outer @ a2 if outer > 1 else a2[0].copy()
        rows = outer * dim
        if rows == 1:
            return a.reshape(1, inner).sum(axis=1)
        r = a.reshape(rows, inner) @ self._ones_inner
        return r if outer == 1 else self._ones_outer @ r.reshape(outer, dim)

    def dot(self, a, b):
        """Per-dim sum of a * b over the outer and inner axes: shape (dim,)."""
        xp = self.xp
        outer, dim, inner = self.outer, self.dim, self.inner
        if inner == 1:
            a2, b2 = a.reshape(outer, dim), b.reshape(outer, dim)
            return a2[0] * b2[0] if outer == 1 else xp.einsum("ij,ij->j", a2, b2)
        rows = outer * dim
        if rows == 1:
            return xp.dot(a.reshape(-1), b.reshape(-1)).reshape(1)
        r = _rowdot(xp, a.reshape(rows, inner), b.reshape(rows, inner))
        return r if outer == 1 else self._ones_outer @ r.reshape(outer, dim)


def _same_layout(bc, outer, dim, inner, xp, dtype):
    return (bc is not None and bc.outer == outer and bc.dim == dim and bc.inner == inner
            and bc.xp is xp and bc.dtype == dtype)


def _scratch(buf, shape, like):
    """``buf`` if it already fits ``shape`` and ``like``'s dtype and device, else a new array."""
    xp = backend.get_array_module(like)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != like.dtype or \
            backend.get_array_module(buf) is not xp:
        buf = xp.empty(shape, dtype=like.dtype)
    return buf


# ------------------------------------------------------------------------------------------
@register("BatchNorm")
class BatchNormLayer(Layer):
    """Normalise each channel (axis 1) over all other axes, as Caffe's BatchNorm.

    Parameter blobs (never learned): [C] running sum of means, [C] running sum of variances,
    [1] moving-average factor. Global statistics are sums / factor.
    """
    exact_num_bottom = 1
    exact_num_top = 1

    def default_param_spec(self, param_index):
        return caffe_pb2.ParamSpec(lr_mult=0, decay_mult=0)

    def layer_setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.use_global_stats = self.phase == caffe_pb2.TEST
        if p.HasField("use_global_stats"):
            self.use_global_stats = bool(p.use_global_stats)
        self.eps = float(p.eps)
        for i, spec in enumerate(self.layer_param.param):
            if spec.lr_mult != 0:
                self.fail(f"param {i} has lr_mult {spec.lr_mult:g}, but the batch statistics "
                          "are not learned parameters: give lr_mult 0 or no param at all")
        x = bottom[0]
        if x.num_axes < 1:
            self.fail(f"needs a bottom with at least 1 axis, got shape {tuple(x.shape)}")
        self.channels = 1 if x.num_axes == 1 else x.shape[1]
        C = self.channels
        if self.blobs:
            want = [C, C, 1]
            if len(self.blobs) != 3 or [b.count for b in self.blobs] != want:
                self.fail(f"expects 3 parameter blobs of sizes {want} (mean sum, variance sum, "
                          f"factor), got {[tuple(b.shape) for b in self.blobs]}")
        else:
            self.blobs = [Blob((C,)), Blob((C,)), Blob((1,))]
            for b in self.blobs:
                b.xdata[...] = 0
        # The statistics receive no gradient; the Net overrides this from the ParamSpecs, and
        # backward never writes into these diffs whatever it says.
        self.param_propagate_down = [False] * 3
        self._bc = None
        self._centered = None
        self._inv_std = None
        self._inv_std_b = None
        self._last_global = None
        self._last_fused = False
        self._last_compiled = False
        self._stats = None

    def reshape(self, bottom, top):
        x = bottom[0]
        shape = x.shape
        if x.num_axes >= 2 and shape[1] != self.channels:
            self.fail(f"bottom has {shape[1]} channels (shape {tuple(shape)}), but the layer "
                      f"was set up for {self.channels}", cls=ShapeError)
        if x.num_axes < 1:
            self.fail(f"needs a bottom with at least 1 axis, got shape {tuple(shape)}",
                      cls=ShapeError)
        if top[0] is not x:
            top[0].reshape(shape)
        n = shape[0]
        C = self.channels
        inner = x.count // (n * C) if n * C else 0
        data = x.xdata
        xp = backend.get_array_module(data)
        if not _same_layout(self._bc, n, C, inner, xp, data.dtype):
            self._bc = _Broadcast(n, C, inner, xp, data.dtype)
            self._centered = None

    def _stats_vectors(self, xp):
        """Global mean and variance from the stored sums (factor 0 gives zeros)."""
        factor = float(self.blobs[2].xdata.reshape(-1)[0])
        s = 0.0 if factor == 0 else 1.0 / factor
        mean = xp.asarray(self.blobs[0].xdata, dtype=np.float64).reshape(-1) * s
        var = xp.asarray(self.blobs[1].xdata, dtype=np.float64).reshape(-1) * s
        return mean, var

    def _fused(self, x):
        return backend.fused_kernels(self._bc.xp) and \
            _kernels.supported(x, *(b.xdata for b in self.blobs))

    def _forward_fused(self, x, y):
        bc = self._bc
        cp = bc.xp
        C = bc.dim
        stats = self._stats
        if stats is None or stats.shape != (2, C) or stats.dtype != x.dtype:
            stats = self._stats = cp.empty((2, C), dtype=x.dtype)
        blobs = [b.xdata for b in self.blobs]
        if self.use_global_stats:
            _kernels.channels.bn_forward_global(cp, x, y, blobs, bc.outer, C, bc.inner,
                                                self.eps, stats)
            self._centered = None
        else:
            self._centered = cen = _scratch(self._centered, bc.shape, x)
            _kernels.channels.bn_forward_train(cp, x, y, cen, blobs, bc.outer, C, bc.inner,
                                               self.eps, self.moving_average_fraction, stats)
        self._last_global = self.use_global_stats
        self._last_fused = True

    def _compiled(self):
        """The numba kernels of ``minicaffe.kernels.cpu_channels`` for NumPy arrays, or None."""
        return kernels.get("channels", np) if self._bc.xp is np else None

    def _forward_compiled(self, fast, x, y):
        bc = self._bc
        x3 = x.reshape(bc.outer, bc.dim, bc.inner)
        y3 = y.reshape(x3.shape)
        if self.use_global_stats:
            mean, var = self._stats_vectors(np)
            self._centered = cen3 = None
        else:
            mean, var = np.empty(bc.dim), np.empty(bc.dim)
            fast.stats(x3, mean, var)
            self._update_moving_average(mean, var, bc.outer * bc.inner)
            self._centered = _scratch(self._centered, bc.shape, x)
            cen3 = self._centered.reshape(x3.shape)
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        fast.normalize(x3, mean, self._inv_std, cen3, y3)

    def forward(self, bottom, top):
        bc = self._bc
        x = bottom[0].xdata
        xp = bc.xp
        if bc.count and self._fused(x):
            return self._forward_fused(x, top[0].xdata)
        self._last_fused = False
        fast = self._compiled() if bc.count else None
        self._last_compiled = fast is not None
        if fast is not None:
            self._forward_compiled(fast, x, top[0].xdata)
            self._last_global = self.use_global_stats
            return
        X = bc.view(x)
        Y = bc.view(top[0].xdata)
        if bc.count == 0:
            return
        if self.use_global_stats:
            mean, var = self._stats_vectors(xp)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            xp.subtract(X, bc.vec(mean, 0), out=Y)
            self._inv_std_b = bc.vec(inv_std, 1)
            xp.multiply(Y, self._inv_std_b, out=Y)
            self._centered = None           # global statistics keep no activation buffer
        else:
            m = bc.outer * bc.inner
            mean = bc.sum(X).astype(np.float64) / m
            self._centered = cen = _scratch(self._centered, bc.shape, x)
            xp.subtract(X, bc.vec(mean, 0), out=cen)
            var = bc.dot(cen, cen).astype(np.float64) / m
            self._update_moving_average(mean, var, m)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            self._inv_std_b = bc.vec(inv_std, 1)
            xp.multiply(cen, self._inv_std_b, out=Y)
        self._inv_std = inv_std
        self._last_global = self.use_global_stats

    def _update_moving_average(self, mean, var, m):
        lam = self.moving_average_fraction
        mean_sum, var_sum, factor = (b.xdata.reshape(-1) for b in self.blobs)
        factor *= lam
        factor += 1
        correction = m / (m - 1.0) if m > 1 else 1.0
        mean_sum *= lam
        mean_sum += mean.astype(mean_sum.dtype)
        var_sum *= lam
        var_sum += (correction * var).astype(var_sum.dtype)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or self._bc.count == 0:
            return
        if self._last_global is None:
            self.fail("backward called before forward")
        bc = self._bc
        xp = bc.xp
        if self._last_fused:
            dy, dx = top[0].xdiff, bottom[0].xdiff
            inv_std = self._stats[1]
            if self._last_global:
                _kernels.channels.affine(dy, inv_std, None, dx, bc.outer, bc.dim, bc.inner)
            else:
                _kernels.channels.bn_backward_train(xp, dy, self._centered, dx, inv_std,
                                                    bc.outer, bc.dim, bc.inner)
            return
        if self._last_compiled:
            fast = kernels.get("channels", np)
            shape = (bc.outer, bc.dim, bc.inner)
            dy3, dx3 = top[0].xdiff.reshape(shape), bottom[0].xdiff.reshape(shape)
            if self._last_global:    # dx = (dy - 0) / sqrt(var + eps)
                fast.normalize(dy3, np.zeros(bc.dim), self._inv_std, None, dx3)
            else:
                fast.backward(dy3, self._centered.reshape(shape), self._inv_std, dx3)
            return
        dy = bc.view(top[0].xdiff)
        dx = bc.view(bottom[0].xdiff)
        if self._last_global:
            # mean and variance are constants: dx = dy / sqrt(var + eps)
            xp.multiply(dy, self._inv_std_b, out=dx)
            return
        # With y = (x - mean) * inv_std and c = x - mean (kept from forward):
        #   dx = inv_std * (dy - mean(dy)) - c * inv_std^3 * mean(dy * c)
        cen = self._centered
        m = bc.outer * bc.inner
        inv_std = self._inv_std
        mean_dy = bc.sum(dy).astype(np.float64) / m
        k = bc.dot(dy, cen).astype(np.float64) * (inv_std ** 3 / m)
        tmp = xp.empty(bc.shape, dtype=cen.dtype)      # the one activation-sized temporary
        xp.multiply(cen, bc.vec(k, 2), out=tmp)
        xp.subtract(dy, bc.vec(mean_dy, 0), out=dx)   # dx may be dy (in place): elementwise
        xp.multiply(dx, self._inv_std_b, out=dx)
        xp.subtract(dx, tmp, out=dx)


# ------------------------------------------------------------------------------------------
class _AxisParamLayer(Layer):
    """Shared machinery of Scale and Bias: a vector/tensor applied from ``axis`` on."""
    min_num_bottom = 1
    max_num_bottom = 2
    exact_num_top = 1
    _what = ""          # "scale" or "bias", for messages

    def _axis_param(self):
        raise NotImplementedError

    def _param_shape(self, x, num_axes):
        """Shape of a learned parameter covering ``num_axes`` axes of ``x`` from ``axis``."""
        axis_given = self._axis_param().axis
        try:
            axis = x.canonical_axis_index(axis_given)
        except IndexError:
            self.fail(f"axis {axis_given} is out of range for bottom[0] of shape "
                      f"{tuple(x.shape)}", cls=ShapeError)
        if num_axes < -1:
            self.fail(f"num_axes must be >= 0, or -1 for all remaining axes; got {num_axes}")
        if num_axes == -1:
            return tuple(x.shape[axis:])
        if x.num_axes < axis + num_axes:
            self.fail(f"{self._what} blob's shape extends past bottom[0]'s shape "
                      f"{tuple(x.shape)}: axis {axis} + num_axes {num_axes} > "
                      f"{x.num_axes} axes", cls=ShapeError)
        return tuple(x.shape[axis:axis + num_axes])

    def _layout(self, x, p, top, slots):
        """Check ``p`` (the scale/bias blob) against ``x`` and size the broadcasting helper."""
        shape = x.shape
        if p.num_axes == 0:
            axis = 0
        else:
            axis_given = self._axis_param().axis
            try:
                axis = x.canonical_axis_index(axis_given)
            except IndexError:
                self.fail(f"axis {axis_given} is out of range for bottom[0] of shape "
                          f"{tuple(shape)}", cls=ShapeError)
        if x.num_axes < axis + p.num_axes or \
                tuple(shape[axis:axis + p.num_axes]) != tuple(p.shape):
            self.fail(f"{self._what} shape {tuple(p.shape)} does not match bottom[0] shape "
                      f"{tuple(shape)} starting at axis {axis}", cls=ShapeError)
        if top[0] is not x:
            top[0].reshape(shape)
        outer = x.count_range(0, axis)
        dim = p.count
        inner = x.count_range(axis + p.num_axes)
        data = x.xdata
        xp = backend.get_array_module(data)
        if not _same_layout(self._bc, outer, dim, inner, xp, data.dtype):
            self._bc = _Broadcast(outer, dim, inner, xp, data.dtype, slots=slots)

    @staticmethod
    def _accumulate(blob, g):
        d = blob.xdiff
        d += g.reshape(d.shape).astype(d.dtype, copy=False)


@register("Scale")
class ScaleLayer(_AxisParamLayer):
    """y = x * s (+ b with bias_term), s broadcast from ``axis`` over ``num_axes`` axes.

    s is a learned blob (filler default constant 1) or, with two bottoms, bottom[1]. Run in
    place, the layer keeps a copy of its input for the scale gradient (and only then).
    """
    _what = "scale"

    def _axis_param(self):
        return self.layer_param.scale_param

    def layer_setup(self, bottom, top):
        p = self.layer_param.scale_param
        x = bottom[0]
        self.bias_term = bool(p.bias_term)
        two = len(bottom) == 2
        n_blobs = (0 if two else 1) + (1 if self.bias_term else 0)
        if self.blobs:
            if len(self.blobs) != n_blobs:
                self.fail(f"has {len(self.blobs)} parameter blobs, expects {n_blobs}")
        else:
            if not two:
                shape = self._param_shape(x, p.num_axes)
                filler = p.filler if p.HasField("filler") else \
                    caffe_pb2.FillerParameter(type="constant", value=1)
                self.blobs.append(self.make_param_blob(shape, filler))
            if self.bias_term:
                shape = self._param_shape(x, bottom[1].num_axes if two else p.num_axes)
                self.blobs.append(self.make_param_blob(shape, p.bias_filler))
        self._bias_index = len(self.blobs) - 1 if self.bias_term else None
        self._bc = None
        self._saved = None
        self._saved_valid = False

    def reshape(self, bottom, top):
        s = bottom[1] if len(bottom) == 2 else self.blobs[0]
        self._layout(bottom[0], s, top, slots=2)
        if self.bias_term and self.blobs[self._bias_index].count != s.count:
            self.fail(f"bias shape {tuple(self.blobs[self._bias_index].shape)} does not match "
                      f"scale shape {tuple(s.shape)}", cls=ShapeError)

    def _scale_blob(self, bottom):
        return bottom[1] if len(bottom) == 2 else self.blobs[0]

    def _fused(self, bottom):
        arrays = [bottom[0].xdata, self._scale_blob(bottom).xdata]
        if self.bias_term:
            arrays.append(self.blobs[self._bias_index].xdata)
        return backend.fused_kernels(self._bc.xp) and _kernels.supported(*arrays)

    def forward(self, bottom, top):
        bc = self._bc
        xp = bc.xp
        X = bc.view(bottom[0].xdata)
        Y = bc.view(top[0].xdata)
        in_place = top[0] is bottom[0]
        fused = self._fused(bottom)
        need_input = (len(bottom) == 2 or self.param_propagate_down[0]) and \
            self.keeps_backward_state
        self._saved_valid = in_place and need_input
        if self._saved_valid:
            self._saved = _scratch(self._saved, bc.shape, X)
            xp.copyto(self._saved, X)
        elif not in_place:
            self._saved = None
        if fused:
            b = self.blobs[self._bias_index].xdata if self.bias_term else None
            _kernels.channels.affine(bottom[0].xdata, self._scale_blob(bottom).xdata, b,
                                     top[0].xdata, bc.outer, bc.dim, bc.inner)
            return
        xp.multiply(X, bc.vec(self._scale_blob(bottom).xdata, 0), out=Y)
        if self.bias_term:
            xp.add(Y, bc.vec(self.blobs[self._bias_index].xdata, 1), out=Y)

    def _input_for_grad(self, bottom, top):
        if top[0] is bottom[0]:
            if not self._saved_valid:
                self.fail("the scale gradient needs the input, which was not kept by the "
                          "in-place forward (param_propagate_down changed after forward, or "
                          "the net was set forward-only)")
            return self._saved
        return bottom[0].xdata

    def _backward_fused(self, top, propagate_down, bottom):
        bc = self._bc
        K = _kernels.channels
        dy = top[0].xdiff
        two = len(bottom) == 2
        want_bias = self.bias_term and self.param_propagate_down[self._bias_index]
        need_scale = propagate_down[1] if two else self.param_propagate_down[0]
        if want_bias or need_scale:
            x = self._input_for_grad(bottom, top) if need_scale else None
            s1, s2 = K.channel_sums(bc.xp, dy, x, bc.outer, bc.dim, bc.inner, need_scale)
            if want_bias:
                K.accumulate(s1, self.blobs[self._bias_index].xdiff)
            if need_scale and two:
                bottom[1].xdiff[...] = s2.astype(bottom[1].dtype).reshape(bottom[1].shape)
            elif need_scale:
                K.accumulate(s2, self.blobs[0].xdiff)
        if propagate_down[0]:
            K.affine(dy, self._scale_blob(bottom).xdata, None, bottom[0].xdiff, bc.outer,
                     bc.dim, bc.inner)

    def backward(self, top, propagate_down, bottom):
        bc = self._bc
        xp = bc.xp
        if self._fused(bottom):
            return self._backward_fused(top, propagate_down, bottom)
        dy = bc.view(top[0].xdiff)
        two = len(bottom) == 2
        if self.bias_term and self.param_propagate_down[self._bias_index]:
            self._accumulate(self.blobs[self._bias_index], bc.sum(dy))
        need_scale = propagate_down[1] if two else self.param_propagate_down[0]
        if need_scale:
            if top[0] is bottom[0]:
                if not self._saved_valid:
                    self.fail("the scale gradient needs the input, which was not kept by "
                              "the in-place forward (param_propagate_down changed after "
                              "forward, or the net was set forward-only)")
                x = self._saved
            else:
                x = bc.view(bottom[0].xdata)
            g = bc.dot(dy, x)
            if two:
                bottom[1].xdiff[...] = g.reshape(bottom[1].shape)
            else:
                self._accumulate(self.blobs[0], g)
        if propagate_down[0]:
            s = bc.vec(self._scale_blob(bottom).xdata, 0)
            xp.multiply(dy, s, out=bc.view(bottom[0].xdiff))


@register("Bias")
class BiasLayer(_AxisParamLayer):
    """y = x + b, b broadcast from ``axis`` over ``num_axes`` axes (learned, filler default 0,
    or bottom[1])."""
    _what = "bias"

    def _axis_param(self):
        return self.layer_param.bias_param

    def layer_setup(self, bottom, top):
        p = self.layer_param.bias_param
        two = len(bottom) == 2
        if self.blobs:
            if two or len(self.blobs) != 1:
                self.fail(f"has {len(self.blobs)} parameter blobs, expects {0 if two else 1}")
        elif not two:
            shape = self._param_shape(bottom[0], p.num_axes)
            self.blobs.append(self.make_param_blob(shape, p.filler))
        self._bc = None

    def reshape(self, bottom, top):
        b = bottom[1] if len(bottom) == 2 else self.blobs[0]
        self._layout(bottom[0], b, top, slots=1)

    def _fused(self, bottom):
        b = bottom[1] if len(bottom) == 2 else self.blobs[0]
        return backend.fused_kernels(self._bc.xp) and \
            _kernels.supported(bottom[0].xdata, b.xdata)

    def forward(self, bottom, top):
        bc = self._bc
        b = bottom[1] if len(bottom) == 2 else self.blobs[0]
        if self._fused(bottom):
            _kernels.channels.affine(bottom[0].xdata, None, b.xdata, top[0].xdata, bc.outer,
                                     bc.dim, bc.inner)
            return
        bc.xp.add(bc.view(bottom[0].xdata), bc.vec(b.xdata, 0), out=bc.view(top[0].xdata))

    def _backward_fused(self, top, propagate_down, bottom):
        bc = self._bc
        K = _kernels.channels
        dy = top[0].xdiff
        two = len(bottom) == 2
        if (two and propagate_down[1]) or (not two and self.param_propagate_down[0]):
            s1, _ = K.channel_sums(bc.xp, dy, None, bc.outer, bc.dim, bc.inner, False)
            if two:
                bottom[1].xdiff[...] = s1.astype(bottom[1].dtype).reshape(bottom[1].shape)
            else:
                K.accumulate(s1, self.blobs[0].xdiff)
        if propagate_down[0] and top[0] is not bottom[0]:
            bc.xp.copyto(bottom[0].xdiff, dy)

    def backward(self, top, propagate_down, bottom):
        bc = self._bc
        if self._fused(bottom):
            return self._backward_fused(top, propagate_down, bottom)
        dy = bc.view(top[0].xdiff)
        two = len(bottom) == 2
        if two and propagate_down[1]:
            bottom[1].xdiff[...] = bc.sum(dy).reshape(bottom[1].shape)
        elif not two and self.param_propagate_down[0]:
            self._accumulate(self.blobs[0], bc.sum(dy))
        if propagate_down[0] and top[0] is not bottom[0]:
            bc.xp.copyto(bc.view(bottom[0].xdiff), dy)

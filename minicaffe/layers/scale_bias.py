"""Scale and Bias: learned (or second-bottom) affine terms broadcast over a slice of axes,
BVLC Caffe semantics.

Both work on bottom[0] viewed as (outer, dim, inner) against their parameter of ``dim``
values, through ``broadcast.Broadcast``. On CuPy arrays (GPU mode) they run the fused kernels
of ``minicaffe.kernels.channels``: one affine kernel, and one per-channel reduction for their
gradients.
"""
from .. import backend
from ..kernels import cuda as _kernels
from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2
from .broadcast import Broadcast, same_layout
from .scratch import reuse


class _AxisParamLayer(Layer):
    """Shared machinery of Scale and Bias: a vector/tensor applied from ``axis`` on."""
    min_num_bottom = 1
    max_num_bottom = 2
    exact_num_top = 1
    _what = ""          # "scale" or "bias", for messages

    def _axis_param(self):
        raise NotImplementedError

    def _axis(self, x):
        axis_given = self._axis_param().axis
        try:
            return x.canonical_axis_index(axis_given)
        except IndexError:
            self.fail(f"axis {axis_given} is out of range for bottom[0] of shape "
                      f"{tuple(x.shape)}", cls=ShapeError)

    def _param_shape(self, x, num_axes):
        """Shape of a learned parameter covering ``num_axes`` axes of ``x`` from ``axis``."""
        axis = self._axis(x)
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
        axis = 0 if p.num_axes == 0 else self._axis(x)
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
        if not same_layout(self._bc, outer, dim, inner, xp, data.dtype):
            self._bc = Broadcast(outer, dim, inner, xp, data.dtype, slots=slots)

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
            self._saved = reuse(self._saved, bc.shape, X)
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
            g = bc.dot(dy, self._input_for_grad(bottom, top))
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

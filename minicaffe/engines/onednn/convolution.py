"""Caffe's 2-D Convolution on oneDNN: one object per configuration, its primitives made once.

At the interface every array is C-contiguous float32 in Caffe's layouts: x, y (N, C, H, W),
weights (num_output, C/group, kh, kw), bias (num_output,). Groups use oneDNN's grouped weights
(goihw, the same memory as Caffe's). Caffe's output size rounds down, so the right/bottom
padding given to oneDNN is whatever makes its size rule give Caffe's size (it can be less than
``pad``, or negative). Caffe's dilation d is oneDNN's d - 1.

Inside, the activations are in ``layout`` ("any": oneDNN's pick, a blocked format on AVX2/512)
and the weights always in oneDNN's pick, reordered from and to Caffe's on every call (weights
change every iteration in training). The forward primitive is made at construction; each
backward one on its first call (a TEST-phase net never pays for them).
"""
import numpy as np

from . import library as L
from .primitive import Handles, Pass

LAYOUTS = {"any": L.TAG_ANY, "nchw": L.TAG_NCHW, "nhwc": L.TAG_NHWC}
# On the example's conv2 (AVX2), oneDNN's pick (nChw8c, jit) ran forward ~2.5x faster than
# plain nchw (a GEMM path) and on par with nhwc (brgconv), backward-weights ahead of both.
DEFAULT_LAYOUT = "any"


def _pair(value, name):
    h, w = (value, value) if np.isscalar(value) else tuple(value)
    if int(h) != h or int(w) != w:
        raise ValueError(f"{name} must be integers, got {value!r}")
    return int(h), int(w)


def output_size(size, kernel, stride, pad, dilation):
    """Caffe's rule: (size + 2 pad - extent) // stride + 1, extent = dilation (kernel-1) + 1."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _check(a, shape, name):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous float32 numpy array")
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    return a


def _result(out, shape, name):
    return np.empty(shape, np.float32) if out is None else _check(out, shape, name)


class Convolution:
    """Forward and both backward passes of one convolution configuration.

    ``relu`` fuses a ReLU (with ``negative_slope``) into forward's output, as an eltwise
    post-op; the backward passes are the convolution's alone. Gradients overwrite their
    outputs (Caffe's accumulation into a param diff is the caller's). Raises
    ``OneDNNUnavailable`` when the library cannot be loaded, ``OneDNNError`` when oneDNN
    refuses the configuration.
    """

    def __init__(self, input_shape, num_output, kernel, stride=1, pad=0, dilation=1,
                 group=1, bias=True, relu=False, negative_slope=0.0, layout=DEFAULT_LAYOUT):
        n, c, h, w = (int(v) for v in input_shape)
        kernel, stride = _pair(kernel, "kernel"), _pair(stride, "stride")
        pad, dilation = _pair(pad, "pad"), _pair(dilation, "dilation")
        if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1 or min(pad) < 0:
            raise ValueError("kernel, stride and dilation must be positive, pad non-negative")
        if group < 1 or c % group or num_output % group:
            raise ValueError(f"group {group} must divide channels {c} and "
                             f"num_output {num_output}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
        out_hw = [output_size(*a) for a in zip((h, w), kernel, stride, pad, dilation)]
        if min(out_hw) < 1:
            raise ValueError(f"input {h}x{w} is too small for the kernel: output {out_hw}")
        self.input_shape = (n, c, h, w)
        self.output_shape = (n, num_output, out_hw[0], out_hw[1])
        self.weight_shape = (num_output, c // group, kernel[0], kernel[1])
        self.bias_shape = (num_output,) if bias else None
        self.group, self.relu, self.negative_slope = group, relu, float(negative_slope)
        pad_r = [(o - 1) * s + d * (k - 1) + 1 - i - p for o, s, d, k, i, p
                 in zip(out_hw, stride, dilation, kernel, (h, w), pad)]
        self._geometry = (L.dims(stride), L.dims([d - 1 for d in dilation]), L.dims(pad),
                          L.dims(pad_r))
        self._h = Handles()
        self._descriptors(LAYOUTS[layout])
        forward_pd = self._forward_desc(relu)
        self._hint_pd = None if relu else forward_pd
        self._passes = {"forward": Pass(self._h, forward_pd, self._forward_args(), {L.ARG_DST})}

    def _descriptors(self, act_tag):
        md, g = self._h.memory_desc, self.group
        o, ci, kh, kw = self.weight_shape
        self._x, self._y = md(self.input_shape, L.TAG_NCHW), md(self.output_shape, L.TAG_NCHW)
        # Grouped weights (G, O/G, I/G, kh, kw) in goihw are Caffe's (O, I/G, kh, kw) memory.
        w_dims, w_tag = ((o, ci, kh, kw), L.TAG_OIHW) if g == 1 else \
            ((g, o // g, ci, kh, kw), L.TAG_GOIHW)
        self._w, self._w_any = md(w_dims, w_tag), md(w_dims, L.TAG_ANY)
        self._b = md(self.bias_shape, L.TAG_X) if self.bias_shape else None
        self._x_any, self._y_any = md(self.input_shape, act_tag), md(self.output_shape, act_tag)

    def _forward_desc(self, relu):
        h = self._h
        attr = h.attr()
        if relu:
            ops = h.post_ops()
            h.lib.dnnl_post_ops_append_eltwise(ops, L.ELTWISE_RELU, self.negative_slope, 0.0)
            h.lib.dnnl_primitive_attr_set_post_ops(attr, ops)
        return h.primitive_desc(h.lib.dnnl_convolution_forward_primitive_desc_create,
                                h.engine, L.FORWARD_TRAINING, L.CONVOLUTION_DIRECT,
                                self._x_any, self._w_any, self._b, self._y_any,
                                *self._geometry, attr)

    def _forward_args(self):
        args = {L.ARG_SRC: self._x, L.ARG_WEIGHTS: self._w, L.ARG_DST: self._y}
        if self._b is not None:
            args[L.ARG_BIAS] = self._b
        return args

    def _hint(self):
        # Backward wants a plain forward as its hint, not one with a fused ReLU.
        if self._hint_pd is None:
            self._hint_pd = self._forward_desc(relu=False)
        return self._hint_pd

    def _backward_data(self):
        h = self._h
        pd = h.primitive_desc(h.lib.dnnl_convolution_backward_data_primitive_desc_create,
                              h.engine, L.CONVOLUTION_DIRECT, self._x_any, self._w_any,
                              self._y_any, *self._geometry, self._hint(), h.attr())
        args = {L.ARG_DIFF_DST: self._y, L.ARG_WEIGHTS: self._w, L.ARG_DIFF_SRC: self._x}
        return Pass(h, pd, args, {L.ARG_DIFF_SRC})

    def _backward_weights(self):
        h = self._h
        pd = h.primitive_desc(
            h.lib.dnnl_convolution_backward_weights_primitive_desc_create, h.engine,
            L.CONVOLUTION_DIRECT, self._x_any, self._w_any, self._b, self._y_any,
            *self._geometry, self._hint(), h.attr())
        args = {L.ARG_SRC: self._x, L.ARG_DIFF_DST: self._y, L.ARG_DIFF_WEIGHTS: self._w}
        outputs = {L.ARG_DIFF_WEIGHTS}
        if self._b is not None:
            args[L.ARG_DIFF_BIAS] = self._b
            outputs.add(L.ARG_DIFF_BIAS)
        return Pass(h, pd, args, outputs)

    def _pass(self, name):
        if self._passes is None:   # its descriptors are gone: making a pass would crash
            raise RuntimeError("this Convolution was closed")
        if name not in self._passes:
            self._passes[name] = getattr(self, "_" + name)()
        return self._passes[name]

    # -- the interface -----------------------------------------------------------------------
    def forward(self, x, w, b=None, out=None):
        """y = conv(x, w) + b (then the fused ReLU, if any), written into ``out`` if given."""
        if (b is None) != (self.bias_shape is None):
            raise ValueError("b must be given exactly when the convolution has a bias term")
        arrays = {L.ARG_SRC: _check(x, self.input_shape, "x"),
                  L.ARG_WEIGHTS: _check(w, self.weight_shape, "w"),
                  L.ARG_DST: _result(out, self.output_shape, "out")}
        if b is not None:
            arrays[L.ARG_BIAS] = _check(b, self.bias_shape, "b")
        self._pass("forward").run(arrays)
        return arrays[L.ARG_DST]

    def backward_data(self, dy, w, out=None):
        """dx, the gradient with respect to the input (overwritten, not accumulated)."""
        arrays = {L.ARG_DIFF_DST: _check(dy, self.output_shape, "dy"),
                  L.ARG_WEIGHTS: _check(w, self.weight_shape, "w"),
                  L.ARG_DIFF_SRC: _result(out, self.input_shape, "out")}
        self._pass("backward_data").run(arrays)
        return arrays[L.ARG_DIFF_SRC]

    def backward_weights(self, x, dy, dw=None, db=None):
        """(dw, db), db None without a bias term; both overwritten, not accumulated."""
        arrays = {L.ARG_SRC: _check(x, self.input_shape, "x"),
                  L.ARG_DIFF_DST: _check(dy, self.output_shape, "dy"),
                  L.ARG_DIFF_WEIGHTS: _result(dw, self.weight_shape, "dw")}
        if self.bias_shape is not None:
            arrays[L.ARG_DIFF_BIAS] = _result(db, self.bias_shape, "db")
        self._pass("backward_weights").run(arrays)
        return arrays[L.ARG_DIFF_WEIGHTS], arrays.get(L.ARG_DIFF_BIAS)

    def implementations(self):
        """{pass: (oneDNN implementation name, reorders per call)} for the passes made so far."""
        return {k: (p.implementation, p.reorders) for k, p in (self._passes or {}).items()}

    def close(self):
        """Free the oneDNN objects now (otherwise at garbage collection)."""
        self._passes = None
        self._h.close()

"""Elementwise ("neuron") layers: one bottom, one top of the same shape, in place allowed.

ReLU, Sigmoid, TanH, ELU, PReLU, Power, Exp, Log, AbsVal, BNLL, Threshold, Clip, Swish and
Dropout, with BVLC Caffe's parameters, defaults and formulas.

In place (top[0] is bottom[0]) the input is overwritten by the forward pass. Layers whose
backward can be written in terms of the output (ReLU, Sigmoid, TanH, ELU, Exp, Swish, Dropout)
need nothing more; the others (PReLU, Power, Log, BNLL, Clip) keep a copy of the input, but
only when they run in place (Caffe does this for PReLU; AbsVal refuses in place as Caffe does).
"""
import math

import numpy as np

from .. import backend
from ..layer import Layer, register
from ..proto import caffe_pb2


class NeuronLayer(Layer):
    """Base of the elementwise layers: sizes the top like the bottom."""
    exact_num_bottom = 1
    exact_num_top = 1
    # True where backward needs the input itself: an in-place run then saves a copy of it.
    keeps_input = False
    _saved = None

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)
        elif self.keeps_input:
            x = bottom[0].xdata
            s = self._saved
            if s is None or s.shape != x.shape or s.dtype != x.dtype or \
                    backend.get_array_module(s) is not backend.get_array_module(x):
                self._saved = bottom[0].xp.empty(x.shape, dtype=x.dtype)

    def _forward_input(self, bottom, top):
        """The input for forward; saves a copy first when running in place and it is needed."""
        x = bottom[0].xdata
        if self.keeps_input and top[0] is bottom[0]:
            self._saved[...] = x
        return x

    def _backward_input(self, bottom, top):
        """The forward input as backward sees it (the saved copy when run in place)."""
        if self.keeps_input and top[0] is bottom[0]:
            return self._saved
        return bottom[0].xdata


def _sigmoid(xp, x, out=None):
    """Logistic function written through tanh (no overflow for large |x|), as Caffe does."""
    out = xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


@register("ReLU")
class ReLULayer(NeuronLayer):
    """y = max(x, 0) + negative_slope * min(x, 0)."""

    def layer_setup(self, bottom, top):
        self.negative_slope = float(self.layer_param.relu_param.negative_slope)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x, y = bottom[0].xdata, top[0].xdata
        ns = self.negative_slope
        if ns == 0:
            xp.maximum(x, 0, out=y)
        else:
            # factor = 1 where x > 0, negative_slope elsewhere
            factor = (x > 0).astype(x.dtype)
            factor *= 1.0 - ns
            factor += ns
            xp.multiply(x, factor, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        # In place bottom data is the output, which has the input's sign (negative_slope >= 0).
        x = bottom[0].xdata
        dy, dx = top[0].xdiff, bottom[0].xdiff
        ns = self.negative_slope
        if ns == 0:
            xp.multiply(dy, x > 0, out=dx)     # dx may be dy (in place): elementwise
            return
        factor = (x > 0).astype(x.dtype)
        factor *= 1.0 - ns
        factor += ns
        xp.multiply(dy, factor, out=dx)


@register("Sigmoid")
class SigmoidLayer(NeuronLayer):
    """y = 1 / (1 + exp(-x)); backward from the output: dy * y * (1 - y)."""

    def forward(self, bottom, top):
        _sigmoid(bottom[0].xp, bottom[0].xdata, out=top[0].xdata)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        y = top[0].xdata
        g = 1.0 - y
        g *= y
        xp.multiply(top[0].xdiff, g, out=bottom[0].xdiff)


@register("TanH")
class TanHLayer(NeuronLayer):
    """y = tanh(x); backward from the output: dy * (1 - y^2)."""

    def forward(self, bottom, top):
        bottom[0].xp.tanh(bottom[0].xdata, out=top[0].xdata)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        y = top[0].xdata
        g = xp.square(y)
        xp.subtract(1.0, g, out=g)
        xp.multiply(top[0].xdiff, g, out=bottom[0].xdiff)


@register("ELU")
class ELULayer(NeuronLayer):
    """y = x for x > 0, alpha * (exp(x) - 1) otherwise (elu_param.alpha, default 1)."""

    def layer_setup(self, bottom, top):
        self.alpha = float(self.layer_param.elu_param.alpha)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x, y = bottom[0].xdata, top[0].xdata
        neg = xp.minimum(x, 0)
        xp.expm1(neg, out=neg)
        neg *= self.alpha
        xp.maximum(x, 0, out=y)
        y += neg

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        # Caffe's form: dy * (x > 0 ? 1 : alpha + y); in place x is y, with the same sign.
        x, y = bottom[0].xdata, top[0].xdata
        g = xp.where(x > 0, xp.ones((), dtype=y.dtype), y + self.alpha)
        xp.multiply(top[0].xdiff, g, out=bottom[0].xdiff)


@register("PReLU")
class PReLULayer(NeuronLayer):
    """ReLU with a learned negative slope per channel (axis 1), or one shared slope.

    The slope blob has shape (C,), or shape () when prelu_param.channel_shared (as Caffe);
    it is filled by prelu_param.filler, constant 0.25 by default.
    """
    keeps_input = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.prelu_param
        if bottom[0].num_axes < 2:
            self.fail(f"bottom must have at least 2 axes, got shape {tuple(bottom[0].shape)}")
        channels = bottom[0].shape[1]
        self.channel_shared = bool(p.channel_shared)
        if not self.blobs:
            filler = p.filler if p.HasField("filler") else \
                caffe_pb2.FillerParameter(type="constant", value=0.25)
            shape = () if self.channel_shared else (channels,)
            self.blobs = [self.make_param_blob(shape, filler)]
        want = 1 if self.channel_shared else channels
        if self.blobs[0].count != want:
            self.fail(f"negative slope blob has shape {tuple(self.blobs[0].shape)} "
                      f"({self.blobs[0].count} values), but the configuration needs {want} "
                      f"({'channel_shared' if self.channel_shared else f'{channels} channels'})")

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            self.fail(f"bottom must have at least 2 axes, got shape {tuple(bottom[0].shape)}")
        if not self.channel_shared and bottom[0].shape[1] != self.blobs[0].count:
            self.fail(f"bottom has {bottom[0].shape[1]} channels (shape "
                      f"{tuple(bottom[0].shape)}), the slope blob has {self.blobs[0].count}")
        super().reshape(bottom, top)

    def _slope(self, ndim):
        s = self.blobs[0].xdata
        if self.channel_shared:
            return s.reshape((1,) * ndim)
        return s.reshape((1, s.size) + (1,) * (ndim - 2))

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = self._forward_input(bottom, top)
        y = top[0].xdata
        neg = xp.minimum(x, 0)
        neg *= self._slope(x.ndim)
        xp.maximum(x, 0, out=y)
        y += neg

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        x = self._backward_input(bottom, top)
        dy = top[0].xdiff
        negmask = x <= 0
        # Slope gradient first: in place, writing the bottom diff overwrites the top diff.
        if self.param_propagate_down[0]:
            g = dy * x
            g *= negmask
            if self.channel_shared:
                total = g.sum()
            else:
                axes = (0,) + tuple(range(2, x.ndim))
                total = g.sum(axis=axes)
            sd = self.blobs[0].xdiff
            sd += total.reshape(sd.shape).astype(sd.dtype, copy=False)
        if propagate_down[0]:
            slope = self._slope(x.ndim).astype(dy.dtype, copy=False)
            factor = xp.where(negmask, slope, xp.ones((), dtype=dy.dtype))
            xp.multiply(dy, factor, out=bottom[0].xdiff)


@register("Power")
class PowerLayer(NeuronLayer):
    """y = (shift + scale * x) ^ power (power_param, defaults power 1, scale 1, shift 0)."""
    keeps_input = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power = float(p.power)
        self.scale = float(p.scale)
        self.shift = float(p.shift)
        self.diff_scale = self.power * self.scale

    def _affine(self, xp, x, out=None):
        if self.scale == 1 and self.shift == 0:
            if out is None:
                return x
            out[...] = x
            return out
        out = xp.multiply(x, self.scale, out=out)
        if self.shift != 0:
            out += self.shift
        return out

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = self._forward_input(bottom, top)
        y = top[0].xdata
        if self.diff_scale == 0:
            # The output does not depend on x: 1 for power 0, shift^power for scale 0.
            y[...] = 1.0 if self.power == 0 else self.shift ** self.power
            return
        self._affine(xp, x, out=y)
        if self.power != 1:
            xp.power(y, self.power, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dy, dx = top[0].xdiff, bottom[0].xdiff
        if self.diff_scale == 0:
            dx[...] = 0
            return
        if self.power == 1:
            xp.multiply(dy, self.diff_scale, out=dx)
            return
        x = self._backward_input(bottom, top)
        g = self._affine(xp, x, out=xp.empty_like(x))
        if self.power != 2:
            xp.power(g, self.power - 1, out=g)
        g *= self.diff_scale
        xp.multiply(dy, g, out=dx)


def _log_of_base(layer, base):
    """ln(base), with Caffe's convention that base -1 means e."""
    if base == -1:
        return 1.0
    if not base > 0:
        layer.fail(f"base must be strictly positive (or -1 for e), got {base}")
    return math.log(base)


@register("Exp")
class ExpLayer(NeuronLayer):
    """y = base ^ (shift + scale * x); base -1 (the default) means e."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        log_base = _log_of_base(self, base)
        self.inner_scale = log_base * scale
        self.outer_scale = 1.0 if shift == 0 else math.exp(log_base * shift)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].xdata
        xp.multiply(bottom[0].xdata, self.inner_scale, out=y)
        xp.exp(y, out=y)
        if self.outer_scale != 1:
            y *= self.outer_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        g = top[0].xdata * self.inner_scale
        xp.multiply(top[0].xdiff, g, out=bottom[0].xdiff)


@register("Log")
class LogLayer(NeuronLayer):
    """y = log_base(shift + scale * x); base -1 (the default) means e."""
    keeps_input = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.log_param
        base = float(p.base)
        log_base = _log_of_base(self, base)
        if log_base == 0:
            self.fail("base 1 has no logarithm (use -1 for e, or a positive base other than 1)")
        self.base_scale = 1.0 / log_base
        self.scale = float(p.scale)
        self.shift = float(p.shift)

    def _affine(self, xp, x, out):
        if self.scale == 1 and self.shift == 0:
            out[...] = x
            return out
        xp.multiply(x, self.scale, out=out)
        if self.shift != 0:
            out += self.shift
        return out

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = self._forward_input(bottom, top)
        y = top[0].xdata
        self._affine(xp, x, out=y)
        xp.log(y, out=y)
        if self.base_scale != 1:
            y *= self.base_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        x = self._backward_input(bottom, top)
        u = self._affine(xp, x, out=xp.empty_like(x))
        g = xp.divide(self.scale * self.base_scale, u, out=u)
        xp.multiply(top[0].xdiff, g, out=bottom[0].xdiff)


@register("AbsVal")
class AbsValLayer(NeuronLayer):
    """y = |x|. Like Caffe, refuses to run in place (the sign of x would be lost)."""

    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            self.fail("does not allow in-place computation (give the top another name)")

    def forward(self, bottom, top):
        bottom[0].xp.abs(bottom[0].xdata, out=top[0].xdata)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        g = xp.sign(bottom[0].xdata)
        xp.multiply(top[0].xdiff, g, out=bottom[0].xdiff)


@register("BNLL")
class BNLLLayer(NeuronLayer):
    """Binomial normal log likelihood: y = log(1 + exp(x)), computed stably."""
    keeps_input = True

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = self._forward_input(bottom, top)
        y = top[0].xdata
        t = xp.abs(x)
        xp.negative(t, out=t)
        xp.exp(t, out=t)
        xp.log1p(t, out=t)            # log(1 + exp(-|x|))
        xp.maximum(x, 0, out=y)
        y += t

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        x = self._backward_input(bottom, top)
        g = _sigmoid(xp, x, out=xp.empty_like(x))
        xp.multiply(top[0].xdiff, g, out=bottom[0].xdiff)


@register("Threshold")
class ThresholdLayer(NeuronLayer):
    """y = 1 where x > threshold, else 0. Has no backward, as in Caffe."""

    def layer_setup(self, bottom, top):
        self.threshold = float(self.layer_param.threshold_param.threshold)

    def forward(self, bottom, top):
        x, y = bottom[0].xdata, top[0].xdata
        y[...] = x > self.threshold

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.fail("has no backward pass (its output is piecewise constant); "
                      "set propagate_down: false or stop gradients before it")


@register("Clip")
class ClipLayer(NeuronLayer):
    """y = max(min, min(x, max)); gradient passes where min <= x <= max."""
    keeps_input = True

    def layer_setup(self, bottom, top):
        p = self.layer_param.clip_param
        self.min = float(p.min)
        self.max = float(p.max)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = self._forward_input(bottom, top)
        y = top[0].xdata
        xp.minimum(x, self.max, out=y)
        xp.maximum(y, self.min, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        x = self._backward_input(bottom, top)
        inside = x >= self.min
        inside &= x <= self.max
        xp.multiply(top[0].xdiff, inside, out=bottom[0].xdiff)


@register("Swish")
class SwishLayer(NeuronLayer):
    """y = x * sigmoid(beta * x) (swish_param.beta, default 1)."""

    def layer_setup(self, bottom, top):
        self.beta = float(self.layer_param.swish_param.beta)
        self._sig = None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        x = bottom[0].xdata
        s = self._sig
        if s is None or s.shape != x.shape or s.dtype != x.dtype or \
                backend.get_array_module(s) is not backend.get_array_module(x):
            self._sig = bottom[0].xp.empty(x.shape, dtype=x.dtype)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x, y = bottom[0].xdata, top[0].xdata
        s = self._sig
        xp.multiply(x, self.beta, out=s)
        _sigmoid(xp, s, out=s)
        xp.multiply(x, s, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        # d/dx [x s(bx)] = s + b y (1 - s) = b y + s (1 - b y): output and sigmoid suffice.
        y, s = top[0].xdata, self._sig
        by = y * self.beta
        g = 1.0 - by
        g *= s
        g += by
        xp.multiply(top[0].xdiff, g, out=bottom[0].xdiff)


@register("Dropout")
class DropoutLayer(NeuronLayer):
    """TRAIN: zero each input with probability dropout_ratio and scale the kept ones by
    1 / (1 - dropout_ratio); TEST: identity. The mask comes from minicaffe's seeded random
    source (backend.rng() on the CPU, CuPy's generator in GPU mode)."""

    def layer_setup(self, bottom, top):
        ratio = float(self.layer_param.dropout_param.dropout_ratio)
        if not 0.0 <= ratio < 1.0:
            self.fail(f"dropout_ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.scale = 1.0 / (1.0 - ratio)
        self._mask = None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if self.phase == caffe_pb2.TRAIN:
            x = bottom[0].xdata
            m = self._mask
            if m is None or m.shape != x.shape or m.dtype != x.dtype or \
                    backend.get_array_module(m) is not backend.get_array_module(x):
                self._mask = bottom[0].xp.empty(x.shape, dtype=x.dtype)

    def _draw(self, xp, shape):
        if xp is np:
            return backend.rng().random(shape, dtype=np.float32)
        return xp.random.random_sample(shape, dtype=xp.float32)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x, y = bottom[0].xdata, top[0].xdata
        if self.phase == caffe_pb2.TRAIN:
            m = self._mask
            # Keep with probability 1 - ratio; the mask holds 0 or the scale.
            xp.greater_equal(self._draw(xp, x.shape), self.ratio, out=m)
            m *= self.scale
            xp.multiply(x, m, out=y)
        elif y is not x:
            y[...] = x

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dy, dx = top[0].xdiff, bottom[0].xdiff
        if self.phase == caffe_pb2.TRAIN:
            xp.multiply(dy, self._mask, out=dx)
        elif dx is not dy:
            dx[...] = dy

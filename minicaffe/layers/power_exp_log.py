"""Power, Exp and Log: y = (shift + scale * x) ^ power, base ^ (shift + scale * x) and
log_base(shift + scale * x), with BVLC Caffe's parameters and defaults."""
import math

import numpy as np

from ..layer import register
from .neuron import NeuronLayer


def _affine(xp, x, scale, shift, out):
    """out = shift + scale * x, skipping the identity."""
    if scale == 1 and shift == 0:
        out[...] = x
        return out
    xp.multiply(x, scale, out=out)
    if shift != 0:
        out += shift
    return out


def _log_of_base(layer, base):
    """ln(base), with Caffe's convention that base -1 means e."""
    if base == -1:
        return 1.0
    if not base > 0:
        layer.fail(f"base must be strictly positive (or -1 for e), got {base}")
    return math.log(base)


def _pow(base, exponent):
    """C's pow, as Caffe computes its constants: inf on overflow, NaN for a negative base
    and a fractional exponent (Python's ** raises or turns complex instead)."""
    with np.errstate(all="ignore"):
        return float(np.power(np.float64(base), np.float64(exponent)))


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

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = self._forward_input(bottom, top)
        y = top[0].xdata
        if self.diff_scale == 0:
            # The output does not depend on x: 1 for power 0, shift^power for scale 0.
            y[...] = 1.0 if self.power == 0 else _pow(self.shift, self.power)
            return
        _affine(xp, x, self.scale, self.shift, out=y)
        if self.power != 1:
            xp.power(y, self.power, out=y)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and self.diff_scale == 0:
            bottom[0].xdiff[...] = 0
            return
        super().backward(top, propagate_down, bottom)

    def derivative(self, xp, bottom, top):
        if self.power == 1:
            return self.diff_scale
        x = self._backward_input(bottom, top)
        g = _affine(xp, x, self.scale, self.shift, out=xp.empty_like(x))
        if self.power != 2:
            xp.power(g, self.power - 1, out=g)
        g *= self.diff_scale
        return g


@register("Exp")
class ExpLayer(NeuronLayer):
    """y = base ^ (shift + scale * x); base -1 (the default) means e."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.exp_param
        base, scale, shift = float(p.base), float(p.scale), float(p.shift)
        log_base = _log_of_base(self, base)
        self.inner_scale = log_base * scale
        self.outer_scale = 1.0 if shift == 0 else _pow(math.e, log_base * shift)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        y = top[0].xdata
        xp.multiply(bottom[0].xdata, self.inner_scale, out=y)
        xp.exp(y, out=y)
        if self.outer_scale != 1:
            y *= self.outer_scale

    def derivative(self, xp, bottom, top):
        return top[0].xdata * self.inner_scale


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

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = self._forward_input(bottom, top)
        y = top[0].xdata
        _affine(xp, x, self.scale, self.shift, out=y)
        xp.log(y, out=y)
        if self.base_scale != 1:
            y *= self.base_scale

    def derivative(self, xp, bottom, top):
        x = self._backward_input(bottom, top)
        u = _affine(xp, x, self.scale, self.shift, out=xp.empty_like(x))
        return xp.divide(self.scale * self.base_scale, u, out=u)

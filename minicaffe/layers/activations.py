"""Elementwise activation layers with BVLC Caffe's parameters, defaults and formulas: ReLU,
PReLU (a learned slope), Sigmoid, TanH, ELU, AbsVal, BNLL, Threshold, Clip and Swish."""
from ..layer import register
from ..proto import caffe_pb2
from .neuron import NeuronLayer, sigmoid
from .scratch import reuse


@register("ReLU")
class ReLULayer(NeuronLayer):
    """y = max(x, 0) + negative_slope * min(x, 0)."""

    def layer_setup(self, bottom, top):
        self.negative_slope = float(self.layer_param.relu_param.negative_slope)

    def _slope_factor(self, x):
        """1 where x > 0, negative_slope elsewhere."""
        factor = (x > 0).astype(x.dtype)
        factor *= 1.0 - self.negative_slope
        factor += self.negative_slope
        return factor

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x, y = bottom[0].xdata, top[0].xdata
        if self.negative_slope == 0:
            xp.maximum(x, 0, out=y)
        else:
            xp.multiply(x, self._slope_factor(x), out=y)

    def derivative(self, xp, bottom, top):
        # In place bottom data is the output, which has the input's sign (negative_slope >= 0).
        x = bottom[0].xdata
        return x > 0 if self.negative_slope == 0 else self._slope_factor(x)


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


@register("Sigmoid")
class SigmoidLayer(NeuronLayer):
    """y = 1 / (1 + exp(-x)); backward from the output: dy * y * (1 - y)."""

    def forward(self, bottom, top):
        sigmoid(bottom[0].xp, bottom[0].xdata, out=top[0].xdata)

    def derivative(self, xp, bottom, top):
        y = top[0].xdata
        g = 1.0 - y
        g *= y
        return g


@register("TanH")
class TanHLayer(NeuronLayer):
    """y = tanh(x); backward from the output: dy * (1 - y^2)."""

    def forward(self, bottom, top):
        bottom[0].xp.tanh(bottom[0].xdata, out=top[0].xdata)

    def derivative(self, xp, bottom, top):
        y = top[0].xdata
        g = xp.square(y, out=xp.empty_like(y))   # out=: a 0-axis y would give a scalar
        xp.subtract(1.0, g, out=g)
        return g


@register("ELU")
class ELULayer(NeuronLayer):
    """y = x for x > 0, alpha * (exp(x) - 1) otherwise (elu_param.alpha, default 1)."""

    def layer_setup(self, bottom, top):
        self.alpha = float(self.layer_param.elu_param.alpha)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x, y = bottom[0].xdata, top[0].xdata
        neg = xp.minimum(x, 0, out=xp.empty_like(x))   # out=: 0-axis x would give a scalar
        xp.expm1(neg, out=neg)
        neg *= self.alpha
        xp.maximum(x, 0, out=y)
        y += neg

    def derivative(self, xp, bottom, top):
        # Caffe's form: x > 0 ? 1 : alpha + y; in place x is y, with the same sign.
        x, y = bottom[0].xdata, top[0].xdata
        return xp.where(x > 0, xp.ones((), dtype=y.dtype), y + self.alpha)


@register("AbsVal")
class AbsValLayer(NeuronLayer):
    """y = |x|. Like Caffe, refuses to run in place (the sign of x would be lost)."""

    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            self.fail("does not allow in-place computation (give the top another name)")

    def forward(self, bottom, top):
        bottom[0].xp.abs(bottom[0].xdata, out=top[0].xdata)

    def derivative(self, xp, bottom, top):
        return xp.sign(bottom[0].xdata)


@register("BNLL")
class BNLLLayer(NeuronLayer):
    """Binomial normal log likelihood: y = log(1 + exp(x)), computed stably."""
    keeps_input = True

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = self._forward_input(bottom, top)
        y = top[0].xdata
        t = xp.abs(x, out=xp.empty_like(x))   # out=: a 0-axis x would give a scalar
        xp.negative(t, out=t)
        xp.exp(t, out=t)
        xp.log1p(t, out=t)            # log(1 + exp(-|x|))
        xp.maximum(x, 0, out=y)
        y += t

    def derivative(self, xp, bottom, top):
        x = self._backward_input(bottom, top)
        return sigmoid(xp, x, out=xp.empty_like(x))


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

    def derivative(self, xp, bottom, top):
        x = self._backward_input(bottom, top)
        inside = x >= self.min
        inside &= x <= self.max
        return inside


@register("Swish")
class SwishLayer(NeuronLayer):
    """y = x * sigmoid(beta * x) (swish_param.beta, default 1)."""

    def layer_setup(self, bottom, top):
        self.beta = float(self.layer_param.swish_param.beta)
        self._sig = None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        x = bottom[0].xdata
        self._sig = reuse(self._sig, x.shape, x)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x, y = bottom[0].xdata, top[0].xdata
        s = self._sig
        xp.multiply(x, self.beta, out=s)
        sigmoid(xp, s, out=s)
        xp.multiply(x, s, out=y)

    def derivative(self, xp, bottom, top):
        # d/dx [x s(bx)] = s + b y (1 - s) = b y + s (1 - b y): output and sigmoid suffice.
        y, s = top[0].xdata, self._sig
        by = y * self.beta
        g = 1.0 - by
        g *= s
        g += by
        return g

"""Local Response Normalization (Caffe's LRN layer), both normalization regions.

ACROSS_CHANNELS: scale = k + alpha/n * (sum of x^2 over the n channels centred on c, zero
padded), y = x * scale^-beta.

WITHIN_CHANNEL: Caffe composes square -> AVE pooling (n x n, stride 1, pad (n-1)/2) ->
power (shift 1, scale alpha, power -beta) -> product; k is not used. With that pad and stride
the pooling window always lies inside the padded image, so Caffe's divisor is n*n everywhere
(padded positions count); the result here is that composition computed directly.

Window sums are shift-and-add over whole slices (one pass per offset), never pixel loops.
"""
from .. import backend
from ..layer import Layer, register
from ..proto import caffe_pb2

NormRegion = caffe_pb2.LRNParameter


def _box_sum(src, out, half, axis):
    """out[i] = sum of src[i+d] for |d| <= half along ``axis`` (outside the blob counts as 0).

    The window is symmetric, so this operator is its own adjoint (used in backward too).
    ``out`` must not overlap ``src``.
    """
    out[...] = src
    n = src.shape[axis]
    lead = (slice(None),) * axis
    for d in range(1, min(half, n - 1) + 1):
        out[lead + (slice(d, None),)] += src[lead + (slice(None, n - d),)]
        out[lead + (slice(None, n - d),)] += src[lead + (slice(d, None),)]


@register("LRN")
class LRNLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size = int(p.local_size)
        if self.size <= 0 or self.size % 2 != 1:
            self.fail(f"lrn_param.local_size must be a positive odd number, got {p.local_size}")
        self.pre_pad = (self.size - 1) // 2
        self.alpha = float(p.alpha)
        self.beta = float(p.beta)
        self.k = float(p.k)
        self.region = p.norm_region
        if self.region not in (NormRegion.ACROSS_CHANNELS, NormRegion.WITHIN_CHANNEL):
            self.fail(f"unknown lrn_param.norm_region {self.region}")
        self._bufs = None

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape "
                      f"{tuple(b.shape)}")
        shape = tuple(b.shape)
        top[0].reshape(shape)
        xd = b.xdata
        xp = self.xp_of(b)
        bufs = self._bufs
        if bufs is None or bufs[0].shape != shape or bufs[0].dtype != xd.dtype or \
                backend.get_array_module(bufs[0]) is not xp:
            # scale (across) or power output p (within); `base` = 1 + alpha*avg (within);
            # two scratch arrays for window sums.
            self._bufs = [xp.empty(shape, dtype=xd.dtype) for _ in range(4)]

    # -- forward -------------------------------------------------------------------------------
    def forward(self, bottom, top):
        xp = self.xp_of(bottom[0])
        x = bottom[0].xdata
        y = top[0].xdata
        scale, base, t1, t2 = self._bufs
        if self.region == NormRegion.ACROSS_CHANNELS:
            xp.square(x, out=t1)
            _box_sum(t1, scale, self.pre_pad, 1)
            scale *= self.alpha / self.size
            scale += self.k
            xp.power(scale, -self.beta, out=y)
            y *= x
        else:
            xp.square(x, out=t1)
            _box_sum(t1, t2, self.pre_pad, 2)
            _box_sum(t2, base, self.pre_pad, 3)
            base /= self.size * self.size        # AVE pooling divisor (padding counted)
            base *= self.alpha
            base += 1.0
            xp.power(base, -self.beta, out=scale)  # `scale` holds the power output here
            xp.multiply(x, scale, out=y)

    # -- backward ------------------------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp_of(bottom[0])
        x = bottom[0].xdata
        bd = bottom[0].xdiff
        td = top[0].xdiff
        y = top[0].xdata
        scale, base, t1, t2 = self._bufs
        if self.region == NormRegion.ACROSS_CHANNELS:
            # dx = dy * scale^-beta - 2 alpha beta / n * x * sum_window(dy * y / scale)
            xp.multiply(td, y, out=t1)
            t1 /= scale
            _box_sum(t1, t2, self.pre_pad, 1)
            t2 *= x
            t2 *= -2.0 * self.alpha * self.beta / self.size
            xp.power(scale, -self.beta, out=bd)
            bd *= td
            bd += t2
        else:
            # p = base^-beta, base = 1 + alpha * box(x^2) / n^2, y = x p
            # dx = dy p + 2 x * box(dy x * (-beta alpha) p / base) / n^2
            p = scale
            xp.multiply(td, x, out=t1)
            t1 *= p
            t1 /= base
            _box_sum(t1, t2, self.pre_pad, 2)
            _box_sum(t2, t1, self.pre_pad, 3)
            t1 *= x
            t1 *= -2.0 * self.alpha * self.beta / (self.size * self.size)
            xp.multiply(td, p, out=bd)
            bd += t1

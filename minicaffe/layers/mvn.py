"""MVN (mvn_param): mean-variance normalisation, BVLC Caffe's formulas.

Subtract the mean and, by default, divide by (std + eps) -- eps is added to the standard
deviation, not to the variance -- per (item, channel) or per item (``across_channels``). The
top is 4-D (num, channels, height, width), as in Caffe.
"""
from ..layer import Layer, register


@register("MVN")
class MVNLayer(Layer):
    """y = (x - mean) / (std + eps) over groups of H*W values (C*H*W with across_channels);
    without normalize_variance y = x - mean. Backward follows Caffe's formula
    dx = (dy - mean(dy) - y * mean(dy * y)) / (std + eps)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across_channels = bool(p.across_channels)
        self.eps = float(p.eps)

    def reshape(self, bottom, top):
        n, c, h, w = self.legacy_dims(bottom[0], "the bottom")
        self.groups = n if self.across_channels else n * c
        self.dim = (c * h * w) if self.across_channels else h * w
        top[0].reshape((n, c, h, w))     # also for in place: Caffe's top is always 4-D

    def forward(self, bottom, top):
        xp = bottom[0].xp
        shape = (self.groups, self.dim)
        x = bottom[0].xdata.reshape(shape)
        y = top[0].xdata.reshape(shape)
        if self.dim == 0 or self.groups == 0:
            return
        mean = x.mean(axis=1, keepdims=True)
        xp.subtract(x, mean, out=y)
        if self.normalize_variance:
            var = (y * y).mean(axis=1, keepdims=True)
            std = xp.sqrt(var)
            std += self.eps
            y /= std
            self._std = std

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or self.dim == 0 or self.groups == 0:
            return
        xp = bottom[0].xp
        shape = (self.groups, self.dim)
        dy = top[0].xdiff.reshape(shape)
        dx = bottom[0].xdiff.reshape(shape)
        mean_dy = dy.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            y = top[0].xdata.reshape(shape)
            proj = (dy * y).mean(axis=1, keepdims=True)   # before dx (may be dy) is written
            xp.subtract(dy, mean_dy, out=dx)
            dx -= y * proj
            dx /= self._std
        else:
            xp.subtract(dy, mean_dy, out=dx)

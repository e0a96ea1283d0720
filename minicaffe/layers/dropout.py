"""Dropout (dropout_param.dropout_ratio): random zeroing in TRAIN, identity in TEST."""
import numpy as np

from .. import backend
from ..layer import register
from ..proto import caffe_pb2
from .neuron import NeuronLayer
from .scratch import reuse


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
            self._mask = reuse(self._mask, x.shape, x)

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

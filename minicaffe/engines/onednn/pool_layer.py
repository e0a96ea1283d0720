"""The oneDNN engine behind a Pooling layer (NumPy float32 blobs), where it beats the reference.

Measured on the example's shapes (AVX2, 2 busy cores; same-run A/B against the numba kernels,
reorders to and from nChw8c included): MAX 3/2 on 100x32x32x32 ran 1.2x slower forward and
3-4x slower backward; AVE 3/2 on 100x64x8x8 ran ~2x faster forward and ~1.4x backward; on
16x16 planes it was a wash and on 32x32 slower. The reorders cost in proportion to the data,
the numba kernels in proportion to the planes, so only AVE on small planes moves here.
"""
import logging

from ...proto import caffe_pb2
from .library import OneDNNError
from .pooling import AveragePooling

log = logging.getLogger("minicaffe")
MAX_PLANE_PIXELS = 12 * 12   # the largest measured plane where oneDNN clearly won


def wins(layer, input_shape):
    """Whether oneDNN is the faster engine for ``layer`` (a PoolingLayer) on this input."""
    h, w = input_shape[2:]
    return layer.method == caffe_pb2.PoolingParameter.AVE and h * w <= MAX_PLANE_PIXELS


class PoolLayerEngine:
    """Forward and backward of ``layer`` (an AVE PoolingLayer) on oneDNN."""

    def __init__(self, layer):
        self.layer = layer
        self.pool = None
        self._key = None

    def reshape(self, input_shape):
        """Make the engine pooling for this input (kept while unchanged); False when oneDNN
        is not the faster engine or refuses the configuration (the layer's own code runs)."""
        ly = self.layer
        key = (tuple(input_shape), ly.out_hw, ly.kernel, ly.stride, ly.pad)
        if key == self._key:
            return True
        self.close()
        if not wins(ly, input_shape):
            return False
        try:
            self.pool = AveragePooling(input_shape, ly.out_hw, ly.kernel, ly.stride, ly.pad)
        except (OneDNNError, ValueError) as e:
            log.info("%s layer '%s': oneDNN declines input %s (%s); the reference path "
                     "serves it", ly.type, ly.name, tuple(input_shape), e)
            return False
        self._key = key
        return True

    def close(self):
        if self.pool is not None:
            self.pool.close()
        self.pool, self._key = None, None

    def forward(self, x, y):
        self.pool.forward(x, out=y)

    def backward(self, dy, dx):
        self.pool.backward(dy, out=dx)

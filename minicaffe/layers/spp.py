"""SPP (spp_param pyramid_height, pool): spatial pyramid pooling, built from Pooling layers.

For level l < pyramid_height: Pooling with bins = 2^l, kernel = ceil(size / bins),
pad = (kernel*bins - size + 1) / 2 and stride = kernel on each axis; every level flattened to
(N, C*ph*pw) and concatenated along axis 1. With pyramid_height 1 the top is the single
pooling output (N, C, 1, 1).
"""
import math

from ..blob import Blob
from ..errors import LayerError, ShapeError
from ..layer import Layer, register, shape_text
from ..proto import caffe_pb2
from .pooling import PoolingLayer

SPP = caffe_pb2.SPPParameter
POOL = caffe_pb2.PoolingParameter
# spp_param's methods as the Pooling layers of the levels spell them.
_POOLING_METHOD = {SPP.MAX: POOL.MAX, SPP.AVE: POOL.AVE, SPP.STOCHASTIC: POOL.STOCHASTIC}


@register("SPP")
class SPPLayer(Layer):
    """One Pooling layer per pyramid level, rebuilt when the input size changes; their outputs
    are concatenated into the top, and backward sums their gradients."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.spp_param
        self.height = int(p.pyramid_height)
        if self.height < 1:
            self.fail(f"spp_param.pyramid_height must be at least 1, got {self.height}")
        if p.pool not in _POOLING_METHOD:
            self.fail(f"unknown pooling method {p.pool}")
        self.method = _POOLING_METHOD[p.pool]
        if self.method == POOL.STOCHASTIC:
            self.fail("STOCHASTIC pooling is not supported")
        self._key = None
        self.pools = []
        self._outs = []
        self._aux = None     # shares the bottom's data, own diff: sums the levels' gradients

    def _pooling_param(self, level, h, w):
        bins = 2 ** level
        lp = caffe_pb2.LayerParameter(name=f"{self.name}/level{level}", type="Pooling",
                                      phase=self.phase)
        pp = lp.pooling_param
        pp.pool = self.method
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        pp.kernel_h, pp.kernel_w = kh, kw
        pp.stride_h, pp.stride_w = kh, kw
        pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        return lp

    def _build(self, bottom, top, h, w):
        self.pools, self._outs = [], []
        for level in range(self.height):
            out = top[0] if self.height == 1 else Blob(dtype=bottom[0].dtype)
            pool = PoolingLayer(self._pooling_param(level, h, w))
            try:
                pool.setup([bottom[0]], [out])
            except LayerError as e:
                self.fail(f"pyramid level {level} ({2 ** level}x{2 ** level} bins) cannot pool "
                          f"the input of shape {shape_text(bottom[0].shape)}: {e}", ShapeError)
            self.pools.append(pool)
            self._outs.append(out)

    def reshape(self, bottom, top):
        self.refuse_in_place(bottom, top)
        b = bottom[0]
        if b.num_axes != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape "
                      f"{shape_text(b.shape)}", ShapeError)
        n, c, h, w = b.shape
        if h <= 0 or w <= 0:
            self.fail(f"input dimensions cannot be zero, got shape {shape_text(b.shape)}",
                      ShapeError)
        if (h, w, b.dtype) != self._key:
            self._key = (h, w, b.dtype)
            self._build(bottom, top, h, w)
        for pool, out in zip(self.pools, self._outs):
            pool.reshape([b], [out])
        if self.height == 1:
            return
        self.lengths = [out.count_range(1) for out in self._outs]
        top[0].reshape(n, sum(self.lengths))
        if self._aux is None or self._aux.dtype != b.dtype:
            self._aux = Blob(dtype=b.dtype)
        if tuple(self._aux.shape) != tuple(b.shape):
            self._aux.reshape(b.shape)
        self._aux.share_data(b)

    def forward(self, bottom, top):
        if self.height == 1:
            self.pools[0].forward(bottom, top)
            return
        y = top[0].xdata
        n, start = y.shape[0], 0
        for pool, out, length in zip(self.pools, self._outs, self.lengths):
            pool.forward(bottom, [out])
            y[:, start:start + length] = out.xdata.reshape(n, length)
            start += length

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.height == 1:
            self.pools[0].backward(top, propagate_down, bottom)
            return
        dy = top[0].xdiff
        start = 0
        self._aux.share_data(bottom[0])
        for level, (pool, out, length) in enumerate(zip(self.pools, self._outs, self.lengths)):
            out.xdiff[...] = dy[:, start:start + length].reshape(out.shape)
            start += length
            if level == 0:
                pool.backward([out], [True], bottom)       # overwrites bottom diff
            else:
                pool.backward([out], [True], [self._aux])
                bottom[0].xdiff[...] += self._aux.xdiff

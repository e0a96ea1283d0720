"""Weight fillers with Caffe's semantics (FillerParameter.type).

All draws come from ``backend.rng()`` on the host, then move to the blob's device, so a seed
gives the same initial weights on the CPU and the GPU.
"""
import math

import numpy as np

from . import backend
from .errors import MiniCaffeError
from .proto import caffe_pb2

VN = caffe_pb2.FillerParameter


def _fans(shape):
    count = int(np.prod(shape, dtype=np.int64))
    fan_in = count // shape[0] if len(shape) else count
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _n(shape, param):
    fan_in, fan_out = _fans(shape)
    if param.variance_norm == VN.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if param.variance_norm == VN.FAN_OUT:
        return fan_out
    return fan_in


# Draws are made in float32 directly: a float64 draw of a VGG-sized fc layer would need
# ~0.8 GB of temporaries.
def _uniform(g, lo, hi, shape):
    out = g.random(shape, dtype=np.float32)
    out *= np.float32(hi - lo)
    out += np.float32(lo)
    return out


def _normal(g, mean, std, shape):
    out = g.standard_normal(shape, dtype=np.float32)
    out *= np.float32(std)
    out += np.float32(mean)
    return out


def filled_array(shape, param):
    """A float32 NumPy array of ``shape`` filled as Caffe's filler ``param.type`` would."""
    shape = tuple(int(s) for s in shape)
    g = backend.rng()
    kind = param.type
    if 0 in shape:   # an empty blob (an empty axis upstream): nothing to draw, no fan to divide by
        return np.zeros(shape, dtype=np.float32)
    if kind == "constant":
        return np.full(shape, param.value, dtype=np.float32)
    if kind == "uniform":
        return _uniform(g, param.min, param.max, shape)
    if kind == "gaussian":
        out = _normal(g, param.mean, param.std, shape)
        if param.sparse >= 0:
            # Each output unit keeps on average `sparse` nonzero inputs.
            if len(shape) < 1:
                raise MiniCaffeError("sparse gaussian filler needs a blob with at least 1 axis")
            p = param.sparse / float(shape[0])
            out *= (g.random(shape) < p)
        return out
    if kind == "positive_unitball":
        out = g.uniform(0.0, 1.0, shape).astype(np.float32)
        num = shape[0] if shape else 1
        rows = out.reshape(num, -1)
        rows /= rows.sum(axis=1, keepdims=True)
        return out
    if kind == "xavier":
        scale = math.sqrt(3.0 / _n(shape, param))
        return _uniform(g, -scale, scale, shape)
    if kind == "msra":
        std = math.sqrt(2.0 / _n(shape, param))
        return _normal(g, 0.0, std, shape)
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise MiniCaffeError(f"bilinear filler needs a 4-D blob with square kernels, got {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        x = np.arange(k)
        w1 = 1 - np.abs(x / f - c)
        kernel = np.outer(w1, w1).astype(np.float32)
        return np.broadcast_to(kernel, shape).copy()
    raise MiniCaffeError(f"unknown filler type '{kind}' (known: constant, uniform, gaussian, "
                         "positive_unitball, xavier, msra, bilinear)")


def fill(blob, param):
    arr = filled_array(blob.shape, param)
    blob.xdata[...] = blob.xp.asarray(arr, dtype=blob.dtype)

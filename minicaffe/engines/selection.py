"""Which engine runs a layer: Caffe's ``engine:`` setting, the environment and the device.

Convolution (and Deconvolution) on NumPy arrays:

* ``engine: CAFFE`` (or the Intel fork's layer-level ``engine: "CAFFE"``) -> the reference
  (the layer's own im2col/GEMM code);
* ``engine: DEFAULT``, ``CUDNN`` (cuDNN serves only the GPU; on the CPU Caffe falls back to
  its default too) and the Intel fork's ``MKL2017``/``MKLDNN`` -> oneDNN when the library
  loads and the configuration is supported, else the reference. ``MINICAFFE_CONV_ENGINE``
  (``auto``, the default; ``onednn``; ``caffe``) overrides this choice; ``caffe`` gives the
  reference.

Pooling likewise on ``pooling_param.engine`` and ``MINICAFFE_POOL_ENGINE`` (``auto``, the
default; ``caffe``); the layer's oneDNN engine then takes only the configurations where it is
the faster one (``onednn/pool_layer.py``).

CuPy arrays always take the reference path (the GPU code is the layer's own). When oneDNN
cannot load, one warning says so for the whole process and everything runs on the reference.
"""
import logging
import os
import threading

import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .onednn import library

ENV_VAR = "MINICAFFE_CONV_ENGINE"
CHOICES = ("auto", "onednn", "caffe")
POOL_ENV_VAR = "MINICAFFE_POOL_ENGINE"
POOL_CHOICES = ("auto", "caffe")
REFERENCE, ONEDNN = "caffe", "onednn"

log = logging.getLogger("minicaffe")
_warned = {"done": False}
_lock = threading.Lock()


def env_choice(var=ENV_VAR, choices=CHOICES):
    """``$var`` in lower case (``auto`` when unset); MiniCaffeError when not one of ``choices``."""
    value = os.environ.get(var, "auto").strip().lower() or "auto"
    if value not in choices:
        raise MiniCaffeError(f"{var}={value!r}: expected one of {', '.join(choices)}")
    return value


def _asks_reference(layer_param, param):
    """True when the prototxt pins Caffe's own engine for this layer (``param``: its
    convolution_param or pooling_param, whose Engine enums share the CAFFE value)."""
    # The Intel fork's layer-level string ("CAFFE", "MKLDNN", "MKL2017:...") wins over the
    # parameter's enum there; an empty string leaves the choice to the enum.
    engine = layer_param.engine.split(":")[0].strip().upper() if layer_param.engine else ""
    if engine:
        return engine == "CAFFE"
    return param.engine == caffe_pb2.ConvolutionParameter.CAFFE


def onednn_loads():
    """Whether oneDNN can be used; the first failure logs the one warning of the process."""
    try:
        library.load()
    except library.OneDNNUnavailable as e:
        with _lock:
            if not _warned["done"]:
                _warned["done"] = True
                log.warning("oneDNN not available (%s): Convolution runs on the NumPy "
                            "reference path, and so does Pooling", e)
        return False
    return True


def reset():
    """Forget the loaded library and the warning (tests that change the environment)."""
    library.reset()
    with _lock:
        _warned["done"] = False


def _choose(layer_param, param, xp, dtype, var, choices):
    if xp is not np or np.dtype(dtype) != np.float32:
        return REFERENCE            # the GPU path, and float64 (gradient checks)
    if _asks_reference(layer_param, param) or env_choice(var, choices) == REFERENCE:
        return REFERENCE
    return ONEDNN if onednn_loads() else REFERENCE


def convolution_engine(layer_param, xp, dtype):
    """``ONEDNN`` or ``REFERENCE`` for a Convolution/Deconvolution on arrays of ``xp``."""
    return _choose(layer_param, layer_param.convolution_param, xp, dtype, ENV_VAR, CHOICES)


def pooling_engine(layer_param, xp, dtype):
    """``ONEDNN`` or ``REFERENCE`` for a Pooling layer on arrays of ``xp``."""
    return _choose(layer_param, layer_param.pooling_param, xp, dtype, POOL_ENV_VAR,
                   POOL_CHOICES)

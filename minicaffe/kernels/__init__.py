"""Compiled kernels behind the layers' array-module code.

``get(name, xp)`` gives the compiled implementation of kernel family ``name`` (e.g.
"pooling", "im2col") for arrays of module ``xp``, or None when there is none and the layer
should run its NumPy/CuPy expressions:

* NumPy arrays: the numba kernels that ``minicaffe.kernels.cpu`` loads (``cpu_<name>``);
* CuPy arrays (GPU mode, fused kernels on): the CUDA kernels of ``minicaffe.kernels.cuda``
  with the same functions and arguments (``cuda.family(name)``), compiled with NVRTC on
  first use.

``minicaffe.kernels.cuda`` also holds the fused kernels that layers call directly on CuPy
arrays (BatchNorm/Scale/Bias, SoftmaxWithLoss, the solvers' updates), and
``minicaffe.kernels.array_im2col`` the array-module im2col and window geometry that the
convolution and pooling layers share, which hands over to the "im2col" family where there is
one. Nothing here imports CuPy or numba before it is needed.
"""
import numpy as np

from .. import backend


def get(name, xp):
    """The compiled implementation of ``name`` for arrays of ``xp``, or None."""
    if xp is np:
        from . import cpu
        return cpu.get(name, xp)
    if backend.fused_kernels(xp):
        from . import cuda
        return cuda.family(name)
    return None

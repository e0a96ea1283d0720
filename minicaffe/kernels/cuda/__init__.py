"""Fused CUDA kernels for GPU mode (CuPy only; never imported for computing on the CPU).

Layers keep one NumPy/CuPy implementation and call these where a fused kernel pays, when
``backend.fused_kernels(xp)`` says the arrays are CuPy's:

* ``channels``: per-channel sums in one pass (BatchNorm statistics and gradients, Scale/Bias
  parameter gradients), BatchNorm normalise/backward with the moving averages fused, the
  Scale/Bias affine map;
* ``softmax_loss``: softmax, loss terms and gradient of SoftmaxWithLoss without host syncs;
* ``pooling``: MAX pooling with its argmax and AVE pooling, Caffe's GPU formulas (the
  family ``kernels.get("pooling", cupy)`` returns);
* ``im2col``: im2col/col2im for minicaffe's channels-last column layout
  (``kernels.get("im2col", cupy)``);
* ``solver``: one fused update kernel per parameter for each solver type.

Sources are plain CUDA C held in this package's registries (``RAW_SOURCES``,
``ELEMENTWISE_SOURCES``) and compiled on first use per floating type (``real`` is float or
double), so a test can compile every one of them with NVRTC even without a GPU.
"""
import numpy as np

from ... import backend

THREADS = 256
MAX_BLOCKS = 65535

# Prepended to every raw module: the floating type and a grid-stride loop.
RAW_PRELUDE = r"""
typedef %s real;
#define MC_KERNEL_LOOP(i, n) \
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)
#define MC_FLT_MAX 3.402823466e+38F
#define MC_FLT_MIN 1.175494351e-38F
"""

RAW_SOURCES = {}          # module name -> CUDA source (uses ``real``)
ELEMENTWISE_SOURCES = {}  # kernel name -> (in_params, out_params, operation) with {T}
_compiled = {}


def ctype(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    raise TypeError(f"no fused kernel for dtype {dtype}")


def supported(*arrays):
    """True when every array is float32 (or every one float64): the kernels' types."""
    dt = arrays[0].dtype
    return dt in (np.float32, np.float64) and all(a.dtype == dt for a in arrays)


def raw_source(module, dtype):
    """The full source of raw module ``module`` for floating type ``dtype``."""
    return RAW_PRELUDE % ctype(dtype) + RAW_SOURCES[module]


def raw_function(module, name, dtype):
    key = ("raw", module, np.dtype(dtype).str)
    mod = _compiled.get(key)
    if mod is None:
        cp = backend.cupy_module()
        mod = _compiled[key] = cp.RawModule(code=raw_source(module, dtype),
                                            options=("--std=c++11",))
    return mod.get_function(name)


def elementwise_parts(name, dtype):
    """(in_params, out_params, operation) of ElementwiseKernel ``name`` for ``dtype``: {T}
    becomes the dtype's name in the parameter lists and its C type in the operation."""
    ins, outs, op = ELEMENTWISE_SOURCES[name]
    t = np.dtype(dtype).name
    return ins.format(T=t), outs.format(T=t), op.format(T=ctype(dtype))


def elementwise(name, dtype):
    """The ElementwiseKernel ``name`` for ``dtype``."""
    key = ("ew", name, np.dtype(dtype).str)
    k = _compiled.get(key)
    if k is None:
        cp = backend.cupy_module()
        ins, outs, op = elementwise_parts(name, dtype)
        k = _compiled[key] = cp.ElementwiseKernel(ins, outs, op, "mc_" + name)
    return k


def family(name):
    """The CUDA implementation of kernel family ``name`` ("pooling", "im2col"), or None."""
    if name == "pooling":
        return pooling
    if name == "im2col":
        return im2col
    return None


def blocks(n):
    return max(1, min((int(n) + THREADS - 1) // THREADS, MAX_BLOCKS))


def launch(fn, n, args):
    """Run raw kernel ``fn`` over ``n`` work items (grid-stride loop inside)."""
    if n >= 2 ** 31:
        raise ValueError(f"{n} elements is too many for one kernel launch (int indices)")
    if n:
        fn((blocks(n),), (THREADS,), args)


def i32(v):
    return np.int32(v)


def real(dtype, v):
    return np.dtype(dtype).type(v)


from . import channels, im2col, pooling, softmax_loss, solver  # noqa: E402,F401  (registries)

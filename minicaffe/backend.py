"""CPU/GPU mode and the array module (NumPy or CuPy) every layer computes with.

Layers never import numpy or cupy for computation directly: they ask ``get_array_module``
for the module that owns their arrays, so one expression runs on both (Chainer's idea).
CuPy is imported lazily: ``import minicaffe`` works without it.

GPU mode computes with the *device module*: CuPy when it is installed and a GPU is usable.
Tests may install a stand-in with the same surface (``use_device_module``) to run the GPU-mode
code paths (host/device syncing, device-side loss accumulation) on a machine without a GPU.
Fused CUDA kernels (``minicaffe.kernels``) are used only when the module really is CuPy.
"""
import os

import numpy as np

_state = {"mode": "cpu", "device": 0}
_cupy = None          # the cupy module once probed; False: probed and unusable
_override = None      # a stand-in device module installed by use_device_module
_dev = None           # the device module arrays may belong to now (override or cupy), or None
# Fused CUDA kernels on CuPy arrays; MINICAFFE_NO_KERNELS=1 (or set_fused_kernels(False))
# falls back to the array-module expressions, e.g. to compare both on a GPU.
_kernels = {"on": os.environ.get("MINICAFFE_NO_KERNELS", "") in ("", "0")}


def cupy_module():
    """The cupy module, or None when it is not installed or no GPU is usable."""
    global _cupy, _dev
    if _cupy is None:
        try:
            import cupy  # noqa: F401
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("no CUDA device")
            _cupy = cupy
        except Exception:  # ImportError, or a CUDA error without a driver/GPU
            _cupy = False
        if _override is None:
            _dev = _cupy or None
    return _cupy or None


def device_module():
    """The array module of GPU mode: a stand-in installed by ``use_device_module``, else CuPy
    (None when neither is available)."""
    if _override is not None:
        return _override
    return cupy_module()


def use_device_module(module):
    """Make ``module`` GPU mode's array module (None: back to CuPy). For tests: the module
    needs CuPy's surface as minicaffe uses it (``ndarray``, ``get_array_module``, ``asarray``,
    ``asnumpy``, ``random``, NumPy's functions, arrays with ``get(out=)`` and ``set()``)."""
    global _override, _dev
    _override = module
    if module is None:
        _state["mode"] = "cpu"
        _dev = _cupy or None
    else:
        _dev = module


def is_cupy(xp):
    """True when ``xp`` is the real CuPy module."""
    return xp is not np and _cupy is not None and _cupy is not False and xp is _cupy


def fused_kernels(xp):
    """True when the fused CUDA kernels of ``minicaffe.kernels`` should run for arrays of
    ``xp`` (CuPy, kernels not switched off)."""
    return _kernels["on"] and is_cupy(xp)


def set_fused_kernels(on):
    """Switch the fused CUDA kernels on or off (off: the plain CuPy expressions run)."""
    _kernels["on"] = bool(on)


def set_mode_cpu():
    _state["mode"] = "cpu"


def set_mode_gpu():
    if device_module() is None:
        from .errors import MiniCaffeError
        raise MiniCaffeError("GPU mode needs CuPy and an NVIDIA GPU; "
                             "install with `pip install minicaffe[gpu]` or use CPU mode")
    _state["mode"] = "gpu"


def set_device(device_id):
    _state["device"] = int(device_id)
    if _override is None:
        cp = cupy_module()
        if cp is not None:
            cp.cuda.Device(int(device_id)).use()


def mode():
    return _state["mode"]


def device_id():
    return _state["device"]


def xp():
    """The array module of the current mode."""
    return device_module() if _state["mode"] == "gpu" else np


def get_array_module(*arrays):
    d = _dev
    if d is None:
        return np
    return d.get_array_module(*arrays)


def is_device_array(a):
    """True for an array of the device module (not NumPy)."""
    d = _dev
    return d is not None and type(a) is not np.ndarray and isinstance(a, d.ndarray)


def to_numpy(a):
    """A NumPy array (or NumPy scalar) holding ``a``; a copy from the device when needed."""
    if isinstance(a, np.ndarray) and type(a) is np.ndarray:
        return a
    get = getattr(a, "get", None)
    if get is not None:
        return get()
    return np.asarray(a)


def to_float(a):
    """A Python float from a number, a NumPy scalar or a size-1 (device) array (syncs)."""
    if isinstance(a, (int, float)):
        return float(a)
    return float(to_numpy(a).reshape(-1)[0]) if getattr(a, "size", 1) == 1 else float(a)


def synchronize():
    """Wait for the device's queued work (a no-op on the CPU)."""
    if _state["mode"] == "gpu" and _override is None:
        cp = cupy_module()
        if cp is not None:
            cp.cuda.get_current_stream().synchronize()


def memory_pool_bytes():
    """(used, held) bytes of CuPy's default device memory pool; (0, 0) without CuPy."""
    cp = _cupy or None
    if cp is None:
        return 0, 0
    pool = cp.get_default_memory_pool()
    return int(pool.used_bytes()), int(pool.total_bytes())


# --- randomness: one seedable source for fillers, dropout, data shuffling -------------------
_rng = {"gen": np.random.default_rng()}


def set_random_seed(seed):
    """Seed every random number source minicaffe uses (host generator and, if present, CuPy)."""
    _rng["gen"] = np.random.default_rng(int(seed))
    d = _override if _override is not None else cupy_module()
    if d is not None and hasattr(d, "random") and hasattr(d.random, "seed"):
        d.random.seed(int(seed))


def rng():
    """The host generator; fillers draw from it so CPU and GPU runs start from the same weights."""
    return _rng["gen"]

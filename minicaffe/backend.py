"""CPU/GPU mode and the array module (NumPy or CuPy) every layer computes with.

Layers never import numpy or cupy for computation directly: they ask ``get_array_module``
for the module that owns their arrays, so one expression runs on both (Chainer's idea).
CuPy is imported lazily: ``import minicaffe`` works without it.
"""
import numpy as np

_state = {"mode": "cpu", "device": 0}
_cupy = None


def cupy_module():
    """The cupy module, or None when it is not installed or no GPU is usable."""
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: F401
            cupy.cuda.runtime.getDeviceCount()
            _cupy = cupy
        except Exception:  # ImportError, or a CUDA error without a driver/GPU
            _cupy = False
    return _cupy or None


def set_mode_cpu():
    _state["mode"] = "cpu"


def set_mode_gpu():
    if cupy_module() is None:
        from .errors import MiniCaffeError
        raise MiniCaffeError("GPU mode needs CuPy and an NVIDIA GPU; "
                             "install with `pip install minicaffe[gpu]` or use CPU mode")
    _state["mode"] = "gpu"


def set_device(device_id):
    _state["device"] = int(device_id)
    cp = cupy_module()
    if cp is not None:
        cp.cuda.Device(int(device_id)).use()


def mode():
    return _state["mode"]


def xp():
    """The array module of the current mode."""
    return cupy_module() if _state["mode"] == "gpu" else np


def get_array_module(*arrays):
    cp = _cupy or None
    if cp is not None:
        return cp.get_array_module(*arrays)
    return np


def to_numpy(a):
    if isinstance(a, np.ndarray):
        return a
    return a.get()


# --- randomness: one seedable source for fillers, dropout, data shuffling -------------------
_rng = {"gen": np.random.default_rng()}


def set_random_seed(seed):
    """Seed every random number source minicaffe uses (host generator and, if present, CuPy)."""
    _rng["gen"] = np.random.default_rng(int(seed))
    cp = cupy_module()
    if cp is not None:
        cp.random.seed(int(seed))


def rng():
    """The host generator; fillers draw from it so CPU and GPU runs start from the same weights."""
    return _rng["gen"]

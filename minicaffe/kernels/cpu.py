"""Optional compiled CPU kernels (numba) for loops NumPy cannot vectorise well.

Each kernel module (``cpu_*.py`` or package ``cpu_*/`` beside this file) is a CPU-only fast
path for NumPy arrays; the layers keep their array-module (NumPy/CuPy) code as the fallback, so
results and the CuPy path do not depend on numba. The kernels are used when numba imports and the environment
variable ``MINICAFFE_NUMBA`` is not ``0``; ``enabled`` can also be switched at run time (the
tests run both paths). Kernels compile on first use (seconds) and numba caches them on disk.
"""
import importlib
import os

import numpy as np

enabled = os.environ.get("MINICAFFE_NUMBA", "1") != "0"
# numba's OpenMP threads and OpenBLAS's own threads take turns on the same cores; with the
# OpenMP default (spin after each parallel region) a kernel right after a GEMM waits for the
# spinning threads: a 0.03 ms im2col took 8 ms after a 1.7 ms GEMM on 2 cores. Sleeping
# threads cost nothing measurable. Read by the OpenMP runtime when numba first loads it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_modules = {}


def load(name):
    """The kernel module ``minicaffe.kernels.cpu_<name>`` (imported once), or None when numba
    is missing or broken."""
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(f"{__package__}.cpu_{name}")
        except ImportError:
            _modules[name] = None
    return _modules[name]


def get(name, xp):
    """The kernel module ``name`` when compiled kernels apply to arrays of module ``xp``."""
    if not enabled or xp is not np:
        return None
    return load(name)

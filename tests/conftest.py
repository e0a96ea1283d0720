import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _cpu_mode_and_seed():
    import minicaffe
    minicaffe.set_mode_cpu()
    minicaffe.set_random_seed(1701)
    yield


@pytest.fixture(params=["compiled", "array"])
def kernel_path(request, monkeypatch):
    """Runs a test on both CPU reference paths: numba kernels and the NumPy/CuPy array code,
    with the oneDNN engines off (``pytestmark = pytest.mark.usefixtures("kernel_path")`` in a module)."""
    from minicaffe.kernels import cpu
    if request.param == "compiled" and cpu.load("pooling") is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(cpu, "enabled", request.param == "compiled")
    # These are the reference paths; the oneDNN engines have their own tests against them.
    monkeypatch.setenv("MINICAFFE_CONV_ENGINE", "caffe")
    monkeypatch.setenv("MINICAFFE_POOL_ENGINE", "caffe")
    return request.param

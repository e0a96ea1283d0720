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

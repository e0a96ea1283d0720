"""minicaffe: a small, fast, Caffe-compatible deep-learning framework.

``import minicaffe as caffe`` gives the pycaffe surface: ``caffe.Net``, ``caffe.TRAIN``,
``caffe.set_mode_cpu()``, ``caffe.get_solver`` and friends.
"""
import os

# The environment as the process got it, before the thread defaults minicaffe sets (here and
# in kernels/cpu.py): benchmarks start their children with it, so those defaults never reach
# the PyTorch reference processes.
user_environ = dict(os.environ)

# OpenBLAS's threads spin for ~2^28 cycles after each GEMM before they sleep; the compiled
# kernels that run between GEMMs (im2col, pooling) then share the cores with spinning
# threads and took up to 2x longer. 2^4 cycles makes them sleep at once. OpenBLAS reads this
# when it loads, so it only applies when minicaffe is imported before NumPy (as the CLI is).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
from .backend import set_device, set_mode_cpu, set_mode_gpu, set_random_seed  # noqa: F401
from .blob import Blob  # noqa: F401
from .errors import LayerError, MiniCaffeError, PrototxtError, ShapeError  # noqa: F401
from .layer import Layer, layer_types, register  # noqa: F401
# Importing the package registers every built-in layer type (before .net_spec rebinds the name
# ``layers`` to NetSpec's L below).
from . import layers  # noqa: F401,E402
from .net import TEST, TRAIN, Net  # noqa: F401
from .proto import caffe_pb2  # noqa: F401

__version__ = "0.1.0"
layer_type_list = layer_types  # pycaffe's name

from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: F401
                      NesterovSolver, RMSPropSolver, SGDSolver, get_solver)
from . import io  # noqa: F401,E402
from .classifier import Classifier  # noqa: F401,E402
# pycaffe's multi-GPU names (python/train.py): caffe.NCCL, caffe.set_solver_count ...
from .parallel import (set_multiprocess, set_solver_count, set_solver_rank,  # noqa: F401,E402
                       solver_count, solver_rank)
from .parallel.pycaffe import NCCL  # noqa: F401,E402
# pycaffe's NetSpec names: caffe.layers is the NetSpec layer factory (L), as in pycaffe.
from .net_spec import NetSpec, layers, params, to_proto  # noqa: F401,E402

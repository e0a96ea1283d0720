"""Solvers: Caffe's training loop (``solver.py``), update rules (``sgd.py``) and
learning-rate policies (``lr_policy.py``); reading solver files (``solver_param.py``).

``get_solver(path)`` picks the class from the solver file's ``type`` (or the deprecated
``solver_type``), as pycaffe's ``caffe.get_solver`` does; ``SGDSolver(path)`` and the other
classes build that type whatever the file says.
"""
from ..errors import MiniCaffeError
from .lr_policy import LR_POLICIES  # noqa: F401
from .sgd import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                  RMSPropSolver, SGDSolver)
from .solver import Solver, SolverAction  # noqa: F401
from .solver_param import (SolverParameter, load_solver_param, read_solver_param,  # noqa: F401
                           upgrade_solver)

SOLVERS = {cls.type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                     AdaDeltaSolver, AdamSolver)}


def get_solver(param, source=None):
    """A solver of the ``type`` the solver file (or SolverParameter) names, as pycaffe's."""
    param, source = load_solver_param(param, source)
    cls = SOLVERS.get(param.type)
    if cls is None:
        raise MiniCaffeError(f"{source or '<SolverParameter>'}: unknown solver type "
                             f"'{param.type}' (known types: {', '.join(SOLVERS)})")
    return cls(param, source)

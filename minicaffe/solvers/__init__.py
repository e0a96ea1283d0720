"""Solvers: Caffe's training loop (``solver.py``) and update rules (``sgd.py``).

``get_solver(path)`` picks the class from the solver file's ``type`` (or the deprecated
``solver_type``), as pycaffe's ``caffe.get_solver`` does; ``SGDSolver(path)`` and the other
classes build that type whatever the file says.
"""
from ..errors import MiniCaffeError
from .sgd import (LR_POLICIES, AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: F401
                  NesterovSolver, RMSPropSolver, SGDSolver)
from .solver import (Solver, SolverAction, SolverParameter, load_solver_param,  # noqa: F401
                     read_solver_param, upgrade_solver)

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

"""Who this process is in a data-parallel run: Caffe's ``Caffe::solver_count`` and
``solver_rank`` (pycaffe's ``caffe.set_solver_count`` ...), and how the environment says so.

A run is parallel when this process was started by ``mpirun``/``mpiexec`` with more than one
process (the launchers' own variables, read without importing mpi4py) or by the ``--gpu
0,1`` launcher (``MINICAFFE_SOLVER_COUNT``/``_RANK``/``_NCCL_UID``). Nothing here imports an
MPI or CuPy: the single-process path stays free of both.
"""
import os

# (size, rank, local rank) variables of the MPI launchers: Open MPI, MPICH/Hydra, MVAPICH2.
MPI_ENVIRONMENTS = (("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
                    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),
                    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK"))
COUNT_VAR, RANK_VAR, UID_VAR = ("MINICAFFE_SOLVER_COUNT", "MINICAFFE_SOLVER_RANK",
                                "MINICAFFE_NCCL_UID")

_state = {"count": 1, "rank": 0, "multiprocess": False}


def set_solver_count(count):
    if int(count) < 1:
        raise ValueError(f"solver count must be at least 1, got {count}")
    _state["count"] = int(count)


def set_solver_rank(rank):
    _state["rank"] = int(rank)


def set_multiprocess(on):
    """pycaffe's flag: one process per solver (always so here; kept for train.py scripts)."""
    _state["multiprocess"] = bool(on)


def solver_count():
    return _state["count"]


def solver_rank():
    return _state["rank"]


def is_root():
    """Caffe's root_solver(): rank 0 alone logs, tests' results, snapshots."""
    return _state["rank"] == 0


class Placement:
    """Where the environment puts this process: ``backend`` "mpi" or "nccl", ``size``,
    ``rank``, ``local_rank`` (its index on this machine: picks the GPU), ``uid`` (NCCL)."""

    def __init__(self, backend, size, rank, local_rank, uid=None):
        self.backend, self.size, self.rank = backend, size, rank
        self.local_rank, self.uid = local_rank, uid

    def __repr__(self):
        return f"<Placement {self.backend} rank {self.rank} of {self.size}>"


def placement_from_environment(env=None):
    """The Placement the environment describes, or None for a single process."""
    env = os.environ if env is None else env
    if COUNT_VAR in env:
        size, rank = int(env[COUNT_VAR]), int(env.get(RANK_VAR, "0"))
        uid = env.get(UID_VAR)
        return Placement("nccl", size, rank, rank, uid) if size > 1 else None
    for size_var, rank_var, local_var in MPI_ENVIRONMENTS:
        if size_var in env and int(env[size_var]) > 1:
            rank = int(env.get(rank_var, "0"))
            return Placement("mpi", int(env[size_var]), rank, int(env.get(local_var, rank)))
    return None

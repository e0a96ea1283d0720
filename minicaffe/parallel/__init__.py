"""Data-parallel training: one solver per rank, gradients averaged by all-reduce.

``world`` (who this process is), ``communicator`` with its MPI (``mpi_comm``) and NCCL
(``nccl_comm``) backends, ``sharding`` (which records a rank reads), ``buckets`` and
``backward_hooks`` (all-reduce during backward), ``data_parallel`` (the solver callback),
``sync_bn``, ``training`` and ``launcher`` (the command line's ``train`` under mpirun or
with ``--gpu 0,1``), ``pycaffe`` (``caffe.NCCL``), ``scaling_benchmark``.

Only ``world`` is imported here: the single-process path never loads mpi4py or NCCL.
"""
from .world import (is_root, set_multiprocess, set_solver_count, set_solver_rank,  # noqa: F401
                    solver_count, solver_rank)

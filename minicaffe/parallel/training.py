"""What ``minicaffe train`` does differently in a data-parallel run: join the run the
environment describes (``world``), pick this rank's GPU, seed every rank alike, attach
``DataParallel`` to the solver, keep logs to rank 0, and end the whole run on any failure.

``join()`` gives a ``SingleProcess`` (every step a no-op, no MPI or NCCL imported) unless
the process was started by mpirun/mpiexec or the ``--gpu`` launcher. Options, from the
environment so that any solver can use them:

    MINICAFFE_SYNC_BN=1        synchronised BatchNorm statistics (``sync_bn``)
    MINICAFFE_CHECK_EVERY=N    verify every N iterations that the weights are bit-identical
    MINICAFFE_BUCKET_MB=4      gradient bucket size
    MINICAFFE_COMM_TIMEOUT=300 seconds a collective may take before the run is aborted
"""
import contextlib
import logging
import os
import sys
import traceback

import numpy as np

from .. import backend
from ..errors import MiniCaffeError
from ..logging_setup import LOGGER_NAME
from . import world
from .launcher import launch  # noqa: F401  (the CLI's --gpu 0,1)

log = logging.getLogger(LOGGER_NAME)


class SingleProcess:
    """The training of one process: nothing to do."""
    is_root = True
    is_parallel = False

    def device_flag(self, gpu_flag):
        return gpu_flag

    def gpus_to_launch(self, gpu_ids):
        """The devices to start one process each on, or None to train in this process (one
        id, or no CuPy / too few devices: select_device's CPU fallback then decides)."""
        if len(gpu_ids) < 2:
            return None
        cp = backend.cupy_module()
        if cp is None or cp.cuda.runtime.getDeviceCount() < max(gpu_ids) + 1:
            return None
        return gpu_ids

    def seed(self, param):
        pass

    def attach(self, solver):
        return None

    def guard(self):
        return contextlib.nullcontext()


class ParallelRun:
    is_parallel = True

    def __init__(self, placement):
        self.placement = placement
        self._comm = None
        world.set_solver_count(placement.size)
        world.set_solver_rank(placement.rank)
        world.set_multiprocess(True)
        self.is_root = placement.rank == 0
        if not self.is_root:   # rank 0 alone logs; warnings and errors still show
            log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
        sys.excepthook = self._excepthook

    @property
    def comm(self):
        """Created on first use: NCCL binds to the device selected by then."""
        if self._comm is None:
            p = self.placement
            if p.backend == "mpi":
                from .mpi_comm import MPICommunicator
                self._comm = MPICommunicator()
            else:
                from .nccl_comm import NCCLCommunicator
                self._comm = NCCLCommunicator(p.size, p.rank, p.uid)
        return self._comm

    def gpus_to_launch(self, gpu_ids):
        return None   # already one of the run's processes

    def device_flag(self, gpu_flag):
        """This rank's ``--gpu``: under mpirun the local rank picks one of the listed ids."""
        if self.placement.backend != "mpi" or not gpu_flag:
            return gpu_flag
        if gpu_flag == "all":
            return str(self.placement.local_rank)
        ids = [s for s in gpu_flag.split(",") if s.strip()]
        return ids[self.placement.local_rank % len(ids)]

    def seed(self, param):
        """Without a random_seed, rank 0's random seed for all: the data layers' shuffles and
        skips must agree for the shards to be disjoint."""
        if param.random_seed < 0:
            seed = np.array([int(backend.rng().integers(0, 2 ** 62)) if self.is_root else 0])
            backend.set_random_seed(int(self.comm.bcast(seed, what="seed broadcast")[0]))

    def attach(self, solver):
        from .data_parallel import DataParallel
        env = os.environ
        dp = DataParallel(solver, self.comm,
                          bucket_bytes=int(float(env.get("MINICAFFE_BUCKET_MB", "4")) * 2 ** 20),
                          check_every=int(env.get("MINICAFFE_CHECK_EVERY", "0")),
                          sync_batch_norm=env.get("MINICAFFE_SYNC_BN", "0") not in ("", "0"),
                          layer_wise=solver.param.layer_wise_reduce)
        dp.broadcast_params()
        solver.add_callback(dp)
        log.info("Data-parallel training over %d ranks (%s): effective batch %d x the net's, "
                 "%d gradient bucket(s), %d bytes all-reduced per iteration",
                 self.comm.size, self.comm.backend, self.comm.size, len(dp.buckets.buckets),
                 dp.bytes_per_iteration)
        return dp

    @contextlib.contextmanager
    def guard(self):
        """Any failure on this rank ends every rank (the others would wait for it)."""
        try:
            yield
        except KeyboardInterrupt:
            self.comm.abort("interrupted", 130)
        except Exception as e:  # noqa: BLE001 - every failure must end the whole run
            if not isinstance(e, (MiniCaffeError, OSError)):
                traceback.print_exc()
            self.comm.abort(str(e) or type(e).__name__)

    def _excepthook(self, kind, value, tb):
        sys.__excepthook__(kind, value, tb)
        self.comm.abort(f"uncaught {kind.__name__}")


def join():
    """The run this process takes part in: ParallelRun, or SingleProcess."""
    placement = world.placement_from_environment()
    return SingleProcess() if placement is None else ParallelRun(placement)


"""pycaffe's multi-GPU names, for scripts written like Caffe's python/train.py::

    caffe.set_solver_count(len(gpus)); caffe.set_solver_rank(rank)
    solver = caffe.SGDSolver(proto)
    nccl = caffe.NCCL(solver, uid)      # uid = caffe.NCCL.new_uid() in the parent
    nccl.bcast()
    solver.add_callback(nccl)
    solver.step(solver.param.max_iter)
"""
from . import world
from .data_parallel import DataParallel
from .nccl_comm import NCCLCommunicator, new_uid


class NCCL(DataParallel):
    """Caffe's NCCL<Dtype>: all-reduce of the solver's gradients over the GPUs of this
    machine; rank and count from ``caffe.set_solver_rank`` / ``set_solver_count``."""

    def __init__(self, solver, uid):
        super().__init__(solver, NCCLCommunicator(world.solver_count(), world.solver_rank(), uid),
                         layer_wise=solver.param.layer_wise_reduce)

    new_uid = staticmethod(new_uid)

    def bcast(self):
        """Rank 0's weights to every rank."""
        self.broadcast_params()

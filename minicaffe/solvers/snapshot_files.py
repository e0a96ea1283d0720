"""Snapshot files: ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` names, the check that
the prefix is writeable, and the solverstate itself (``iter``, ``learned_net``,
``current_step`` and the history blobs in Caffe's layout)."""
import logging
import os

from .. import backend
from ..errors import MiniCaffeError
from ..io.protobinary import array_to_blobproto, blobproto_to_array, read_binary, write_binary
from ..proto import caffe_pb2

log = logging.getLogger("minicaffe")


def snapshot_filename(prefix, it, extension):
    return f"{prefix}_iter_{it}{extension}"


def snapshot_prefix_problem(p):
    """What keeps the snapshots SolverParameter ``p`` asks for from being written, or None
    (Caffe's CheckSnapshotWritePermissions: a probe file is created and removed)."""
    if not p.snapshot:
        return None
    if not p.snapshot_prefix:
        return "snapshot is set but snapshot_prefix is not"
    probe = snapshot_filename(p.snapshot_prefix, 0, ".tempfile")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError:
        return (f"cannot write to snapshot prefix '{p.snapshot_prefix}'; make sure that the "
                "directory exists and is writeable")
    return None


def write_solver_state(state_file, it, current_step, model_file, history):
    state = caffe_pb2.SolverState(iter=it, learned_net=model_file, current_step=current_step)
    for h in history:
        array_to_blobproto(backend.to_numpy(h), proto=state.history.add())
    log.info("Snapshotting solver state to binary proto file %s", state_file)
    write_binary(state, state_file)


def read_solver_state(state_file, history, solver_type):
    """(SolverState, history arrays shaped as ``history``) from a .solverstate; checks that it
    holds one blob of the right size per history array."""
    state_file = os.fspath(state_file)
    if state_file.endswith(".h5"):
        raise MiniCaffeError(f"{state_file}: HDF5 solver states are not supported; use a "
                             "binary .solverstate")
    state = read_binary(state_file, caffe_pb2.SolverState())
    if len(state.history) != len(history):
        raise MiniCaffeError(
            f"{state_file}: holds {len(state.history)} history blobs, but the "
            f"{solver_type} solver of this net needs {len(history)} (written by another "
            "solver type or for another net?)")
    arrays = []
    for k, (bp, h) in enumerate(zip(state.history, history)):
        arr = blobproto_to_array(bp)
        if arr.size != h.size:
            raise MiniCaffeError(f"{state_file}: history blob {k} has shape {arr.shape}, "
                                 f"the parameter has shape {tuple(h.shape)}")
        arrays.append(arr.reshape(h.shape))
    return state, arrays


def learned_net_path(state_file, learned):
    """The solverstate's ``learned_net``; a relative path that does not exist from here is
    looked for beside the solverstate (a snapshot directory moved as a whole)."""
    if not os.path.isabs(learned) and not os.path.exists(learned):
        beside = os.path.join(os.path.dirname(os.fspath(state_file)), os.path.basename(learned))
        if os.path.exists(beside):
            return beside
    return learned

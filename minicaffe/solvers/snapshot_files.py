"""Snapshot files: ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` names (``.h5`` added
for snapshot_format: HDF5), the check that the prefix is writeable, and the solverstate
itself (``iter``, ``learned_net``, ``current_step`` and the history blobs in Caffe's layout;
HDF5: ``hdf5_solver_state``). Every file is written atomically (``io.atomic_file``)."""
import logging
import os

from .. import backend
from ..errors import MiniCaffeError
from ..hdf5_weights import write_hdf5_weights
from ..io.hdf5_file import require_h5py
from ..io.protobinary import array_to_blobproto, blobproto_to_array, read_binary, write_binary
from ..proto import caffe_pb2
from .hdf5_solver_state import read_hdf5_solver_state, write_hdf5_solver_state
from .solver_param import SolverParameter

log = logging.getLogger("minicaffe")


def snapshot_filename(prefix, it, extension):
    return f"{prefix}_iter_{it}{extension}"


def snapshot_extensions(p):
    """(model, solverstate) file extensions of SolverParameter ``p``'s snapshot_format."""
    if p.snapshot_format == SolverParameter.HDF5:
        return ".caffemodel.h5", ".solverstate.h5"
    return ".caffemodel", ".solverstate"


def snapshot_prefix_problem(p, after_train=False):
    """What keeps the snapshots SolverParameter ``p`` asks for from being written, or None
    (Caffe's CheckSnapshotWritePermissions: a probe file is created and removed). Caffe
    probes for ``snapshot`` only; ``after_train`` also probes for snapshot_after_train, whose
    snapshot would otherwise fail only once training is over."""
    if p.snapshot_format == SolverParameter.HDF5:
        try:
            require_h5py("snapshot_format: HDF5")
        except MiniCaffeError as e:
            return str(e)
    if not (p.snapshot or after_train and p.snapshot_after_train):
        return None
    if not p.snapshot_prefix:
        # Without snapshot, solve() warns and skips the final snapshot.
        return "snapshot is set but snapshot_prefix is not" if p.snapshot else None
    probe = snapshot_filename(p.snapshot_prefix, 0, ".tempfile")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        return (f"cannot write to snapshot prefix '{p.snapshot_prefix}' ({e.strerror}: "
                f"{probe}); make sure that the directory exists and is writeable")
    return None


def write_model_snapshot(p, net, model_file):
    """Write ``net``'s weights to ``model_file`` in SolverParameter ``p``'s snapshot_format."""
    if p.snapshot_format == SolverParameter.HDF5:
        log.info("Snapshotting to HDF5 file %s", model_file)
        write_hdf5_weights(model_file, net.layers, net._params, p.snapshot_diff)
    else:
        log.info("Snapshotting to binary proto file %s", model_file)
        write_binary(net.to_proto(write_diff=p.snapshot_diff), model_file)


def write_solver_state(state_file, it, current_step, model_file, history):
    if state_file.endswith(".h5"):
        write_hdf5_solver_state(state_file, it, current_step, model_file, history)
        return
    state = caffe_pb2.SolverState(iter=it, learned_net=model_file, current_step=current_step)
    for h in history:
        array_to_blobproto(backend.to_numpy(h), proto=state.history.add())
    log.info("Snapshotting solver state to binary proto file %s", state_file)
    write_binary(state, state_file)


def read_solver_state(state_file, history, solver_type):
    """(SolverState, history arrays shaped as ``history``) from a .solverstate (HDF5 when
    the name ends in .h5, as in Caffe); checks that it holds one blob of the right size per
    history array."""
    state_file = os.fspath(state_file)
    if state_file.endswith(".h5"):
        state, stored = read_hdf5_solver_state(state_file)
    else:
        state = read_binary(state_file, caffe_pb2.SolverState())
        stored = [blobproto_to_array(bp) for bp in state.history]
    if len(stored) != len(history):
        raise MiniCaffeError(
            f"{state_file}: holds {len(stored)} history blobs, but the "
            f"{solver_type} solver of this net needs {len(history)} (written by another "
            "solver type or for another net?)")
    arrays = []
    for k, (arr, h) in enumerate(zip(stored, history)):
        if arr.size != h.size:
            raise MiniCaffeError(f"{state_file}: history blob {k} has shape {arr.shape}, "
                                 f"the parameter has shape {tuple(h.shape)}")
        arrays.append(arr.reshape(h.shape))
    return state, arrays


def learned_net_path(state_file, learned):
    """The solverstate's ``learned_net``; a relative path that does not exist from here is
    looked for beside the solverstate (a snapshot directory moved as a whole)."""
    if isinstance(learned, bytes):   # protobuf hands back a string field that is not UTF-8
        raise MiniCaffeError(f"{os.fspath(state_file)}: learned_net is not a UTF-8 path "
                             f"({learned[:40]!r}); not a solverstate written by Caffe?")
    if not os.path.isabs(learned) and not os.path.exists(learned):
        beside = os.path.join(os.path.dirname(os.fspath(state_file)), os.path.basename(learned))
        if os.path.exists(beside):
            return beside
    return learned

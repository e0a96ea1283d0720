"""The solver state in Caffe's HDF5 layout (``.solverstate.h5``, SGDSolver's
SnapshotSolverStateToHDF5 / RestoreSolverStateFromHDF5): datasets ``iter``, ``learned_net``
(the weights file) and ``current_step``, and group ``history`` with dataset ``<i>`` per
history blob."""
import logging
import os

from .. import backend
from ..errors import MiniCaffeError
from ..io.hdf5_file import (create_atomically, load_array, load_int, load_string,
                            require_h5py, save_int, save_string)
from ..proto import caffe_pb2

log = logging.getLogger("minicaffe")


def write_hdf5_solver_state(state_file, it, current_step, model_file, history):
    log.info("Snapshotting solver state to HDF5 file %s", state_file)
    with create_atomically(state_file, "snapshot_format: HDF5") as f:
        save_int(f, "iter", it)
        save_string(f, "learned_net", model_file)
        save_int(f, "current_step", current_step)
        group = f.create_group("history")
        for i, h in enumerate(history):
            group.create_dataset(str(i), data=backend.to_numpy(h))


def read_hdf5_solver_state(state_file):
    """(SolverState without history, the history arrays in order) from a .solverstate.h5."""
    h5py = require_h5py(f"{state_file}: restoring an HDF5 solver state")
    if not os.path.exists(state_file):
        raise MiniCaffeError(f"{state_file}: no such file")
    try:
        f = h5py.File(state_file, "r")
    except OSError as e:
        raise MiniCaffeError(f"{state_file}: cannot open as HDF5 ({e})") from None
    with f:
        if "iter" not in f:
            raise MiniCaffeError(f"{state_file}: no dataset 'iter': not a Caffe HDF5 solver "
                                 "state (a .caffemodel.h5 given for a .solverstate.h5?)")
        state = caffe_pb2.SolverState(iter=load_int(f, "iter", state_file),
                                      current_step=load_int(f, "current_step", state_file))
        if "learned_net" in f:
            state.learned_net = load_string(f, "learned_net", state_file)
        group = f.get("history")
        if not isinstance(group, h5py.Group):
            raise MiniCaffeError(f"{state_file}: no 'history' group")
        arrays = [load_array(group, str(i), state_file, None, f"history blob {i}")
                  for i in range(len(group))]
    return state, arrays

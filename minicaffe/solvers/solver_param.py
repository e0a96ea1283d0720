"""Reading solver files: a SolverParameter from a prototxt or a message, with the deprecated
``solver_type`` upgraded and Caffe's default ``snapshot_prefix``."""
import logging
import os

from ..errors import MiniCaffeError
from ..io.prototxt import read_prototxt
from ..proto import caffe_pb2

log = logging.getLogger("minicaffe")

SolverParameter = caffe_pb2.SolverParameter
_LEGACY_TYPES = {SolverParameter.SGD: "SGD", SolverParameter.NESTEROV: "Nesterov",
                 SolverParameter.ADAGRAD: "AdaGrad", SolverParameter.RMSPROP: "RMSProp",
                 SolverParameter.ADADELTA: "AdaDelta", SolverParameter.ADAM: "Adam"}


def load_solver_param(param, source=None):
    """(SolverParameter, source path) from a solver prototxt path or a SolverParameter (copied
    and upgraded, so the caller's message is never changed)."""
    if isinstance(param, (str, os.PathLike)):
        source = os.fspath(param)
        return read_solver_param(source), source
    if isinstance(param, SolverParameter):
        copy = SolverParameter()
        copy.CopyFrom(param)
        return upgrade_solver(copy, source or "<SolverParameter>"), source
    raise TypeError("a solver needs a solver prototxt path or a SolverParameter")


def upgrade_solver(param, source="<solver>"):
    """Map the deprecated ``solver_type`` enum to the ``type`` string, as Caffe's upgrade does."""
    if param.HasField("solver_type"):
        if param.HasField("type"):
            raise MiniCaffeError(
                f"{source}: both the deprecated solver_type "
                f"({SolverParameter.SolverType.Name(param.solver_type)}) and type "
                f"('{param.type}') are given; keep only type")
        param.type = _LEGACY_TYPES[param.solver_type]
        param.ClearField("solver_type")
        log.info("%s: upgraded deprecated solver_type to type: \"%s\"", source, param.type)
    return param


def read_solver_param(path):
    """A SolverParameter from a prototxt, upgraded, with Caffe's default snapshot_prefix.

    Without ``snapshot_prefix`` the prefix is the solver path without its extension (snapshots
    land next to the solver file); a prefix naming a directory gets the solver file's stem.
    """
    path = os.fspath(path)
    param = read_prototxt(path, SolverParameter())
    upgrade_solver(param, path)
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = os.path.splitext(path)[0]
        log.info("snapshot_prefix was not specified and is set to %s", param.snapshot_prefix)
    elif os.path.isdir(param.snapshot_prefix):
        stem = os.path.splitext(os.path.basename(path))[0]
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, stem)
        log.info("snapshot_prefix is a directory and is replaced by %s", param.snapshot_prefix)
    return param

"""The nets a SolverParameter names, as Caffe's Solver::InitTrainNet and InitTestNets build
them: exactly one train net (TRAIN state merged with ``train_state``) and the test nets (TEST
state merged with ``test_state``), one per ``test_iter`` value."""
import logging
import os

from ..errors import MiniCaffeError
from ..io.prototxt import read_prototxt
from ..net import TEST, TRAIN, Net
from ..proto import caffe_pb2

log = logging.getLogger("minicaffe")


def _where(source):
    return source or "<SolverParameter>"


def read_net_file(path, field, source):
    """A NetParameter from the file a solver field names; ``source`` is the solver's path."""
    if not os.path.exists(path):
        base = os.path.dirname(source) if source else ""
        alt = os.path.join(base, path) if base and not os.path.isabs(path) else None
        if alt and os.path.exists(alt):
            raise MiniCaffeError(
                f"{_where(source)}: {field} '{path}' not found relative to the working "
                f"directory {os.getcwd()} (as in Caffe, paths in a solver file are relative to "
                f"where you run it); did you mean '{alt}'? Run from '{base}' or write that path")
        raise MiniCaffeError(f"{_where(source)}: {field} '{path}': no such file")
    return read_prototxt(path, caffe_pb2.NetParameter())


def build_train_net(p, source):
    fields = ("net", "net_param", "train_net", "train_net_param")
    given = [f for f in fields if p.HasField(f)]
    if not given:
        raise MiniCaffeError(f"{_where(source)}: no train net: give one of " + ", ".join(fields))
    if len(given) > 1:
        raise MiniCaffeError(f"{_where(source)}: more than one train net given (" +
                             ", ".join(given) + "); keep one")
    field = given[0]
    if field.endswith("_param"):
        net_param = caffe_pb2.NetParameter()
        net_param.CopyFrom(getattr(p, field))
        log.info("Creating training net specified in %s.", field)
    else:
        log.info("Creating training net from %s file: %s", field, getattr(p, field))
        net_param = read_net_file(getattr(p, field), field, source)
    state = caffe_pb2.NetState(phase=TRAIN)
    state.MergeFrom(net_param.state)
    state.MergeFrom(p.train_state)
    net_param.state.CopyFrom(state)
    return Net(net_param, phase=state.phase)


def _test_net_params(p, source):
    """(description, NetParameter) of each test net: test_net_param, test_net files, then the
    generic net for the remaining test_iter values."""
    generic = "net_param" if p.HasField("net_param") else "net" if p.HasField("net") else None
    n_specific = len(p.test_net_param) + len(p.test_net)
    n_iter = len(p.test_iter)
    if generic and n_iter < n_specific or not generic and n_iter != n_specific:
        raise MiniCaffeError(f"{_where(source)}: test_iter must be given once per test net: "
                             f"{n_iter} test_iter value(s) for {n_specific} test net(s)")
    n_total = n_specific + (n_iter - n_specific if generic else 0)
    if len(p.test_state) and len(p.test_state) != n_total:
        raise MiniCaffeError(f"{_where(source)}: test_state must be left out or given once per "
                             f"test net: {len(p.test_state)} test_state for {n_total} test net(s)")
    if n_total and p.test_interval <= 0:
        raise MiniCaffeError(f"{_where(source)}: test nets are given (test_iter) but "
                             "test_interval is not set to a positive number")
    out = []
    for tp in p.test_net_param:
        out.append(("test_net_param", caffe_pb2.NetParameter()))
        out[-1][1].CopyFrom(tp)
    for path in p.test_net:
        out.append(("test_net file: " + path, read_net_file(path, "test_net", source)))
    for _ in range(n_total - n_specific):
        if generic == "net_param":
            out.append(("net_param", caffe_pb2.NetParameter()))
            out[-1][1].CopyFrom(p.net_param)
        else:
            out.append(("net file: " + p.net, read_net_file(p.net, "net", source)))
    return out


def build_test_nets(p, source):
    nets = []
    for i, (description, net_param) in enumerate(_test_net_params(p, source)):
        state = caffe_pb2.NetState(phase=TEST)
        state.MergeFrom(net_param.state)
        if len(p.test_state):
            state.MergeFrom(p.test_state[i])
        net_param.state.CopyFrom(state)
        log.info("Creating test net (#%d) specified by %s", i, description)
        nets.append(Net(net_param, phase=state.phase))
    return nets

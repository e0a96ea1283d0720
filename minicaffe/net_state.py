"""The NetState a net is built for, and which layers it admits (Caffe's StateMeetsRule and
FilterNet); ``load_net_param`` reads a model and sets that state."""
import os

from .errors import LayerError
from .io.prototxt import read_prototxt
from .proto import caffe_pb2
from .upgrade import upgrade_net


def state_meets_rule(state, rule):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param):
    """A copy of ``param`` keeping only the layers whose include/exclude rules admit its state."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    for lp in param.layer:
        if len(lp.include) and len(lp.exclude):
            raise LayerError(f"layer '{lp.name}': specify either include rules or exclude "
                             "rules, not both")
        included = not len(lp.include)
        for rule in lp.exclude:
            if state_meets_rule(param.state, rule):
                included = False
        for rule in lp.include:
            if state_meets_rule(param.state, rule):
                included = True
        if included:
            out.layer.add().CopyFrom(lp)
    return out


def load_net_param(source, phase=None, level=0, stages=()):
    """NetParameter from a path or message, with the state set (phase overrides the file's)."""
    if isinstance(source, caffe_pb2.NetParameter):
        param = caffe_pb2.NetParameter()
        param.CopyFrom(source)
        name = param.name or "<net>"
    else:
        name = os.fspath(source)
        param = read_prototxt(name, caffe_pb2.NetParameter())
    upgrade_net(param, name)
    if phase is not None:
        param.state.phase = phase
    if level:
        param.state.level = level
    if stages:
        param.state.ClearField("stage")
        param.state.stage.extend(stages)
    return param

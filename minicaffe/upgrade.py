"""Bring older NetParameter forms up to date, as Caffe's upgrade_proto does on load."""
import logging

from .proto import caffe_pb2

log = logging.getLogger("minicaffe")


def upgrade_net_input(param):
    """Turn the legacy net-level ``input``/``input_shape``/``input_dim`` into an Input layer."""
    if not len(param.input):
        return False
    n = len(param.input)
    shapes = []
    if len(param.input_shape):
        if len(param.input_shape) not in (1, n):
            raise ValueError(f"net has {n} inputs but {len(param.input_shape)} input_shape entries")
        shapes = [list(s.dim) for s in param.input_shape]
        if len(shapes) == 1 and n > 1:
            shapes = shapes * n
    elif len(param.input_dim):
        dims = list(param.input_dim)
        if len(dims) != 4 * n:
            raise ValueError(f"net has {n} inputs: input_dim needs {4 * n} values, got {len(dims)}")
        shapes = [dims[4 * i:4 * i + 4] for i in range(n)]
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    for i, name in enumerate(param.input):
        layer.top.append(name)
        if shapes:
            layer.input_param.shape.add().dim.extend(shapes[i])
    old_layers = list(param.layer)
    param.ClearField("layer")
    param.layer.add().CopyFrom(layer)
    for lp in old_layers:
        param.layer.add().CopyFrom(lp)
    param.ClearField("input")
    param.ClearField("input_shape")
    param.ClearField("input_dim")
    return True


def upgrade_net(param, source="<net>"):
    """Upgrade ``param`` in place; returns it. V1/V0 layer lists are handled by upgrade_v1."""
    if len(param.layers):
        from . import upgrade_v1
        upgrade_v1.upgrade_v1_net(param)
        log.info("%s: upgraded V1 'layers' to 'layer'", source)
    upgrade_net_input(param)
    return param

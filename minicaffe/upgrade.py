"""Bring older NetParameter forms up to date, as Caffe's UpgradeNetAsNeeded does on load.

In Caffe's order: V0 layers → V1 layers (upgrade_v1.upgrade_v0_net), V1 ``layers`` → ``layer``
(with the old data-transform fields moved to transform_param), the net-level
``input``/``input_shape``/``input_dim`` fields → an Input layer. Unlike Caffe, BatchNorm
layers with three learned param specs are not silently frozen: the layer rejects them.
"""
import logging

from .errors import MiniCaffeError
from .proto import caffe_pb2

log = logging.getLogger("minicaffe")


def upgrade_net_input(param):
    """Turn the legacy net-level ``input``/``input_shape``/``input_dim`` into an Input layer.

    As in Caffe, inputs with neither shapes nor dims (the form old .caffemodel files carry)
    are simply dropped: there is nothing to build an Input layer from.
    """
    if not len(param.input):
        return False
    n = len(param.input)
    shapes = []
    if len(param.input_shape):
        if len(param.input_shape) not in (1, n):
            raise MiniCaffeError(f"net has {n} inputs but {len(param.input_shape)} "
                                 "input_shape entries")
        shapes = [list(s.dim) for s in param.input_shape]
        if len(shapes) == 1 and n > 1:
            shapes = shapes * n
    elif len(param.input_dim):
        dims = list(param.input_dim)
        if len(dims) != 4 * n:
            raise MiniCaffeError(f"net has {n} inputs: input_dim needs {4 * n} values "
                                 f"(4 per input), got {len(dims)}")
        shapes = [dims[4 * i:4 * i + 4] for i in range(n)]
    if shapes:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(param.input):
            layer.top.append(name)
            layer.input_param.shape.add().dim.extend(shapes[i])
        old_layers = list(param.layer)
        param.ClearField("layer")
        param.layer.add().CopyFrom(layer)
        for lp in old_layers:
            param.layer.add().CopyFrom(lp)
    else:
        log.info("net inputs %s have no input_shape/input_dim; dropped as Caffe does",
                 list(param.input))
    param.ClearField("input")
    param.ClearField("input_shape")
    param.ClearField("input_dim")
    return True


def upgrade_net(param, source="<net>"):
    """Upgrade ``param`` in place; returns it."""
    from . import upgrade_v1
    if upgrade_v1.net_is_v0(param):
        upgrade_v1.upgrade_v0_net(param)
        log.info("%s: upgraded V0 layer definitions to V1", source)
    if len(param.layers):
        upgrade_v1.upgrade_v1_net(param)
        log.info("%s: upgraded V1 'layers' to 'layer'", source)
    upgrade_net_input(param)
    # Caffe's UpgradeNetBatchNorm silently zeroes lr_mult on BatchNorm layers with three
    # param specs; minicaffe rejects a learned statistic instead (the layer names it), so a
    # solver can never be told to train the running averages.
    return param

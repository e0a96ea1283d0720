"""The legacy net-level ``input``/``input_shape``/``input_dim`` fields → an Input layer
(Caffe's UpgradeNetInput)."""
import logging

from ..errors import MiniCaffeError
from ..proto import caffe_pb2

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

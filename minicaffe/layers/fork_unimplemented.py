"""Layer types of Caffe's forks whose parameters parse but which minicaffe does not run.

Building one stops with an error that names the layer, rather than "unknown layer type".
"""
from ..errors import LayerError
from ..layer import Layer, register

_FORKS = {
    "AnnotatedData": "SSD (weiliu89/caffe)",
    "MultiBoxLoss": "SSD (weiliu89/caffe)",
    "DetectionEvaluate": "SSD (weiliu89/caffe)",
    "APL": "Learned-Activation-Functions (forestagostinelli)",
}


@register(*_FORKS)
class ForkOnlyLayer(Layer):
    def __init__(self, param):
        raise LayerError(f"{param.type} layer '{param.name}': the {param.type} layer of "
                         f"{_FORKS[param.type]} is not implemented in minicaffe "
                         "(its parameters parse)")

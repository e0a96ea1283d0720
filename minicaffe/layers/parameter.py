"""Parameter (parameter_param): no bottom; the top is a view of the layer's single parameter
blob of ``shape`` (zero-initialised, as in Caffe)."""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register, shape_text
from ..proto import caffe_pb2


@register("Parameter")
class ParameterLayer(Layer):
    """No bottom; one parameter blob of parameter_param.shape (zeros unless weights are
    loaded); the top is a view of its data. Backward accumulates the top's diff into the
    parameter's diff."""
    exact_num_bottom = 0
    exact_num_top = 1

    def _shape(self):
        return tuple(int(d) for d in self.layer_param.parameter_param.shape.dim)

    def layer_setup(self, bottom, top):
        if not self.blobs:
            self.blobs = [self.make_param_blob(self._shape(), caffe_pb2.FillerParameter())]

    def reshape(self, bottom, top):
        shape = self._shape()
        if self.blobs[0].count != int(np.prod(shape, dtype=np.int64)):
            self.fail(f"parameter blob shape {shape_text(self.blobs[0].shape)} does not match "
                      f"parameter_param.shape {shape_text(shape)}", ShapeError)
        top[0].reshape(shape)
        top[0].share_data(self.blobs[0])

    def forward(self, bottom, top):
        # Shared every pass: the net (weight sharing, copying weights) may replace the blob.
        top[0].share_data(self.blobs[0])

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down and self.param_propagate_down[0]:
            p = self.blobs[0]
            p.xdiff[...] += top[0].xdiff.reshape(p.shape)

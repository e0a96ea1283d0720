"""The base of the layers that bring data into the net, and those that read no files: Input,
DummyData and MemoryData.

MemoryData (memory_data_param batch_size/channels/height/width) serves arrays handed over
with ``reset(data, labels)`` (pycaffe: ``net.set_input_arrays``) batch by batch, wrapping
around. Tops: data (B, C, H, W) and labels, (B,) after setup and (B, 1, 1, 1) after each
forward, as in Caffe. No transformation is applied to the arrays (Caffe warns likewise).
"""
import logging

import numpy as np

from ..errors import LayerError, ShapeError
from ..fillers import filled_array
from ..layer import Layer, register, shape_text
from ..proto import caffe_pb2

log = logging.getLogger("minicaffe")


class DataSourceLayer(Layer):
    """A layer with no bottoms: nothing to back-propagate, and tops sized at setup or by
    forward (each batch's shape, as in Caffe), not by reshape."""
    exact_num_bottom = 0

    def reshape(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


def _shapes(n, shape_msgs, legacy=None):
    """One shape per top: a single shape applies to all tops (Caffe's rule)."""
    shapes = [tuple(s.dim) for s in shape_msgs]
    if legacy and not shapes:
        shapes = legacy
    if len(shapes) == 1:
        shapes = shapes * n
    return shapes


@register("Input")
class InputLayer(DataSourceLayer):
    """Tops whose shape comes from input_param and whose data the user writes."""
    min_num_top = 1

    def layer_setup(self, bottom, top):
        shapes = _shapes(len(top), self.layer_param.input_param.shape)
        if shapes and len(shapes) != len(top):
            self.fail(f"input_param has {len(self.layer_param.input_param.shape)} shapes for "
                      f"{len(top)} tops (give one, or one per top)")
        for t, s in zip(top, shapes):
            t.reshape(s)

    def forward(self, bottom, top):
        pass


@register("DummyData")
class DummyDataLayer(DataSourceLayer):
    """Tops filled by fillers (constant 0 by default); refilled each forward unless constant."""
    min_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        legacy = self._legacy_shapes(p, n)
        shapes = _shapes(n, p.shape, legacy)
        if len(shapes) != n:
            self.fail(f"Must specify 'shape' once, or once per top blob ({n}); specified "
                      f"{len(p.shape)}")
        fillers = list(p.data_filler) or [caffe_pb2.FillerParameter(type="constant", value=0)]
        if len(fillers) == 1:
            fillers = fillers * n
        if len(fillers) != n:
            self.fail(f"dummy_data_param gives {len(fillers)} data_fillers for {n} tops")
        self._fillers = fillers
        self._refill = [f.type != "constant" for f in fillers]
        for t, s, f in zip(top, shapes, fillers):
            t.reshape(s)
            t.xdata[...] = t.xp.asarray(filled_array(s, f))

    def _legacy_shapes(self, p, n):
        """The deprecated num/channels/height/width, each given once or once per top (Caffe's
        checks and wording); None when none is given."""
        fields = ("num", "channels", "height", "width")
        if not any(len(getattr(p, f)) for f in fields):
            return None
        if len(p.shape):
            self.fail("Both shape and legacy fields were specified")
        for f in fields:
            k = len(getattr(p, f))
            if k not in (1, n):
                self.fail(f"Must specify '{f}' once, or once per top blob ({n}); specified {k}")
        return [tuple(getattr(p, f)[0 if len(getattr(p, f)) == 1 else i] for f in fields)
                for i in range(n)]

    def forward(self, bottom, top):
        for t, f, refill in zip(top, self._fillers, self._refill):
            if refill:
                t.xdata[...] = t.xp.asarray(filled_array(t.shape, f))


@register("MemoryData")
class MemoryDataLayer(DataSourceLayer):
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)
        if self.batch_size * self.channels * self.height * self.width <= 0:
            self.fail("batch_size, channels, height, and width must be specified and positive "
                      "in memory_data_param")
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size)
        self._data = self._labels = None
        self.n = self.pos = 0

    def reset(self, data, labels):
        """Serve ``data`` (N, C, H, W) and ``labels`` (N, or N x 1 x 1 x 1) from the next
        forward on, ``batch_size`` items at a time: float32 C-contiguous NumPy arrays with N a
        multiple of batch_size (pycaffe's rules). The arrays are kept, not copied: changes
        made to them later show in the batches served after."""
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, None, None, None])
        for name, a, chw in (("data array", data, (self.channels, self.height, self.width)),
                             ("labels array", labels, (1, 1, 1))):
            if not isinstance(a, np.ndarray):
                self.fail(f"{name} must be a NumPy array, got {type(a).__name__}")
            if not a.flags.c_contiguous:
                self.fail(f"{name} must be C contiguous (np.ascontiguousarray)")
            if a.ndim != 4:
                self.fail(f"{name} must be 4-d, got shape {shape_text(a.shape)}", ShapeError)
            if a.dtype != np.float32:
                self.fail(f"{name} must be float32, got {a.dtype}")
            if tuple(a.shape[1:]) != chw:
                self.fail(f"{name} has shape {shape_text(a.shape)}; memory_data_param needs "
                          f"(N, {', '.join(str(s) for s in chw)})", ShapeError)
        if data.shape[0] != labels.shape[0]:
            self.fail(f"data and labels must have the same first dimension: data "
                      f"{shape_text(data.shape)}, labels {shape_text(labels.shape)}", ShapeError)
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            self.fail(f"first dimensions of input arrays must be a (positive) multiple of "
                      f"batch size {self.batch_size}, got {data.shape[0]}", ShapeError)
        if self.layer_param.HasField("transform_param"):
            log.warning("%s layer '%s' does not transform array data on reset()", self.type,
                        self.name)
        self._data, self._labels = data, labels
        self.n, self.pos = int(data.shape[0]), 0

    def forward(self, bottom, top):
        if self._data is None:
            self.fail("has no data: call net.set_input_arrays(data, labels) (Caffe's Reset) "
                      "before the forward pass", LayerError)
        b, pos = self.batch_size, self.pos
        top[0].reshape(b, self.channels, self.height, self.width)
        top[1].reshape(b, 1, 1, 1)
        for t, a in zip(top, (self._data, self._labels)):
            t.xdata[...] = t.xp.asarray(a[pos:pos + b])
        self.pos = (pos + b) % self.n

"""Layers that bring data into the net without reading files: Input and DummyData."""
from ..fillers import filled_array
from ..layer import Layer, register
from ..proto import caffe_pb2


def _shapes(n, shape_msgs, legacy=None):
    """One shape per top: a single shape applies to all tops (Caffe's rule)."""
    shapes = [tuple(s.dim) for s in shape_msgs]
    if legacy and not shapes:
        shapes = legacy
    if len(shapes) == 1:
        shapes = shapes * n
    return shapes


@register("Input")
class InputLayer(Layer):
    """Tops whose shape comes from input_param and whose data the user writes."""
    exact_num_bottom = 0
    min_num_top = 1

    def layer_setup(self, bottom, top):
        shapes = _shapes(len(top), self.layer_param.input_param.shape)
        if shapes and len(shapes) != len(top):
            self.fail(f"input_param has {len(self.layer_param.input_param.shape)} shapes for "
                      f"{len(top)} tops (give one, or one per top)")
        for t, s in zip(top, shapes):
            t.reshape(s)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register("DummyData")
class DummyDataLayer(Layer):
    """Tops filled by fillers (constant 0 by default); refilled each forward unless constant."""
    exact_num_bottom = 0
    min_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.dummy_data_param
        n = len(top)
        legacy = None
        if len(p.num):
            legacy = [(p.num[i], p.channels[i], p.height[i], p.width[i]) for i in range(len(p.num))]
        shapes = _shapes(n, p.shape, legacy)
        if len(shapes) != n:
            self.fail(f"dummy_data_param gives {len(shapes)} shapes for {n} tops")
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

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for t, f, refill in zip(top, self._fillers, self._refill):
            if refill:
                t.xdata[...] = t.xp.asarray(filled_array(t.shape, f))

    def backward(self, top, propagate_down, bottom):
        pass

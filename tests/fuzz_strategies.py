"""Hypothesis strategies for fuzzing the loaders: random prototxt text, mutated nets and
solvers, mutated binary files; and the seed nets they start from (one small net per layer
type that needs no input file)."""
import math

from google.protobuf import descriptor as _fd
from google.protobuf import text_format
from hypothesis import strategies as st

import minicaffe
from minicaffe.proto import caffe_pb2

F = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 }'

# (layer text without name/bottom/top, bottom shapes, number of tops). Together they cover
# every registered layer type but those that read files (Data, ImageData, HDF5*, WindowData)
# or import user code (Python).
SEED_LAYERS = [
    ('type: "AbsVal"', [(2, 3, 4)], 1),
    ('type: "Accuracy" accuracy_param { top_k: 2 }', [(6, 5), (6,)], 1),
    ('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [(4, 7)], 1),
    ('type: "BNLL"', [(2, 3)], 1),
    ('type: "BatchNorm"', [(4, 3, 5, 6)], 1),
    ('type: "BatchReindex"', [(5, 3, 2), (7,)], 1),
    ('type: "Bias" bias_param { axis: 0 num_axes: 2 }', [(3, 4, 5), (3, 4)], 1),
    ('type: "Clip" clip_param { min: -0.5 max: 0.7 }', [(3, 4)], 1),
    ('type: "Concat" concat_param { axis: 1 }', [(2, 3, 4), (2, 5, 4)], 1),
    ('type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }', [(6, 4), (6, 4), (6,)], 1),
    (f'type: "Convolution" convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 '
     f'dilation: 2 group: 2 pad: 2 {F} }}', [(2, 4, 9, 8)], 1),
    ('type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }', [(2, 3, 6, 7), (2, 3, 3, 4)], 1),
    (f'type: "Deconvolution" convolution_param {{ num_output: 3 kernel_size: 3 stride: 2 '
     f'pad: 1 {F} }}', [(2, 4, 4, 5)], 1),
    ('type: "DetectionOutput" detection_output_param { num_classes: 3 '
     'nms_param { nms_threshold: 0.45 top_k: 4 } keep_top_k: 5 confidence_threshold: 0.1 }',
     [(2, 16), (2, 12), (1, 2, 16)], 1),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', [(3, 4)], 1),
    ('type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } '
     'data_filler { type: "uniform" min: -1 max: 1 } }', [], 1),
    ('type: "ELU" elu_param { alpha: 0.7 }', [(3, 4)], 1),
    ('type: "Eltwise" eltwise_param { operation: SUM coeff: 2 coeff: -1 }', [(3, 4), (3, 4)], 1),
    (f'type: "Embed" embed_param {{ num_output: 4 input_dim: 6 {F} }}', [(5,)], 1),
    ('type: "EuclideanLoss"', [(4, 3, 2), (4, 6)], 1),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', [(3, 4)], 1),
    ('type: "Filter"', [(6, 3, 2), (6, 1)], 1),
    ('type: "Flatten" flatten_param { axis: 1 end_axis: -1 }', [(2, 3, 4, 5)], 1),
    ('type: "HingeLoss" hinge_loss_param { norm: L2 }', [(6, 4), (6,)], 1),
    ('type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 3 dilation: 2 }',
     [(2, 2, 6, 7)], 1),
    ('type: "InfogainLoss"', [(5, 4), (5,), (4, 4)], 1),
    (f'type: "InnerProduct" inner_product_param {{ num_output: 3 transpose: true axis: 2 {F} }}',
     [(2, 3, 5)], 1),
    ('type: "Input" input_param { shape { dim: 2 dim: 3 } }', [], 1),
    (f'type: "LSTM" recurrent_param {{ num_output: 3 {F} }}', [(4, 3, 2), (4, 3)], 1),
    ('type: "LSTMUnit"', [(1, 3, 4), (1, 3, 16), (1, 3)], 2),
    ('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }', [(2, 6, 4, 5)], 1),
    ('type: "LRN" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }', [(2, 3, 5, 5)], 1),
    ('type: "Log" log_param { base: 3 scale: 2 shift: 1.5 }', [(3, 4)], 1),
    ('type: "MVN" mvn_param { across_channels: true }', [(3, 4, 5, 2)], 1),
    ('type: "MemoryData" memory_data_param { batch_size: 2 channels: 3 height: 4 width: 5 }',
     [], 2),
    ('type: "MultinomialLogisticLoss"', [(6, 4), (6,)], 1),
    ('type: "Normalize" norm_param { across_spatial: false channel_shared: false }',
     [(2, 3, 4, 5)], 1),
    ('type: "PReLU" prelu_param { filler { type: "constant" value: 0.25 } }', [(2, 3, 4)], 1),
    ('type: "Parameter" parameter_param { shape { dim: 3 dim: 4 } }', [], 1),
    ('type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }', [(2, 3, 4, 5)], 1),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }',
     [(2, 3, 9, 8)], 2),
    ('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [(2, 3, 5, 4)], 1),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', [(3, 4)], 1),
    ('type: "PriorBox" prior_box_param { min_size: 4 max_size: 9 aspect_ratio: 2 flip: true '
     'clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }',
     [(1, 2, 3, 3), (1, 3, 12, 12)], 1),
    (f'type: "RNN" recurrent_param {{ num_output: 3 {F} }}', [(4, 3, 2), (4, 3)], 1),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', [(3, 4)], 1),
    ('type: "Reduction" reduction_param { operation: SUMSQ axis: 1 coeff: 2 }', [(3, 4, 5)], 1),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [(2, 3, 4)], 1),
    ('type: "SPP" spp_param { pyramid_height: 2 pool: AVE }', [(2, 3, 7, 5)], 1),
    ('type: "Scale" scale_param { axis: 1 num_axes: 1 bias_term: true }', [(3, 4, 5)], 1),
    ('type: "Sigmoid"', [(3, 4)], 1),
    ('type: "SigmoidCrossEntropyLoss"', [(4, 5), (4, 5)], 1),
    ('type: "Silence"', [(3, 4)], 0),
    ('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 3 }', [(2, 5, 3)], 3),
    ('type: "Softmax" softmax_param { axis: 1 }', [(3, 5, 2)], 1),
    ('type: "SoftmaxWithLoss" loss_param { ignore_label: 2 normalization: VALID }',
     [(3, 4, 2, 3), (3, 1, 2, 3)], 1),
    ('type: "Split"', [(3, 4)], 3),
    ('type: "Swish" swish_param { beta: 1.5 }', [(3, 4)], 1),
    ('type: "TanH"', [(3, 4)], 1),
    ('type: "Threshold" threshold_param { threshold: 0.2 }', [(3, 4)], 1),
    ('type: "Tile" tile_param { axis: 1 tiles: 3 }', [(2, 3, 4)], 1),
]


def seed_net(index):
    """Seed net ``index``: an Input layer giving the bottoms, then the layer under test."""
    text, shapes, num_top = SEED_LAYERS[index]
    lines = ['name: "seed"']
    if shapes:
        tops = " ".join(f'top: "b{i}"' for i in range(len(shapes)))
        dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
        lines.append(f'layer {{ name: "in" type: "Input" {tops} input_param {{ {dims} }} }}')
    bottoms = " ".join(f'bottom: "b{i}"' for i in range(len(shapes)))
    tops = " ".join(f'top: "t{i}"' for i in range(num_top))
    lines.append(f'layer {{ name: "l" {text} {bottoms} {tops} }}')
    return "\n".join(lines)


SEED_SOLVER = """
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" gamma: 0.1 stepsize: 2
max_iter: 3 display: 1 average_loss: 2 iter_size: 1 type: "SGD" random_seed: 3
net_param {
  name: "tiny"
  layer { name: "d" type: "DummyData" top: "x" top: "y"
    dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 }
      data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
    inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }
}
"""

# -- numbers that break things -----------------------------------------------------------------
INTERESTING = [0, 1, -1, 2, 3, 7, -2, 2 ** 31 - 1, -2 ** 31, 2 ** 32 - 1, 2 ** 63 - 1, 10 ** 12,
               10 ** 6, 65536]
INTERESTING_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, -1e30, 1e300, math.inf,
                      -math.inf, math.nan, 3.0, -7.5]


def _fits(field, value):
    bounds = {
        _fd.FieldDescriptor.CPPTYPE_INT32: (-2 ** 31, 2 ** 31 - 1),
        _fd.FieldDescriptor.CPPTYPE_UINT32: (0, 2 ** 32 - 1),
        _fd.FieldDescriptor.CPPTYPE_INT64: (-2 ** 63, 2 ** 63 - 1),
        _fd.FieldDescriptor.CPPTYPE_UINT64: (0, 2 ** 64 - 1),
    }
    lo, hi = bounds[field.cpp_type]
    return max(lo, min(hi, value))


_INT_TYPES = (_fd.FieldDescriptor.CPPTYPE_INT32, _fd.FieldDescriptor.CPPTYPE_UINT32,
              _fd.FieldDescriptor.CPPTYPE_INT64, _fd.FieldDescriptor.CPPTYPE_UINT64)
_FLOAT_TYPES = (_fd.FieldDescriptor.CPPTYPE_FLOAT, _fd.FieldDescriptor.CPPTYPE_DOUBLE)


def _set_fields(msg):
    """Every (message, field, index or None) set in ``msg``, nested messages included."""
    out = []
    for field, value in msg.ListFields():
        repeated = field.is_repeated
        items = list(enumerate(value)) if repeated else [(None, value)]
        for i, v in items:
            out.append((msg, field, i))
            if field.cpp_type == _fd.FieldDescriptor.CPPTYPE_MESSAGE:
                out.extend(_set_fields(v))
    return out


def _assign(msg, field, index, value):
    if index is None:
        setattr(msg, field.name, value)
    else:
        getattr(msg, field.name)[index] = value


def _new_value(draw, field):
    """A replacement for a scalar field's value, or None when the field is a message."""
    ct = field.cpp_type
    if ct in _INT_TYPES:
        v = draw(st.sampled_from(INTERESTING) | st.integers(-20, 20))
        return _fits(field, v)
    if ct in _FLOAT_TYPES:
        return draw(st.sampled_from(INTERESTING_FLOATS) | st.floats(-100, 100))
    if ct == _fd.FieldDescriptor.CPPTYPE_BOOL:
        return draw(st.booleans())
    if ct == _fd.FieldDescriptor.CPPTYPE_ENUM:
        return draw(st.sampled_from([v.number for v in field.enum_type.values]))
    if ct == _fd.FieldDescriptor.CPPTYPE_STRING:
        if field.name == "type":
            return draw(st.sampled_from(minicaffe.layer_types() + ["", "Nope", "relu"]))
        return draw(st.sampled_from(["", "x", "b0", "b1", "t0", "data", "l", "in"]))
    return None


_WIRING = {"name", "bottom", "top", "type"}


def _settable(desc):
    """The scalar (non-message) fields of message type ``desc``."""
    return [f for f in desc.fields if f.cpp_type != _fd.FieldDescriptor.CPPTYPE_MESSAGE]


def _set_param(draw, net):
    """Set one scalar field (set or not yet) of a layer's *_param message, or of a message
    nested in it (a shape, a filler), to a value that breaks things."""
    if not len(net.layer):
        return
    lp = net.layer[draw(st.integers(0, len(net.layer) - 1))]
    own = [f for f, _ in lp.ListFields() if f.cpp_type == _fd.FieldDescriptor.CPPTYPE_MESSAGE
           and f.name.endswith("_param")]
    extra = ["loss_param", "convolution_param", "pooling_param", "inner_product_param"]
    name = draw(st.sampled_from([f.name for f in own] * 3 + extra))
    msg = getattr(lp, name)
    nested = [f for f, _ in msg.ListFields() if f.cpp_type == _fd.FieldDescriptor.CPPTYPE_MESSAGE]
    if nested and draw(st.booleans()):
        f = draw(st.sampled_from(nested))
        msg = getattr(msg, f.name)
        if f.is_repeated:
            msg = msg[draw(st.integers(0, len(msg) - 1))]
    fields = _settable(msg.DESCRIPTOR)
    if not fields:
        return
    field = draw(st.sampled_from(fields))
    value = _new_value(draw, field)
    if field.is_repeated:
        items = getattr(msg, field.name)
        if len(items) and draw(st.booleans()):
            items[draw(st.integers(0, len(items) - 1))] = value
        else:
            items.append(value)
    else:
        setattr(msg, field.name, value)


def _mutate_once(draw, net):
    """One random edit of ``net`` in place (which edit is drawn)."""
    fields = [x for x in _set_fields(net) if x[1].name not in _WIRING]
    ops = ["number", "drop", "duplicate"]
    if isinstance(net, caffe_pb2.NetParameter):
        ops += ["param"] * 6 + ["layer", "bottom", "type"]
    op = draw(st.sampled_from(ops))
    if op == "param":
        _set_param(draw, net)
    elif op in ("number", "drop", "duplicate") and fields:
        msg, field, index = draw(st.sampled_from(fields))
        if op == "number":
            value = _new_value(draw, field)
            if value is not None:
                _assign(msg, field, index, value)
        elif op == "drop":
            if index is None:
                msg.ClearField(field.name)
            else:
                del getattr(msg, field.name)[index]
        elif index is not None:
            items = getattr(msg, field.name)
            if field.cpp_type == _fd.FieldDescriptor.CPPTYPE_MESSAGE:
                items.add().CopyFrom(items[index])
            else:
                items.append(items[index])
    elif op == "layer" and len(net.layer):
        i = draw(st.integers(0, len(net.layer) - 1))
        if draw(st.booleans()):
            del net.layer[i]
        else:
            net.layer.add().CopyFrom(net.layer[i])
    elif op == "bottom" and len(net.layer):
        lp = net.layer[draw(st.integers(0, len(net.layer) - 1))]
        names = [n for layer in net.layer for n in layer.top] + ["nowhere"]
        if len(lp.bottom):
            lp.bottom[draw(st.integers(0, len(lp.bottom) - 1))] = draw(st.sampled_from(names))
        else:
            lp.bottom.append(draw(st.sampled_from(names)))
    elif op == "type" and len(net.layer):
        lp = net.layer[draw(st.integers(0, len(net.layer) - 1))]
        lp.type = draw(st.sampled_from(minicaffe.layer_types()))


@st.composite
def mutated(draw, base, max_edits=3):
    """A copy of message ``base`` with one to ``max_edits`` random edits."""
    msg = type(base)()
    msg.CopyFrom(base)
    for _ in range(draw(st.integers(1, max_edits))):
        _mutate_once(draw, msg.net_param if isinstance(msg, caffe_pb2.SolverParameter)
                     and draw(st.booleans()) else msg)
    return msg


@st.composite
def huge_shapes(draw, base):
    """A copy of net ``base`` with one shape-like number (a dim, num_output, a count) set huge
    or non-positive."""
    msg = type(base)()
    msg.CopyFrom(base)
    fields = [(m, f, i) for m, f, i in _set_fields(msg)
              if f.cpp_type in _INT_TYPES and f.name in ("dim", "num_output", "input_dim",
                                                          "batch_size", "channels", "height",
                                                          "width", "tiles", "axis")]
    if fields:
        m, f, i = draw(st.sampled_from(fields))
        value = draw(st.sampled_from([0, -1, -5, 10 ** 5, 10 ** 6, 10 ** 9, 2 ** 31 - 1,
                                      10 ** 12]))
        _assign(m, f, i, _fits(f, value))
    return msg


# -- random prototxt text --------------------------------------------------------------------
def _field_names(desc, seen=None):
    seen = set() if seen is None else seen
    if desc.full_name in seen:
        return set()
    seen.add(desc.full_name)
    names = set()
    for f in desc.fields:
        names.add(f.name)
        if f.message_type is not None:
            names |= _field_names(f.message_type, seen)
        if f.enum_type is not None:
            names |= {v.name for v in f.enum_type.values}
    return names


FIELD_NAMES = sorted(_field_names(caffe_pb2.NetParameter.DESCRIPTOR) |
                     _field_names(caffe_pb2.SolverParameter.DESCRIPTOR))

_token = st.one_of(
    st.sampled_from(FIELD_NAMES),
    st.sampled_from([":", "{", "}", "<", ">", "[", "]", ",", ";", "\n", "#", "-", '"'] * 3),
    st.sampled_from([str(v) for v in INTERESTING] + ["nan", "inf", "-inf", "1e999", "0x7f",
                                                    "1.5e-3", "-0"]),
    st.sampled_from(['"' + t + '"' for t in minicaffe.layer_types()[:20]] + ['"\\x00"', '""']),
    st.text(max_size=6),
)

prototxt_text = st.lists(_token, max_size=60).map(" ".join)


def net_from_text(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def solver_from_text(text):
    return text_format.Parse(text, caffe_pb2.SolverParameter())


# -- binary files ----------------------------------------------------------------------------
@st.composite
def damaged_bytes(draw, original):
    """``original`` truncated, with bits flipped, or replaced by random bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "flip", "random", "splice"]))
    data = bytearray(original)
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, max(len(data) - 1, 0)))])
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "splice":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at]) + draw(st.binary(min_size=1, max_size=12)) + bytes(data[at:])
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)

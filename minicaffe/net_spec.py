"""Nets written in Python, pycaffe's ``caffe.NetSpec`` / ``caffe.layers`` / ``caffe.params``.

    from minicaffe import layers as L, params as P
    n = minicaffe.NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=64, ntop=2)
    n.conv1 = L.Convolution(n.data, num_output=20, kernel_size=5,
                            weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    print(n.to_proto())

Rules, as pycaffe's net_spec:

* ``L.<Type>(*bottoms, **kwargs)`` describes one layer of that type. A keyword ending in
  ``param`` (``param=``, ``transform_param=``, ``convolution_param=``) is a LayerParameter
  field; any other keyword goes into the type's own parameter message when that message has
  the field (``num_output=`` on a Convolution → ``convolution_param``), else into the
  LayerParameter (``include=``, ``loss_weight=``, ``name=``). No field name is shared between
  LayerParameter and a ``*_param`` message, so the order of the two lookups never matters.
* Values: a dict fills a message, a list fills a repeated field (a list of dicts adds one
  message per dict), a scalar given for a repeated field becomes a one-element list.
* ``ntop=k`` gives k tops (returned as a tuple; ``ntop=0`` returns the layer itself),
  ``in_place=True`` makes the tops the bottoms' names.
* Names: a layer is named after its first top; a top is named after the NetSpec attribute it
  was assigned to, or ``<Type><k>`` when it was never assigned.

Beyond pycaffe: tuples work like lists, enum values may be given by name
(``pool="MAX"``), a protobuf message may be given for a message field, ``Deconvolution``
keywords go to ``convolution_param`` and ``LSTM``/``RNN`` keywords to ``recurrent_param``,
and a keyword that fits nowhere raises an error naming the layer type and the keyword.
"""
import sys
from collections import Counter, OrderedDict

from google.protobuf.descriptor import FieldDescriptor

from .errors import MiniCaffeError
from .proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "Layers", "Parameters", "layers", "params",
           "to_proto", "param_name_dict", "assign_proto", "NetSpecError"]


class NetSpecError(MiniCaffeError, AttributeError):
    """A keyword that is no field of the layer, or a value of the wrong kind."""


def param_name_dict():
    """Layer type name → prefix of its ``*_param`` field, from LayerParameter's own fields.

    ``convolution_param`` holds a ``ConvolutionParameter``, so type "Convolution" maps to
    "convolution"; the type name is the message name without its ``Parameter`` suffix.
    """
    out = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            msg = field.message_type.name
            if msg.endswith("Parameter"):
                out[msg[:-len("Parameter")]] = field.name[:-len("_param")]
    return out


_param_names = param_name_dict()
# Types that use another type's parameter message (not in pycaffe's table).
_param_names.setdefault("Deconvolution", "convolution")
_param_names.setdefault("LSTM", "recurrent")
_param_names.setdefault("RNN", "recurrent")


# -- assigning Python values to protobuf fields ------------------------------------------------
def _field(proto, name):
    return proto.DESCRIPTOR.fields_by_name.get(name)


def _is_repeated(fd):
    # ``label`` is deprecated in newer protobuf releases in favour of ``is_repeated``.
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return rep() if callable(rep) else bool(rep)
    return fd.label == FieldDescriptor.LABEL_REPEATED


def _enum_value(fd, val, where):
    if fd.type == FieldDescriptor.TYPE_ENUM and isinstance(val, str):
        ev = fd.enum_type.values_by_name.get(val)
        if ev is None:
            names = ", ".join(v.name for v in fd.enum_type.values)
            raise NetSpecError(f"{where}: '{val}' is not a value of {fd.name} ({names})")
        return ev.number
    return val


def _fill_message(msg, val, where):
    if isinstance(val, dict):
        for k, v in val.items():
            assign_proto(msg, k, v, where)
    elif hasattr(val, "DESCRIPTOR") and hasattr(val, "SerializeToString"):
        if val.DESCRIPTOR.full_name != msg.DESCRIPTOR.full_name:
            raise NetSpecError(f"{where}: a {val.DESCRIPTOR.name} given where a "
                               f"{msg.DESCRIPTOR.name} is expected")
        msg.CopyFrom(val)
    else:
        raise NetSpecError(f"{where}: a {msg.DESCRIPTOR.name} message needs a dict, "
                           f"got {type(val).__name__} {val!r}")


def assign_proto(proto, name, val, where=None):
    """Assign a Python value to field ``name`` of ``proto``, recursively (pycaffe's rule).

    dict → message, list → repeated field (list of dicts → repeated message), a scalar for a
    repeated field → one-element list, anything else → plain assignment.
    """
    where = where or proto.DESCRIPTOR.name
    fd = _field(proto, name)
    if fd is None:
        raise NetSpecError(f"{where}: {proto.DESCRIPTOR.name} has no field '{name}'")
    here = f"{where}.{name}"
    is_message = fd.type == FieldDescriptor.TYPE_MESSAGE
    if _is_repeated(fd):
        items = list(val) if isinstance(val, (list, tuple)) else [val]
        container = getattr(proto, name)
        for item in items:
            if is_message:
                _fill_message(container.add(), item, here)
            else:
                container.append(_enum_value(fd, item, here))
        return
    if is_message:
        _fill_message(getattr(proto, name), val, here)
        return
    if isinstance(val, (list, tuple)):
        raise NetSpecError(f"{here} is a single value, got a {type(val).__name__} {val!r}")
    try:
        setattr(proto, name, _enum_value(fd, val, here))
    except (TypeError, ValueError) as e:
        raise NetSpecError(f"{here}: cannot assign {val!r} ({e})") from None


# -- the graph: Tops produced by Functions (layers) ---------------------------------------------
class Top:
    """One output blob of a layer (``n``-th top of Function ``fn``)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top (automatic names)."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def _update(self, params):
        self.fn._update(params)

    def __repr__(self):
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """A layer: its type, its bottom Tops and its keyword parameters."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise NetSpecError(
                    f"L.{type_name}: bottom {i} is a {type(inp).__name__}, not a Top (pass "
                    "the result of another L.<Type>(...) call; parameters go as keywords)")
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _update(self, params):
        self.params.update(params)

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        where = f"{self.type_name} layer '{layer.name}'"
        prefix = _param_names.get(self.type_name)
        for k, v in self.params.items():
            if k.endswith("param") or _field(layer, k) is not None:
                assign_proto(layer, k, v, where)
            elif prefix is not None and _field(getattr(layer, prefix + "_param"), k) is not None:
                assign_proto(getattr(layer, prefix + "_param"), k, v,
                             f"{where}: {prefix}_param")
            else:
                own = f" nor a field of {prefix}_param" if prefix else \
                    f" (type '{self.type_name}' has no *_param message of its own)"
                raise NetSpecError(f"{where}: '{k}' is not a LayerParameter field{own}")
        layers[self] = layer


class NetSpec:
    """Tops assigned as attributes (or items); ``to_proto()`` builds the NetParameter.

    The attribute name becomes the top's name (and the name of the layer whose first top it
    is). Layers appear in the order their tops were assigned, each after its inputs.
    """

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named '{name}'") from None

    def __setitem__(self, name, value):
        self.tops[name] = value

    def __getitem__(self, name):
        return self.tops[name]

    def __delitem__(self, name):
        del self.tops[name]

    def __contains__(self, name):
        return name in self.tops

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def update(self, name, params):
        self.tops[name]._update(params)

    def to_proto(self):
        names = {v: k for k, v in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops):
    """A NetParameter with every layer needed to compute ``tops`` (automatic names)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


def proto_text(net):
    """The prototxt text of a NetParameter: ``str(n.to_proto())`` (integral floats as "1")."""
    return str(net)


class Layers:
    """``L``: ``L.Convolution(bottom, kernel_size=3)`` describes a layer of that type.

    It stands in for the name ``minicaffe.layers``, which is also the package of layer
    implementations: lower-case names that are modules or attributes of that package
    (``minicaffe.layers.data``) still resolve to them.
    """

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if not name[:1].isupper():
            pkg = sys.modules.get(__package__ + ".layers")
            if pkg is not None and hasattr(pkg, name):
                return getattr(pkg, name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        layer_fn.__name__ = name
        layer_fn.__qualname__ = f"layers.{name}"
        return layer_fn

    def __repr__(self):
        return "<minicaffe.layers: L.<Type>(*bottoms, **params) describes a layer>"


class Parameters:
    """``P``: ``P.Pooling.MAX`` is PoolingParameter's MAX, ``P.Data.LMDB`` DataParameter's."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        msg = getattr(caffe_pb2, name + "Parameter", None)
        if msg is None:
            raise AttributeError(f"params.{name}: caffe_pb2 has no {name}Parameter")

        class Param:
            def __getattr__(self, value_name):
                if value_name.startswith("_"):
                    raise AttributeError(value_name)
                try:
                    return getattr(msg, value_name)
                except AttributeError:
                    raise AttributeError(f"{name}Parameter has no value or field "
                                         f"'{value_name}'") from None

            def __repr__(self):
                return f"<params.{name}>"
        return Param()

    def __repr__(self):
        return "<minicaffe.params: P.<Type>.<ENUM_VALUE>>"


layers = Layers()
params = Parameters()

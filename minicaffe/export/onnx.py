"""ONNX export: a Caffe net (prototxt + caffemodel) as an ONNX model computing its TEST forward.

The net is built with minicaffe in TEST phase, so shapes are those the prototxt fixes; each
layer becomes one or a few ONNX nodes (``onnx_layers.CONVERTERS``) with its weights as
initializers. Caffe's in-place layers rewrite a blob; ONNX tensors are written once, so a
blob's earlier versions get the name ``blob__layer`` and only its last version keeps the
Caffe name, so graph inputs and outputs carry the Caffe blob names (except an input blob
rewritten in place: the input keeps the name, the output is ``blob__layer``).

Needs the ``onnx`` package (``pip install minicaffe[onnx]``).
"""
import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2

DEFAULT_OPSET = 13


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MiniCaffeError("ONNX export needs the onnx package: pip install "
                             "minicaffe[onnx]") from None
    return onnx


class GraphBuilder:
    """Collects nodes and initializers, handing out unique tensor and node names."""

    def __init__(self, reserved=()):
        self.nodes, self.initializers = [], []
        self._taken = set(reserved)
        self._node_names = set()

    def fresh(self, hint):
        name, k = hint, 1
        while name in self._taken:
            name, k = f"{hint}_{k}", k + 1
        self._taken.add(name)
        return name

    def const(self, hint, array, dtype=np.float32):
        from onnx import numpy_helper
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def ints(self, hint, values):
        return self.const(hint, list(values), np.int64)

    def op(self, op_type, inputs, hint, out=None, num_out=1, **attrs):
        """Add a node; returns its output name (a list when ``num_out`` > 1)."""
        from onnx import helper
        outs = list(out) if isinstance(out, (list, tuple)) else \
            [out or self.fresh(hint)] if num_out == 1 else \
            [self.fresh(f"{hint}_{k}") for k in range(num_out)]
        node_name, k = f"{hint}/{op_type}", 1
        while node_name in self._node_names:
            node_name, k = f"{hint}/{op_type}_{k}", k + 1
        self._node_names.add(node_name)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        return outs[0] if len(outs) == 1 else outs


class LayerContext:
    """What a converter sees of one layer: its ONNX tensor names, shapes and weights."""

    def __init__(self, graph, lp, layer, bottoms, tops, bottom_shapes, top_shapes):
        self.g = graph
        self.lp = lp
        self.layer = layer
        self.bottoms, self.tops = bottoms, tops
        self.bottom_shapes, self.top_shapes = bottom_shapes, top_shapes
        self.params = [np.asarray(b.data, dtype=np.float32) for b in layer.blobs]
        self.consumers = {}   # filled by the exporter: tensor name -> number of readers
        self.next = None      # the following layer's context (for folding)

    @property
    def name(self):
        return self.lp.name

    def fail(self, message):
        raise MiniCaffeError(f"ONNX export: layer '{self.lp.name}' (type {self.lp.type}): "
                             f"{message}")


def _tensor_names(param):
    """Per layer, the ONNX names of its bottoms and tops (SSA renaming of in-place blobs)."""
    last = {}
    for i, lp in enumerate(param.layer):
        for t in lp.top:
            # graph inputs keep the Caffe name, even when a layer later rewrites them in place
            if not (t in last and param.layer[last[t]].type == "Input"):
                last[t] = i
    current, names = {}, []
    for i, lp in enumerate(param.layer):
        bottoms = [current[b] for b in lp.bottom]
        tops = []
        for t in lp.top:
            current[t] = t if last[t] == i else f"{t}__{lp.name}"
            tops.append(current[t])
        names.append((bottoms, tops))
    return names


def build_model(net, opset=DEFAULT_OPSET, graph_name=None):
    """The onnx.ModelProto of a minicaffe Net (built in TEST phase)."""
    onnx = _onnx()
    from onnx import TensorProto, helper
    from .onnx_layers import CONVERTERS
    param = net.param
    names = _tensor_names(param)
    graph = GraphBuilder(reserved=[t for _, tops in names for t in tops])
    contexts = []
    for lp, layer, (bottoms, tops) in zip(param.layer, net.layers, names):
        contexts.append(LayerContext(graph, lp, layer, bottoms, tops,
                                     [tuple(net.blobs[b].shape) for b in lp.bottom],
                                     [tuple(net.blobs[t].shape) for t in lp.top]))
    consumers = {}
    for c in contexts:
        for b in c.bottoms:
            consumers[b] = consumers.get(b, 0) + 1
    for c, nxt in zip(contexts, contexts[1:] + [None]):
        c.consumers, c.next = consumers, nxt

    def value_info(tensor, blob):
        return helper.make_tensor_value_info(tensor, TensorProto.FLOAT,
                                             [int(s) for s in net.blobs[blob].shape])
    inputs = []
    skip = 0
    for c in contexts:
        if skip:
            skip -= 1
            continue
        if c.lp.type == "Input":
            inputs += [value_info(t, b) for t, b in zip(c.tops, c.lp.top)]
            continue
        convert = CONVERTERS.get(c.lp.type)
        if convert is None:
            c.fail("no ONNX equivalent in the exporter (supported types: "
                   f"{', '.join(sorted(CONVERTERS))}, Input)")
        skip = convert(c) or 0
    final = {b: t for c in contexts for b, t in zip(c.lp.top, c.tops)}
    outputs = [value_info(final[name], name) for name in net.outputs]
    g = helper.make_graph(graph.nodes, graph_name or net.name or "minicaffe", inputs, outputs,
                          graph.initializers)
    model = helper.make_model(g, producer_name="minicaffe",
                              opset_imports=[helper.make_opsetid("", int(opset))])
    onnx.checker.check_model(model)
    return model


def export_onnx(model_path, weights_path, out_path, opset=DEFAULT_OPSET):
    """Write the ONNX model of ``model_path`` (prototxt) with ``weights_path`` (.caffemodel,
    or None for the fillers' weights) to ``out_path``; returns the onnx.ModelProto."""
    from ..net import Net
    onnx = _onnx()
    net = Net(model_path, caffe_pb2.TEST, weights=weights_path)
    model = build_model(net, opset)
    onnx.save(model, out_path)
    return model


def main_export_onnx(argv=None, prog="minicaffe export onnx"):
    """``minicaffe export onnx --model M [--weights W] --out F [--opset N]``."""
    import argparse
    ap = argparse.ArgumentParser(prog=prog, description="Write a Caffe net (TEST phase) as an "
                                 "ONNX model (needs: pip install -e '.[onnx]').")
    ap.add_argument("--model", required=True, help="deploy prototxt")
    ap.add_argument("--weights", default=None,
                    help=".caffemodel (left out: the prototxt's fillers' weights)")
    ap.add_argument("--out", required=True, help="the .onnx file to write")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = ap.parse_args(argv)
    model = export_onnx(args.model, args.weights, args.out, args.opset)
    print(f"wrote {args.out} ({len(model.graph.node)} ONNX nodes, opset {args.opset})")
    return 0

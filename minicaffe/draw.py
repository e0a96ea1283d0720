"""Draw a net (prototxt) as a graph, as Caffe's ``python/draw_net.py`` does.

    minicaffe draw models/cifar10_bn/train_val.prototxt net.png --rankdir TB --phase TEST

Layers are boxes coloured by type (Convolution/Deconvolution red, Pooling orange,
InnerProduct purple, others blue); blobs are grey octagons; a layer that works in place
(one bottom, one top, the same blob) is a green box with an edge from and back to its blob.
Edges out of Data/Convolution/InnerProduct layers carry the batch size / num_output.

The picture is made by graphviz's ``dot`` program (Debian/Ubuntu: ``apt-get install
graphviz``; macOS: ``brew install graphviz``). Without it the graph is written as ``.dot``
text, which ``dot -Tpng net.dot -o net.png`` renders anywhere graphviz is installed. An
output name ending in ``.dot``/``.gv``/``.raw`` always gets the text.
"""
import argparse
import os
import shutil
import subprocess
import sys

from .errors import MiniCaffeError
from .proto import caffe_pb2

LAYER_COLOR_DEFAULT = "#6495ED"
NEURON_LAYER_COLOR = "#90EE90"     # in-place layers
BLOB_COLOR = "#E0E0E0"
TYPE_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
               "InnerProduct": "#CC33FF"}
TEXT_EXTS = (".dot", ".gv", ".raw")


def choose_color_by_layertype(layer_type):
    return TYPE_COLORS.get(layer_type, LAYER_COLOR_DEFAULT)


def _first(repeated, default):
    return repeated[0] if len(repeated) else default


def get_edge_label(layer):
    """Label of the edges out of a layer: batch size for Data, num_output for conv/ip."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def get_layer_lr_mult(layer):
    """(weight lr_mult, bias lr_mult) of a layer: 1 where not given, 0 for a missing bias."""
    lr = [1.0, 1.0]
    if layer.type in ("Convolution", "Deconvolution"):
        bias = layer.convolution_param.bias_term
    elif layer.type == "InnerProduct":
        bias = layer.inner_product_param.bias_term
    else:
        bias = True
    if not bias:
        lr[1] = 0.0
    for i, spec in enumerate(layer.param[:2]):
        lr[i] = spec.lr_mult
    return lr


def get_layer_label(layer, rankdir, display_lrm=False):
    """Text of a layer's box: name, type and, for conv/pooling, kernel, stride and pad."""
    sep = " " if rankdir in ("TB", "BT") else "\n"
    parts = [layer.name]
    if layer.type in ("Convolution", "Deconvolution"):
        cp = layer.convolution_param
        parts.append(f"({layer.type})")
        kernel = cp.kernel_h if cp.HasField("kernel_h") else _first(cp.kernel_size, 1)
        stride = cp.stride_h if cp.HasField("stride_h") else _first(cp.stride, 1)
        pad = cp.pad_h if cp.HasField("pad_h") else _first(cp.pad, 0)
        parts.append(f"kernel size: {kernel}{sep}stride: {stride}{sep}pad: {pad}")
    elif layer.type == "Pooling":
        pp = layer.pooling_param
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(pp.pool)
        parts.append(f"({method} Pooling)")
        if pp.global_pooling:
            parts.append("global")
        else:
            kernel = pp.kernel_h if pp.HasField("kernel_h") else pp.kernel_size
            stride = pp.stride_h if pp.HasField("stride_h") else pp.stride
            pad = pp.pad_h if pp.HasField("pad_h") else pp.pad
            parts.append(f"kernel size: {kernel}{sep}stride: {stride}{sep}pad: {pad}")
    else:
        parts.append(f"({layer.type})")
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        w, b = get_layer_lr_mult(layer)
        if w or b:
            parts.append(f"lr mult: {w:.1f}, {b:.1f}")
    return sep.join(parts)


def _quote(s, record=False):
    """A dot double-quoted string; a newline in ``s`` becomes a line break.

    ``record``: also escape the characters that are syntax inside record-shape labels.
    """
    s = s.replace("\\", "\\\\").replace('"', '\\"')
    if record:
        for ch in "{}|<>":
            s = s.replace(ch, "\\" + ch)
    return '"' + s.replace("\n", "\\n") + '"'


def _included(layer, phase):
    if phase is None:
        return True
    from .net_state import state_meets_rule
    state = caffe_pb2.NetState(phase=phase)
    if len(layer.include) and len(layer.exclude):
        raise MiniCaffeError(f"layer '{layer.name}' has both include and exclude rules")
    if len(layer.include):
        return any(state_meets_rule(state, r) for r in layer.include)
    return not any(state_meets_rule(state, r) for r in layer.exclude)


def net_to_dot(net, rankdir="LR", label_edges=True, phase=None, display_lrm=False):
    """Graphviz dot text for a NetParameter (layers of ``phase`` only, if given)."""
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise MiniCaffeError(f"rankdir must be LR, RL, TB or BT, got '{rankdir}'")
    lines = [f"digraph {_quote(net.name or 'Net')} {{", f"  rankdir={rankdir};"]
    blob_ids = {}
    node_lines, edge_lines = [], []

    def blob(name):
        if name not in blob_ids:
            blob_ids[name] = f"blob{len(blob_ids)}"
            node_lines.append(f"  {blob_ids[name]} [label={_quote(name)}, shape=octagon, "
                              f"style=filled, fillcolor=\"{BLOB_COLOR}\"];")
        return blob_ids[name]

    for i, layer in enumerate(net.layer):
        if not _included(layer, phase):
            continue
        node = f"layer{i}"
        in_place = (len(layer.bottom) == 1 and len(layer.top) == 1 and
                    layer.bottom[0] == layer.top[0])
        color = NEURON_LAYER_COLOR if in_place else choose_color_by_layertype(layer.type)
        label = _quote(get_layer_label(layer, rankdir, display_lrm), record=True)
        node_lines.append(f"  {node} [label={label}, shape=record, style=filled, "
                          f"fillcolor=\"{color}\"];")
        for b in layer.bottom:
            edge_lines.append(f"  {blob(b)} -> {node};")
        edge_label = get_edge_label(layer) if label_edges else ""
        for t in layer.top:
            attr = f" [label={_quote(edge_label)}]" if edge_label else ""
            edge_lines.append(f"  {node} -> {blob(t)}{attr};")
    lines += node_lines + edge_lines + ["}"]
    return "\n".join(lines) + "\n"


def find_dot():
    return shutil.which("dot")


def render(dot_text, fmt="png", dot=None):
    """Run graphviz on ``dot_text``; returns the image bytes."""
    dot = dot or find_dot()
    if dot is None:
        raise MiniCaffeError("graphviz 'dot' was not found on PATH (install graphviz)")
    proc = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode("utf-8"),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise MiniCaffeError(f"dot -T{fmt} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def draw_net(caffe_net, rankdir="LR", ext="png", phase=None, display_lrm=False):
    """The picture of a NetParameter as bytes in format ``ext`` (pycaffe's draw.draw_net)."""
    return render(net_to_dot(caffe_net, rankdir, phase=phase, display_lrm=display_lrm), ext)


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Write the picture to ``filename`` (format from its extension).

    Returns the path written: ``filename``, or ``<filename>.dot`` text when graphviz is not
    installed (check it against ``filename``).
    """
    filename = os.fspath(filename)
    text = net_to_dot(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    ext = os.path.splitext(filename)[1].lower()
    if ext in TEXT_EXTS:
        with open(filename, "w") as f:
            f.write(text)
        return filename
    fmt = ext[1:] or "png"
    if find_dot() is None:
        dot_path = filename + ".dot"
        with open(dot_path, "w") as f:
            f.write(text)
        return dot_path
    data = render(text, fmt)
    with open(filename, "wb") as f:
        f.write(data)
    return filename


_PHASES = {"ALL": None, "TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


def main_draw(argv=None, prog="minicaffe draw"):
    """``minicaffe draw NET.prototxt OUT.png [--rankdir LR] [--phase ALL|TRAIN|TEST]``."""
    ap = argparse.ArgumentParser(prog=prog, description="Draw a network graph with graphviz.")
    ap.add_argument("input_net_proto_file", help="net prototxt (V1/V0 nets are upgraded)")
    ap.add_argument("output_image_file", help="picture to write: .png, .svg, .pdf, ... "
                    "(.dot for the graphviz text)")
    ap.add_argument("--rankdir", default="LR", choices=["LR", "RL", "TB", "BT"],
                    help="direction of the graph layout (default LR)")
    ap.add_argument("--phase", default="ALL", type=str.upper, choices=list(_PHASES),
                    help="draw only the layers of this phase (default ALL)")
    ap.add_argument("--display_lrm", action="store_true",
                    help="show the lr_mult of learnable layers")
    args = ap.parse_args(argv)
    from .net_state import load_net_param
    try:
        net = load_net_param(args.input_net_proto_file)
        print(f"Drawing net to {args.output_image_file}")
        written = draw_net_to_file(net, args.output_image_file, args.rankdir,
                                   _PHASES[args.phase], args.display_lrm)
    except MiniCaffeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    if written != args.output_image_file:
        fmt = os.path.splitext(args.output_image_file)[1][1:] or "png"
        print(f"graphviz 'dot' is not installed, so no picture was made; the graph was "
              f"written to {written}.\nRender it with:  dot -T{fmt} {written} -o "
              f"{args.output_image_file}\n(install graphviz: apt-get install graphviz, "
              "brew install graphviz, or conda install graphviz)", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_draw())

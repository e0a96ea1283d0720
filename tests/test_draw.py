"""minicaffe draw / tools/draw_net.py: the dot graph, PNG/SVG through graphviz, and the
.dot fallback when graphviz is missing."""
import os
import re
import struct
import subprocess
import sys

import pytest

from minicaffe import draw
from minicaffe.io.prototxt import parse_text
from minicaffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_VAL = os.path.join(ROOT, "models", "cifar10_bn", "train_val.prototxt")
needs_dot = pytest.mark.skipif(draw.find_dot() is None,
                               reason="graphviz 'dot' is not installed")

NET = '''
name: "small"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "x" batch_size: 64 } }
layer { name: "input" type: "Input" top: "data" top: "label" include { phase: TEST } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 20 kernel_size: 5 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "ip<1>" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
'''


def small_net():
    return parse_text(NET, caffe_pb2.NetParameter())


def node_attrs(dot, label_start, exact=False):
    for line in dot.splitlines():
        m = re.match(r'\s*(\w+) \[label="([^"]*)", (.*)\];', line)
        if m and (m.group(2) == label_start if exact else m.group(2).startswith(label_start)):
            return m.group(1), m.group(3)
    raise AssertionError(f"no node labelled {label_start!r} in\n{dot}")


def test_dot_graph_structure_colours_and_labels():
    dot = draw.net_to_dot(small_net(), rankdir="TB")
    assert dot.startswith('digraph "small" {') and "rankdir=TB;" in dot
    conv_id, conv = node_attrs(dot, "conv1 (Convolution) kernel size: 5 stride: 2 pad: 1")
    assert 'fillcolor="#FF5050"' in conv and "shape=record" in conv
    pool_id, pool = node_attrs(dot, "pool1 (AVE Pooling) kernel size: 3 stride: 2 pad: 0")
    assert 'fillcolor="#FF9900"' in pool
    ip_id, ip = node_attrs(dot, "ip\\<1\\> (InnerProduct)")   # record syntax escaped
    assert 'fillcolor="#CC33FF"' in ip
    relu_id, relu = node_attrs(dot, "relu1 (ReLU)")
    assert 'fillcolor="#90EE90"' in relu                     # in place: green
    _, loss = node_attrs(dot, "loss (SoftmaxWithLoss)")
    assert 'fillcolor="#6495ED"' in loss
    blob_id, blob = node_attrs(dot, "conv1", exact=True)
    assert "shape=octagon" in blob
    # In place: an edge from the blob into the layer and one back to the same blob.
    assert f"  {blob_id} -> {relu_id};" in dot and f"  {relu_id} -> {blob_id};" in dot
    # Edge labels: num_output out of conv/ip, batch size out of Data.
    assert f'  {conv_id} -> {blob_id} [label="20"];' in dot
    assert re.search(rf'{ip_id} -> \w+ \[label="10"\];', dot)
    assert dot.count('[label="Batch 64"]') == 2
    # Both phases by default; only TEST's layers with --phase TEST.
    assert "data (Data)" in dot and "input (Input)" in dot
    test_dot = draw.net_to_dot(small_net(), phase=caffe_pb2.TEST)
    assert "data\\n(Data)" not in test_dot and "input\\n(Input)" in test_dot
    assert "rankdir=LR;" in test_dot          # LR: one item per line in a box


def test_display_lrm_and_bad_rankdir():
    dot = draw.net_to_dot(small_net(), rankdir="BT", display_lrm=True)
    assert "lr mult: 1.0, 2.0" in dot
    with pytest.raises(Exception, match="rankdir"):
        draw.net_to_dot(small_net(), rankdir="XY")


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@needs_dot
def test_draw_net_script_writes_valid_png(tmp_path):
    out = tmp_path / "net.png"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "draw_net.py"),
                           TRAIN_VAL, str(out), "--rankdir", "TB"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    w, h = png_size(out.read_bytes())
    assert h > w > 100          # top-to-bottom: taller than wide


@needs_dot
def test_main_draw_svg_and_phase(tmp_path):
    out = tmp_path / "net.svg"
    assert draw.main_draw([TRAIN_VAL, str(out), "--phase", "test"]) == 0
    svg = out.read_text()
    assert "<svg" in svg and ">bn1</text>" in svg and ">(BatchNorm)</text>" in svg
    assert "Batch 1000" in svg and "Batch 100<" not in svg     # only the TEST data layer


def test_without_graphviz_writes_dot_text(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(draw, "find_dot", lambda: None)
    out = tmp_path / "net.png"
    assert draw.main_draw([TRAIN_VAL, str(out)]) == 0
    assert not out.exists()
    text = (tmp_path / "net.png.dot").read_text()
    assert text.startswith('digraph "CIFAR10_BN"')
    err = capsys.readouterr().err
    assert "not installed" in err and f"dot -Tpng {out}.dot -o {out}" in err
    # An explicit .dot output is always text.
    assert draw.main_draw([TRAIN_VAL, str(tmp_path / "g.dot")]) == 0
    assert (tmp_path / "g.dot").read_text() == text


def test_missing_net_file_is_an_error(tmp_path, capsys):
    assert draw.main_draw([str(tmp_path / "nope.prototxt"), str(tmp_path / "x.png")]) == 1
    assert "no such file" in capsys.readouterr().err

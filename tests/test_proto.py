"""Checks for the Caffe-compatible protobuf schema (proto/caffe.proto)."""
import math
import os
import struct
import subprocess
import sys

import pytest

from google.protobuf import text_format

from minicaffe.proto import caffe_pb2 as pb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATED = os.path.join(ROOT, "minicaffe", "proto", "caffe_pb2.py")


# -- (1) the committed module is what the documented command produces --------

def test_generated_module_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    # Same invocation as tools/gen_proto.sh, only the output dir differs.
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-Iproto",
           "--python_out=" + str(tmp_path), "proto/caffe.proto"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "caffe_pb2.py", "rb") as fh:
        fresh = fh.read()
    with open(GENERATED, "rb") as fh:
        committed = fh.read()
    assert fresh == committed, (
        "minicaffe/proto/caffe_pb2.py is stale or was made by another "
        "grpcio-tools version; run tools/gen_proto.sh")


def test_gen_script_documents_the_command():
    with open(os.path.join(ROOT, "tools", "gen_proto.sh")) as fh:
        text = fh.read()
    assert ("python -m grpc_tools.protoc -Iproto "
            "--python_out=minicaffe/proto proto/caffe.proto") in text


# -- (2) facts checked independently of the schema text ----------------------

def _field(msg, name):
    return msg.DESCRIPTOR.fields_by_name[name]


@pytest.mark.parametrize("name,number", [
    ("transform_param", 100),
    ("loss_param", 101),
    ("convolution_param", 106),
    ("pooling_param", 121),
    ("inner_product_param", 117),
    ("batch_norm_param", 139),
    ("bias_param", 141),
    ("scale_param", 142),
    ("input_param", 143),
    ("swish_param", 147),
    ("clip_param", 148),
])
def test_layer_parameter_field_numbers(name, number):
    assert _field(pb.LayerParameter, name).number == number


def test_message_count():
    assert len(pb.DESCRIPTOR.message_types_by_name) == 88
    assert set(pb.DESCRIPTOR.enum_types_by_name) == {"Phase"}


def test_defaults():
    bn = pb.BatchNormParameter()
    assert math.isclose(bn.moving_average_fraction, 0.999, rel_tol=1e-6)
    assert math.isclose(bn.eps, 1e-5, rel_tol=1e-6)
    assert not bn.HasField("eps")

    solver = pb.SolverParameter()
    assert solver.type == "SGD"
    assert solver.solver_type == pb.SolverParameter.SGD
    assert solver.solver_mode == pb.SolverParameter.GPU
    assert solver.snapshot_format == pb.SolverParameter.BINARYPROTO
    assert solver.random_seed == -1
    assert solver.iter_size == 1
    assert solver.clip_gradients == -1
    assert math.isclose(solver.momentum2, 0.999, rel_tol=1e-6)
    assert math.isclose(solver.delta, 1e-8, rel_tol=1e-6)
    assert math.isclose(solver.rms_decay, 0.99, rel_tol=1e-6)

    conv = pb.ConvolutionParameter()
    assert conv.bias_term is True
    assert conv.group == 1
    assert conv.engine == pb.ConvolutionParameter.DEFAULT

    pool = pb.PoolingParameter()
    assert pool.pool == pb.PoolingParameter.MAX
    assert pool.stride == 1
    assert pool.round_mode == pb.PoolingParameter.CEIL

    assert pb.FillerParameter().type == "constant"
    assert pb.NetState().phase == pb.TEST
    assert pb.LossParameter().normalization == pb.LossParameter.VALID
    assert pb.DataParameter().backend == pb.DataParameter.LEVELDB


def test_enum_values():
    solver_type = pb.SolverParameter.SolverType
    assert {n: solver_type.Value(n) for n in solver_type.keys()} == {
        "SGD": 0, "NESTEROV": 1, "ADAGRAD": 2,
        "RMSPROP": 3, "ADADELTA": 4, "ADAM": 5}
    assert pb.TRAIN == 0 and pb.TEST == 1
    assert pb.V1LayerParameter.CONVOLUTION == 4
    assert pb.V1LayerParameter.DECONVOLUTION == 39
    assert pb.V1LayerParameter.ABSVAL == 35
    assert pb.ReductionParameter.SUM == 1
    assert pb.HingeLossParameter.L1 == 1


def test_legacy_and_packed_fields():
    assert _field(pb.NetParameter, "layers").number == 2
    assert _field(pb.NetParameter, "layer").number == 100
    assert _field(pb.NetParameter, "input_dim").number == 4
    assert _field(pb.SolverParameter, "type").number == 40
    assert _field(pb.SolverParameter, "weights").number == 42
    assert _field(pb.V1LayerParameter, "layer").message_type.name == \
        "V0LayerParameter"
    clip = pb.ClipParameter.DESCRIPTOR
    assert all(f.is_required for f in clip.fields)
    packed = {(m, f) for m in ("BlobShape", "BlobProto")
              for f in getattr(pb, m).DESCRIPTOR.fields_by_name
              if getattr(pb, m).DESCRIPTOR.fields_by_name[f].is_packed}
    assert packed == {("BlobShape", "dim"), ("BlobProto", "data"),
                      ("BlobProto", "diff"), ("BlobProto", "double_data"),
                      ("BlobProto", "double_diff")}
    # Caffe does not pack Datum.float_data.
    assert not _field(pb.Datum, "float_data").is_packed


# -- (3) real-style text and binary round trips ------------------------------

PROTOTXT = """
name: "TinyNet"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 8
input_dim: 8
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 4
    kernel_size: 3
    pad: 1
    weight_filler { type: "xavier" }
  }
}
layer {
  name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  batch_norm_param { use_global_stats: true }
}
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 }
  include { phase: TEST }
}
layers {
  name: "relu_v1"
  type: RELU
  bottom: "pool1"
  top: "pool1"
  blobs_lr: 1
}
"""


def test_parse_prototxt():
    net = text_format.Parse(PROTOTXT, pb.NetParameter())
    assert net.name == "TinyNet"
    assert list(net.input) == ["data"]
    assert list(net.input_dim) == [1, 3, 8, 8]
    assert [l.name for l in net.layer] == ["conv1", "bn1", "pool1"]
    conv = net.layer[0]
    assert conv.convolution_param.num_output == 4
    assert list(conv.convolution_param.kernel_size) == [3]
    assert conv.convolution_param.bias_term  # default
    assert conv.param[1].lr_mult == 2
    assert net.layer[1].batch_norm_param.use_global_stats
    assert net.layer[2].pooling_param.pool == pb.PoolingParameter.AVE
    assert net.layer[2].include[0].phase == pb.TEST
    assert len(net.layers) == 1
    assert net.layers[0].type == pb.V1LayerParameter.RELU
    # Text -> binary -> text is lossless.
    again = pb.NetParameter.FromString(net.SerializeToString())
    assert again == net
    assert text_format.Parse(text_format.MessageToString(net),
                             pb.NetParameter()) == net


def test_blobproto_packed_wire_format():
    blob = pb.BlobProto()
    blob.data.extend([1.0, 2.0])
    wire = blob.SerializeToString()
    # field 5, wire type 2 -> tag 0x2a; payload length 8 = two float32s.
    assert wire == b"\x2a\x08" + struct.pack("<2f", 1.0, 2.0)
    assert list(pb.BlobProto.FromString(wire).data) == [1.0, 2.0]

    shape = pb.BlobShape(dim=[2, 3])
    # field 1, wire type 2 -> tag 0x0a; two one-byte varints.
    assert shape.SerializeToString() == b"\x0a\x02\x02\x03"

    # A parser must also accept the unpacked encoding (old writers).
    unpacked = b"\x2d" + struct.pack("<f", 1.0) + b"\x2d" + struct.pack("<f", 2.0)
    assert list(pb.BlobProto.FromString(unpacked).data) == [1.0, 2.0]

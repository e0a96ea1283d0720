"""Write an old Caffe net definition in the current format (Caffe's upgrade_net_proto_text).

    python tools/upgrade_net_proto_text.py old_net.prototxt new_net.prototxt
    python tools/upgrade_net_proto_text.py old.caffemodel new.caffemodel   # binary nets too

V1 nets (``layers { type: CONVOLUTION ... }``) become ``layer { type: "Convolution" ... }``
(blobs_lr/weight_decay → param { lr_mult decay_mult }, data-layer scale/mean_file/crop_size/
mirror → transform_param), and net-level ``input``/``input_dim``/``input_shape`` become an
Input layer. minicaffe does the same upgrade whenever it loads a net, with a log line; this
tool saves the result. A net already in the current format is written unchanged.
"""
import argparse
import logging
import os
import sys

from ..errors import MiniCaffeError
from ..io.protobinary import read_binary, write_binary
from ..io.prototxt import read_prototxt
from ..proto import caffe_pb2
from . import upgrade_net

BINARY_EXTS = (".caffemodel", ".binaryproto", ".pb")


def needs_upgrade(param):
    return bool(len(param.layers) or len(param.input) or len(param.input_dim) or
                len(param.input_shape))


def upgrade_file(src, dst):
    """Upgrade ``src`` into ``dst`` (binary when ``src`` ends in .caffemodel); returns True
    when something was upgraded."""
    binary = src.lower().endswith(BINARY_EXTS)
    param = caffe_pb2.NetParameter()
    if binary:
        read_binary(src, param)
    else:
        read_prototxt(src, param)
    changed = needs_upgrade(param)
    upgrade_net(param, src)
    if binary:
        write_binary(param, dst)
    else:
        tmp = f"{dst}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(str(param))
        os.replace(tmp, dst)
    return changed


def main_upgrade_net_proto_text(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("net_in", help="old net: prototxt (or binary .caffemodel)")
    ap.add_argument("net_out", help="where to write the upgraded net (same kind)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        changed = upgrade_file(args.net_in, args.net_out)
    except (MiniCaffeError, ValueError) as e:
        print(f"upgrade_net_proto_text: error: {e}", file=sys.stderr)
        return 1
    if not changed:
        print(f"{args.net_in}: already in the latest format; copied to {args.net_out}")
    else:
        print(f"Wrote upgraded NetParameter to {args.net_out}")
    return 0

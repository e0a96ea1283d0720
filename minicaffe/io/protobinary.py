"""Binary protos: .caffemodel (NetParameter), .solverstate, .binaryproto (BlobProto)."""
import os

import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .atomic_file import write_bytes_atomically


def blobproto_shape(proto):
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    # Legacy 4-D blobs (V1 caffemodels and binaryproto means) store num/channels/height/width.
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    n = len(proto.data) or len(proto.double_data)
    return (n,)


def blobproto_to_array(proto, diff=False, dtype=np.float32):
    if diff:
        vals = proto.double_diff if len(proto.double_diff) else proto.diff
    else:
        vals = proto.double_data if len(proto.double_data) else proto.data
    arr = np.asarray(vals, dtype=dtype)
    shape = blobproto_shape(proto)
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise MiniCaffeError(f"blob proto holds {arr.size} values but its shape is {shape}")
    return arr.reshape(shape)


def array_to_blobproto(arr, diff=None, proto=None):
    proto = caffe_pb2.BlobProto() if proto is None else proto
    arr = np.asarray(arr)
    proto.ClearField("shape")
    proto.shape.dim.extend(int(d) for d in arr.shape)
    proto.ClearField("data")
    proto.data.extend(arr.astype(np.float32, copy=False).ravel().tolist())
    if diff is not None:
        proto.ClearField("diff")
        proto.diff.extend(np.asarray(diff, np.float32).ravel().tolist())
    return proto


def read_binary(path, message):
    if not os.path.exists(path):
        raise MiniCaffeError(f"{path}: no such file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        message.ParseFromString(data)
    except Exception as e:  # DecodeError: not this kind of file
        raise MiniCaffeError(f"{path}: not a valid binary {message.DESCRIPTOR.name} ({e})") from None
    return message


def write_binary(message, path):
    """Write atomically (``atomic_file``): a crash never leaves a truncated file under
    ``path``."""
    write_bytes_atomically(path, message.SerializeToString())


def read_blobproto(path):
    return read_binary(path, caffe_pb2.BlobProto())


def read_mean(path):
    """A mean image from a .binaryproto file as a float32 array (C, H, W) or (N, C, H, W)."""
    arr = blobproto_to_array(read_blobproto(path))
    return arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr

"""Binary protos: .caffemodel (NetParameter), .solverstate, .binaryproto (BlobProto)."""
import logging
import os

import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .atomic_file import write_bytes_atomically

log = logging.getLogger("minicaffe")

# What a binary file may hold instead of the message asked for, tried in this order.
KNOWN_KINDS = (("a caffe.NetParameter (.caffemodel)", caffe_pb2.NetParameter),
               ("a caffe.SolverState (.solverstate)", caffe_pb2.SolverState),
               ("a caffe.BlobProto (.binaryproto, e.g. a mean file)", caffe_pb2.BlobProto),
               ("a caffe.Datum (an LMDB record)", caffe_pb2.Datum))


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


def _has_unknown_fields(message):
    try:
        from google.protobuf.unknown_fields import UnknownFieldSet
    except ImportError:  # pragma: no cover - protobuf before 4.21
        return len(message.UnknownFields()) > 0
    return len(UnknownFieldSet(message)) > 0


def parses_as(data, cls):
    """Whether ``data`` reads as a ``cls`` message using its fields only (at least one)."""
    message = cls()
    try:
        message.ParseFromString(data)
    except Exception:  # DecodeError
        return False
    return bool(message.ListFields()) and not _has_unknown_fields(message)


def known_kind(data, unlike=None):
    """Which of KNOWN_KINDS other than ``unlike`` the bytes ``data`` read as, in words, or None."""
    return next((label for label, cls in KNOWN_KINDS
                 if cls is not unlike and parses_as(data, cls)), None)


def describe_binary(data, unlike=None):
    """What the bytes ``data`` hold, in words."""
    if not data:
        return "nothing (an empty file)"
    kind = known_kind(data, unlike)
    if kind:
        return kind
    head = data[:64]
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return f"text, not a binary message (a prototxt?), starting {head.decode()[:24]!r}"
    return f"{len(data)} bytes of no known Caffe message, starting {data[:8].hex(' ')}"


def _read_bytes(path, what):
    if not os.path.exists(path):
        raise MiniCaffeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise MiniCaffeError(f"{path}: is a directory, expected a binary {what} file")
    with open(path, "rb") as f:
        return f.read()


def _parse(path, data, message):
    try:
        message.ParseFromString(data)
    except Exception as e:  # DecodeError: not this kind of file
        raise MiniCaffeError(f"{path}: not a valid binary {message.DESCRIPTOR.name} "
                             f"({str(e).split(': ')[-1]}); it holds "
                             f"{describe_binary(data, unlike=type(message))}") from None
    return message


def read_binary(path, message):
    return _parse(path, _read_bytes(path, message.DESCRIPTOR.name), message)


def read_caffemodel(path):
    """The NetParameter of a .caffemodel. One without layers would copy nothing (Caffe copies
    nothing, silently): an error when the file is empty or reads as another message, a warning
    otherwise."""
    data = _read_bytes(path, "caffemodel")
    param = _parse(path, data, caffe_pb2.NetParameter())
    if not len(param.layer) and not len(param.layers):
        if not data or _has_unknown_fields(param) or known_kind(data, caffe_pb2.NetParameter):
            raise MiniCaffeError(f"{path}: not a .caffemodel: it has no layers; it holds "
                                 f"{describe_binary(data, unlike=caffe_pb2.NetParameter)}")
        log.warning("%s holds a NetParameter without layers: no weights to copy", path)
    return param

def write_binary(message, path):
    """Write atomically (``atomic_file``): a crash never leaves a truncated file under
    ``path``."""
    write_bytes_atomically(path, message.SerializeToString())


def read_blobproto(path):
    data = _read_bytes(path, "BlobProto")
    proto = _parse(path, data, caffe_pb2.BlobProto())
    if data and (not proto.ListFields() or _has_unknown_fields(proto)) and \
            not len(proto.data) and not len(proto.double_data):
        raise MiniCaffeError(f"{path}: not a BlobProto (.binaryproto): it holds "
                             f"{describe_binary(data, unlike=caffe_pb2.BlobProto)}")
    return proto


def read_mean(path):
    """A mean image from a .binaryproto file as a float32 array (C, H, W) or (N, C, H, W)."""
    arr = blobproto_to_array(read_blobproto(path))
    return arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr

"""pycaffe's ndarray <-> BlobProto / Datum conversions (``caffe.io.array_to_datum`` ...)."""
import io as _io

import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from . import protobinary as _pb


def blobproto_to_array(blob, return_diff=False, diff=None, dtype=np.float32):
    """The data (or, with ``return_diff=True``, the diff) of a BlobProto as an array.

    The array has the blob's shape: its ``shape`` field, or legacy num/channels/height/width.
    """
    return _pb.blobproto_to_array(blob, diff=bool(return_diff or diff), dtype=dtype)


def array_to_blobproto(arr, diff=None, proto=None):
    """A BlobProto holding ``arr`` (and ``diff`` when given), with a ``shape`` field.

    ``proto``: fill this BlobProto instead of a new one.
    """
    arr = np.asarray(arr)
    if diff is not None and np.shape(diff) != arr.shape:
        raise ValueError(f"array_to_blobproto: diff shape {np.shape(diff)} differs from data "
                         f"shape {arr.shape}")
    return _pb.array_to_blobproto(arr, diff, proto)


def array_to_datum(arr, label=None):
    """A Datum from a C x H x W array: uint8 arrays go to ``data`` bytes, others to float_data."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"array_to_datum needs a 3-D C x H x W array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """The C x H x W array of a Datum (uint8 from ``data``, float from ``float_data``).

    An ``encoded`` Datum (JPEG/PNG bytes, as ``convert_imageset --encoded`` writes) is decoded
    to C x H x W uint8 in BGR order, as Caffe's DecodeDatum gives it. The label is not
    returned: read ``datum.label``.
    """
    if datum.encoded:
        from PIL import Image
        img = Image.open(_io.BytesIO(datum.data))
        arr = np.asarray(img.convert("L") if img.mode in ("1", "L", "I;16", "I") else
                         img.convert("RGB"))
        if arr.ndim == 2:
            return arr[np.newaxis].copy()
        return arr[:, :, ::-1].transpose(2, 0, 1).copy()
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        arr = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        arr = np.asarray(datum.float_data, dtype=np.float64)
    if arr.size != int(np.prod(shape)):
        raise MiniCaffeError(f"datum holds {arr.size} values but says channels x height x "
                             f"width = {shape}")
    return arr.reshape(shape).copy()

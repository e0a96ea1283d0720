"""pycaffe's ``caffe.io``: preprocessing (Transformer), images, and Datum/BlobProto arrays.

Images are float32 H x W x K arrays in [0, 1] (``load_image``), as in pycaffe; a Transformer
turns them into the K x H x W (usually BGR, mean-subtracted) arrays a net takes:

    t = Transformer({"data": net.blobs["data"].data.shape})
    t.set_transpose("data", (2, 0, 1))       # H x W x K -> K x H x W
    t.set_channel_swap("data", (2, 1, 0))    # RGB -> BGR
    t.set_raw_scale("data", 255)             # [0, 1] -> [0, 255]
    t.set_mean("data", mean_bgr)             # K values or a K x H x W image
    net.blobs["data"].data[0] = t.preprocess("data", load_image("cat.jpg"))

preprocess order: convert to float32, resize to the input's H x W, transpose, channel swap,
``* raw_scale``, ``- mean``, ``* input_scale``; deprocess undoes them in reverse.
"""
import io as _io

import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from . import protobinary as _pb

__all__ = ["Transformer", "load_image", "resize_image", "oversample", "array_to_datum",
           "datum_to_array", "blobproto_to_array", "array_to_blobproto"]


# -- BlobProto / Datum <-> ndarray -------------------------------------------------------------
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


# -- images --------------------------------------------------------------------------------------
def load_image(filename, color=True):
    """An image as float32 in [0, 1]: H x W x 3 (RGB) or, for grayscale with color=False, H x W x 1.

    Grayscale images are repeated to three channels when ``color`` is True; an alpha channel
    is dropped.
    """
    from PIL import Image
    with Image.open(filename) as img:
        mode = img.mode
        if mode == "1":
            img = img.convert("L")
        elif mode == "LA":
            img = img.convert("L")
        elif mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode not in ("L", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
            img = img.convert("RGB")
        arr = np.asarray(img)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16 or (arr.dtype.kind in "ui" and mode.startswith("I;16")):
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype.kind in "ui":  # 32-bit integer images
        out = (arr.astype(np.float64) / np.iinfo(arr.dtype).max).astype(np.float32)
    else:
        out = arr.astype(np.float32)
    if out.ndim == 2:
        out = out[:, :, np.newaxis]
        if color:
            out = np.tile(out, (1, 1, 3))
    elif out.shape[2] == 4:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def _axis_weights(n_in, n_out):
    """Source indices and weights for linear interpolation with pixel centres aligned."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo)


def resize_image(im, new_dims, interp_order=1):
    """Resize an H x W x K image to ``new_dims`` (height, width).

    ``interp_order`` 1 (default) is bilinear, 0 nearest neighbour; pixel centres are aligned
    and edges clamped. A constant image stays exactly constant.
    """
    im = np.asarray(im)
    h, w = int(new_dims[0]), int(new_dims[1])
    if im.ndim != 3:
        raise ValueError(f"resize_image needs an H x W x K array, got shape {im.shape}")
    if im.size and im.min() == im.max():
        return np.full((h, w, im.shape[2]), im.flat[0], dtype=np.float32)
    H, W = im.shape[:2]
    src = im.astype(np.float64)
    if interp_order == 0:
        rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
        return src[rows][:, cols].astype(np.float32)
    if interp_order != 1:
        raise ValueError("resize_image supports interp_order 0 (nearest) and 1 (bilinear)")
    r0, r1, fr = _axis_weights(H, h)
    c0, c1, fc = _axis_weights(W, w)
    rows = src[r0] * (1 - fr)[:, None, None] + src[r1] * fr[:, None, None]
    out = rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]
    return out.astype(np.float32)


def oversample(images, crop_dims):
    """Ten crops per image: four corners and the centre, then the same five mirrored.

    ``images``: a sequence of H x W x K arrays of one size; returns (10 N) x h x w x K float32.
    """
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims, dtype=np.int64)
    if np.any(crop_dims > im_shape[:2]):
        raise ValueError(f"crop {tuple(crop_dims)} is larger than the image {tuple(im_shape[:2])}")
    center = im_shape[:2] / 2.0
    boxes = []
    for i in (0, im_shape[0] - crop_dims[0]):
        for j in (0, im_shape[1] - crop_dims[1]):
            boxes.append((i, j))
    boxes.append(tuple((center - crop_dims / 2.0).astype(np.int64)))
    h, w = int(crop_dims[0]), int(crop_dims[1])
    crops = np.empty((10 * len(images), h, w, int(im_shape[-1])), dtype=np.float32)
    ix = 0
    for im in images:
        for i, j in boxes:
            crops[ix] = im[i:i + h, j:j + w, :]
            ix += 1
        crops[ix:ix + 5] = crops[ix - 5:ix, :, ::-1, :]
        ix += 5
    return crops


# -- Transformer ---------------------------------------------------------------------------------
class Transformer:
    """Per-input preprocessing; ``inputs`` maps input names to their N x K x H x W shapes."""

    def __init__(self, inputs):
        self.inputs = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise KeyError(f"'{in_}' is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_, data):
        """H' x W' x K image → K x H x W float32 array for input ``in_`` (a new array)."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if tuple(caffe_in.shape[:2]) != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in = caffe_in * raw_scale
        if mean is not None:
            caffe_in = caffe_in - mean
        if input_scale is not None:
            caffe_in = caffe_in * input_scale
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_, data):
        """Undo preprocess (except resizing): K x H x W → H x W x K in the original scale."""
        self._check_input(in_)
        decaf_in = np.array(data, dtype=np.float32).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in = decaf_in / input_scale
        if mean is not None:
            decaf_in = decaf_in + mean
        if raw_scale is not None:
            decaf_in = decaf_in / raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[list(np.argsort(channel_swap)), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Axis order taking the image to K x H x W, e.g. (2, 0, 1) for H x W x K."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError(f"transpose order {tuple(order)} needs "
                             f"{len(self.inputs[in_]) - 1} axes, as the input '{in_}'")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order after transpose, e.g. (2, 1, 0) for RGB → BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError(f"channel swap {tuple(order)} needs {self.inputs[in_][1]} "
                             f"entries, one per channel of input '{in_}'")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiply the raw image by ``scale`` before mean subtraction (255 for [0, 255] nets)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: K values (per channel) or a K x H x W (or H x W) array."""
        self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 1:
            if mean.shape[0] != self.inputs[in_][1]:
                raise ValueError(f"mean has {mean.shape[0]} channels, input '{in_}' has "
                                 f"{self.inputs[in_][1]}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            ms = mean.shape
            if len(ms) == 2:
                ms = (1,) + ms
                mean = mean.reshape(ms)
            if len(ms) != 3:
                raise ValueError(f"mean shape {mean.shape} invalid: give K values or a "
                                 "K x H x W array")
            if tuple(ms) != tuple(self.inputs[in_][1:]):
                raise ValueError(f"mean shape {tuple(ms)} incompatible with input shape "
                                 f"{self.inputs[in_][1:]}")
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed input by ``scale`` (after mean subtraction)."""
        self._check_input(in_)
        self.input_scale[in_] = scale

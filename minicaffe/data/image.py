"""Image decoding, encoding and resizing with Pillow, giving arrays as Caffe's OpenCV code does.

Caffe reads images with OpenCV, so every image array here is ``uint8`` in (C, H, W) order with
colour channels in **BGR** order (BGRA for images with alpha). Three read modes mirror OpenCV's
flags:

* ``color=True``  (IMREAD_COLOR): always 3 channels, BGR; alpha is dropped, grey is replicated;
* ``color=False`` (IMREAD_GRAYSCALE): always 1 channel;
* ``color=None``  (IMREAD_UNCHANGED, Caffe's ``DecodeDatumToCVMatNative``): 1 channel for grey
  images, 3 (BGR) for colour, 4 (BGRA) for images with an alpha channel.

Resizing follows OpenCV's INTER_LINEAR geometry (pixel centres, no antialiasing; Pillow's own
bilinear filter widens its support when downscaling and so gives different pixels).
"""
import io
import os

import numpy as np

from ..errors import MiniCaffeError


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise MiniCaffeError("reading images needs Pillow: pip install Pillow") from None
    return Image


def _to_chw(img, color, what):
    """A Pillow image as a (C, H, W) uint8 array in OpenCV's channel order."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F") and color is None:
        raise MiniCaffeError(f"{what}: {mode} images (16-bit or float pixels) are not supported; "
                             "Caffe's transformer needs 8-bit images")
    if color is True:
        img = img.convert("RGB")
    elif color is False:
        img = img.convert("L")
    else:
        has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or \
            (mode == "P" and "transparency" in img.info)
        if mode in ("L", "1"):
            img = img.convert("L")
        elif has_alpha:
            img = img.convert("RGBA")
        else:
            img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        return np.ascontiguousarray(a[None])
    a = a.transpose(2, 0, 1)
    # RGB(A) -> BGR(A)
    order = [2, 1, 0] if a.shape[0] == 3 else [2, 1, 0, 3]
    return np.ascontiguousarray(a[order])


def _load_chw(open_image, color, what, prefix, unknown_format):
    """(C, H, W) uint8 BGR from the PIL image ``open_image(Image)`` opens; any failure becomes
    one MiniCaffeError starting with ``prefix`` (``unknown_format`` when PIL knows no format)."""
    Image = _pil()
    try:
        with open_image(Image) as img:
            img.load()
            return _to_chw(img, color, what)
    except MiniCaffeError:
        raise
    except Image.UnidentifiedImageError:
        raise MiniCaffeError(unknown_format) from None
    except Exception as e:
        raise MiniCaffeError(f"{prefix}: {e}") from None


def decode_image(data, color=None, what="encoded image"):
    """Decode PNG/JPEG/... bytes into a (C, H, W) uint8 BGR array (see module doc for ``color``)."""
    prefix = f"could not decode {what} ({len(data)} bytes)"
    return _load_chw(lambda Image: Image.open(io.BytesIO(bytes(data))), color, what, prefix,
                     f"{prefix}: not an image of a known format, starting "
                     f"{bytes(data[:8]).hex(' ')}")


def read_image(path, height=0, width=0, is_color=True):
    """Caffe's ReadImageToCVMat: an image file as (C, H, W) uint8 BGR, resized if both sizes > 0."""
    prefix = f"could not load image {path}"
    if not os.path.isfile(path):
        raise MiniCaffeError(f"{prefix}: " + ("is a directory" if os.path.isdir(path) else
                                              "no such file"))
    arr = _load_chw(lambda Image: Image.open(path), bool(is_color), path, prefix,
                    f"{prefix}: not an image file of a known format "
                    f"({os.path.getsize(path)} bytes)")
    if height > 0 and width > 0:
        arr = resize_bilinear(arr, height, width)
    return arr


def native_channels(path_or_bytes):
    """How many channels an image decodes to natively (1 grey, 3 colour, 4 with alpha)."""
    Image = _pil()
    src = path_or_bytes if isinstance(path_or_bytes, str) else io.BytesIO(bytes(path_or_bytes))
    with Image.open(src) as img:
        mode = img.mode
        if mode in ("L", "1", "I;16", "I", "F"):
            return 1
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            return 4
        return 3


def encode_image(chw, fmt="png"):
    """Encode a (C, H, W) uint8 BGR(A) or grey array as PNG/JPEG/... bytes."""
    Image = _pil()
    a = np.asarray(chw)
    if a.dtype != np.uint8:
        raise MiniCaffeError(f"only uint8 images can be encoded, got {a.dtype}")
    if a.ndim != 3 or a.shape[0] not in (1, 3, 4):
        raise MiniCaffeError("an image to encode must be (C, H, W) with C in 1, 3, 4; "
                             f"got {a.shape}")
    if a.shape[0] == 1:
        img = Image.fromarray(a[0], "L")
    else:
        order = [2, 1, 0] if a.shape[0] == 3 else [2, 1, 0, 3]
        img = Image.fromarray(np.ascontiguousarray(a[order].transpose(1, 2, 0)),
                              "RGB" if a.shape[0] == 3 else "RGBA")
    fmt = fmt.lower().lstrip(".")
    pil_fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF",
               "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "webp": "WEBP"}.get(fmt, fmt.upper())
    buf = io.BytesIO()
    kwargs = {"quality": 95} if pil_fmt == "JPEG" else {}
    if pil_fmt == "JPEG" and img.mode == "RGBA":
        img = img.convert("RGB")
    img.save(buf, format=pil_fmt, **kwargs)
    return buf.getvalue()


def _linear_taps(n_src, n_dst):
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis."""
    scale = n_src / n_dst
    s = (np.arange(n_dst, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(s)
    w = s - i0
    i0 = i0.astype(np.int64)
    low = i0 < 0
    i0[low] = 0
    w[low] = 0.0
    high = i0 >= n_src - 1
    i0[high] = n_src - 1
    w[high] = 0.0
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, w


def resize_bilinear(chw, height, width):
    """Resize a (C, H, W) image to (C, height, width) with OpenCV's INTER_LINEAR geometry.

    Values are rounded to nearest for uint8 input (OpenCV's fixed-point arithmetic can differ
    by one grey level); other dtypes keep float precision.
    """
    a = np.asarray(chw)
    c, h, w = a.shape
    if (h, w) == (height, width):
        return a.copy()
    y0, y1, wy = _linear_taps(h, height)
    x0, x1, wx = _linear_taps(w, width)
    f = a.astype(np.float64)
    top = f[:, y0][:, :, x0] * (1 - wx) + f[:, y0][:, :, x1] * wx
    bot = f[:, y1][:, :, x0] * (1 - wx) + f[:, y1][:, :, x1] * wx
    out = top * (1 - wy)[:, None] + bot * wy[:, None]
    if a.dtype == np.uint8:
        return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out.astype(a.dtype)

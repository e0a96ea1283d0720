"""pycaffe's image helpers: ``load_image`` (float32 H x W x K in [0, 1]), ``resize_image``
and ten-crop ``oversample``."""
import numpy as np


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

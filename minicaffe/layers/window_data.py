"""WindowData (window_data_param): R-CNN style batches of image windows, as BVLC Caffe builds them.

The window file (``source``) repeats, whitespace separated:

    # image_index
    image_path            (prefixed with root_folder)
    channels height width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines, inclusive pixel boxes)

Windows with overlap >= fg_threshold are foreground (their class must be > 0); those with
overlap < bg_threshold are background (label 0); others are dropped. A batch holds
B - int(B * fg_fraction) background windows, then the foreground ones, each drawn uniformly
with replacement. Each window is cut out and warped (bilinear, OpenCV's geometry) to
crop_size x crop_size; with ``context_pad`` or ``crop_mode: "square"`` the box is first
grown (made square) so that ``context_pad`` pixels of context surround it after warping,
clipped to the image, and the clipped part left as zeros. With ``mirror`` a window is
flipped at random (its padding too). Pixels are BGR, (pixel - mean) * scale, the mean being
the mean_file image (read at the centre offset (mean_width - crop_size) / 2 plus the pad)
or mean_value per channel. Tops: data (B, C, crop, crop) and label (B,).

crop_size, mirror, mean_file and mean_value come from transform_param, falling back to the
deprecated window_data_param fields; scale is window_data_param's (Caffe reads only that
one), else transform_param's.
"""
import logging
import math
import os

import numpy as np

from ..data.image import decode_image, read_image, resize_bilinear
from ..errors import MiniCaffeError
from ..layer import register
from .data import merged_transform_param
from .prefetch import PrefetchingDataLayer

log = logging.getLogger("minicaffe")

_F = np.float32


def read_window_file(path, root_folder="", fg_threshold=0.5, bg_threshold=0.5):
    """(images [(path, (C, H, W))], fg, bg): window rows (image_index, label, x1, y1, x2, y2)."""
    if not os.path.isfile(path):
        raise MiniCaffeError(f"failed to open window file {path}: no such file")
    with open(path) as f:
        tokens = f.read().split()
    if not tokens:
        raise MiniCaffeError(f"window file {path} is empty")
    images, fg, bg = [], [], []
    pos = 0

    def take(n, what):
        nonlocal pos
        if pos + n > len(tokens):
            raise MiniCaffeError(f"window file {path} ends inside {what}")
        pos += n
        return tokens[pos - n:pos]

    while pos < len(tokens):
        hashtag, index = take(2, "an image header")
        if hashtag != "#":
            raise MiniCaffeError(f"window file {path}: expected '#' before image {len(images)}, "
                                 f"got {hashtag!r}")
        if int(index) != len(images):
            raise MiniCaffeError(f"window file {path}: image indices must count 0, 1, 2, ...; "
                                 f"image {len(images)} is numbered {index}")
        name, c, h, w, num = take(5, f"the header of image {index}")
        images.append((root_folder + name, (int(c), int(h), int(w))))
        for _ in range(int(num)):
            label, overlap, x1, y1, x2, y2 = take(6, f"the windows of image {index}")
            box = (int(x1), int(y1), int(x2), int(y2))
            if _F(overlap) >= _F(fg_threshold):
                if int(label) <= 0:
                    raise MiniCaffeError(f"window file {path}: a foreground window of image "
                                         f"{index} has class {label}; classes must be > 0")
                fg.append((int(index), int(label)) + box)
            elif _F(overlap) < _F(bg_threshold):
                bg.append((int(index), 0) + box)
    return images, np.array(fg, dtype=np.int64).reshape(-1, 6), \
        np.array(bg, dtype=np.int64).reshape(-1, 6)


def _c_round(v):
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(float(v)) + 0.5), v))


def window_geometry(box, image_hw, crop, context_pad, square, mirror):
    """Caffe's warp of one window: (roi x1, y1, x2, y2), (out_h, out_w), (pad_h, pad_w)."""
    x1, y1, x2, y2 = box
    if not (context_pad > 0 or square):
        return (x1, y1, x2, y2), (crop, crop), (0, 0)
    rows, cols = image_hw
    context_scale = _F(crop) / _F(crop - 2 * context_pad)
    half_h, half_w = _F(y2 - y1 + 1) / _F(2), _F(x2 - x1 + 1) / _F(2)
    cx, cy = _F(x1) + half_w, _F(y1) + half_h
    if square:
        half_h = half_w = max(half_h, half_w)
    x1, x2 = _c_round(cx - half_w * context_scale), _c_round(cx + half_w * context_scale)
    y1, y2 = _c_round(cy - half_h * context_scale), _c_round(cy + half_h * context_scale)
    unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
    pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
    pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
    x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
    scale_x, scale_y = _F(crop) / _F(unclipped_w), _F(crop) / _F(unclipped_h)
    out_w = _c_round(_F(x2 - x1 + 1) * scale_x)
    out_h = _c_round(_F(y2 - y1 + 1) * scale_y)
    pad_h = _c_round(_F(pad_y1) * scale_y)
    pad_w = _c_round(_F(pad_x2 if mirror else pad_x1) * scale_x)
    # rounding may push the warped region past the crop
    return (x1, y1, x2, y2), (min(out_h, crop - pad_h), min(out_w, crop - pad_w)), (pad_h, pad_w)


class _WindowBatches:
    """Produces (data, labels) batches; runs in the prefetch thread."""

    def __init__(self, images, fg, bg, cached, opts, mean, rng):
        self.images, self.fg, self.bg, self.cached = images, fg, bg, cached
        self.opts = opts
        self.mean = mean
        self.rng = rng

    def _image(self, index):
        if self.cached is not None:
            return decode_image(self.cached[index], color=True, what=self.images[index][0])
        return read_image(self.images[index][0], is_color=True)

    def __call__(self, recycled):
        o = self.opts
        b, crop, channels = o["batch_size"], o["crop"], o["channels"]
        shape = (b, channels, crop, crop)
        data = recycled[0] if recycled is not None and recycled[0].shape == shape else \
            np.empty(shape, dtype=np.float32)
        data[...] = 0
        labels = np.empty((b,), dtype=np.float32)
        num_fg = int(_F(b) * _F(o["fg_fraction"]))
        item = 0
        for pool, count in ((self.bg, b - num_fg), (self.fg, num_fg)):
            for _ in range(count):
                window = pool[int(self.rng.integers(0, 2 ** 32)) % len(pool)]
                do_mirror = o["mirror"] and int(self.rng.integers(0, 2 ** 32)) % 2 == 1
                self._warp_into(data[item], window, do_mirror)
                labels[item] = window[1]
                item += 1
        return data, labels

    def _warp_into(self, out, window, do_mirror):
        o = self.opts
        img = self._image(int(window[0]))
        (x1, y1, x2, y2), (oh, ow), (ph, pw) = window_geometry(
            tuple(int(v) for v in window[2:]), img.shape[1:], o["crop"], o["context_pad"],
            o["square"], do_mirror)
        if not (0 <= x1 <= x2 < img.shape[2] and 0 <= y1 <= y2 < img.shape[1]) or oh <= 0 \
                or ow <= 0:
            raise MiniCaffeError(f"window ({x1}, {y1}, {x2}, {y2}) does not fit image "
                                 f"{self.images[int(window[0])][0]} of size "
                                 f"{img.shape[2]}x{img.shape[1]}")
        warped = resize_bilinear(img[:, y1:y2 + 1, x1:x2 + 1], oh, ow)
        if do_mirror:
            warped = warped[:, :, ::-1]
        pixels = warped.astype(np.float32)
        if self.mean is not None:
            mo = o["mean_off"]
            pixels -= self.mean[:, mo + ph:mo + ph + oh, mo + pw:mo + pw + ow]
        elif o["mean_values"] is not None:
            pixels -= o["mean_values"][:, None, None]
        out[:, ph:ph + oh, pw:pw + ow] = pixels * _F(o["scale"])


@register("WindowData")
class WindowDataLayer(PrefetchingDataLayer):
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.window_data_param
        tp = merged_transform_param(self.layer_param, p)
        if not p.source:
            self.fail("window_data_param.source (the window file) is not set")
        if p.batch_size <= 0:
            self.fail("window_data_param.batch_size must be positive")
        if tp.crop_size <= 0:
            self.fail("needs a positive crop_size (transform_param.crop_size)")
        if p.crop_mode not in ("warp", "square"):
            self.fail(f"crop_mode must be \"warp\" or \"square\", got {p.crop_mode!r}")
        if 2 * p.context_pad >= tp.crop_size:
            self.fail(f"context_pad {p.context_pad} leaves nothing of crop_size {tp.crop_size}")
        try:
            images, fg, bg = read_window_file(p.source, p.root_folder, p.fg_threshold,
                                              p.bg_threshold)
        except MiniCaffeError as e:
            self.fail(str(e))
        channels = images[-1][1][0]
        if channels != 3:
            self.fail(f"images are read in colour (3 channels), as Caffe does; the window file "
                      f"gives {channels}")
        num_fg = int(_F(p.batch_size) * _F(p.fg_fraction))
        for name, pool, count in (("foreground", fg, num_fg), ("background", bg,
                                                               p.batch_size - num_fg)):
            if count and not len(pool):
                self.fail(f"a batch takes {count} {name} windows but {p.source} has none")
        log.info("%s: %d images, %d foreground and %d background windows", self.name,
                 len(images), len(fg), len(bg))
        opts = dict(batch_size=int(p.batch_size), crop=int(tp.crop_size), channels=channels,
                    fg_fraction=p.fg_fraction, mirror=bool(tp.mirror),
                    context_pad=int(p.context_pad), square=p.crop_mode == "square",
                    scale=p.scale if p.HasField("scale") else tp.scale, mean_off=0,
                    mean_values=self._mean_values(tp, channels))
        mean = self._mean_image(tp, opts)
        cached = None
        if p.cache_images:
            cached = []
            for path, _ in images:
                try:
                    with open(path, "rb") as f:
                        cached.append(f.read())
                except OSError as e:
                    self.fail(f"could not open or find file {path}: {e}")
        top[0].reshape((opts["batch_size"], channels, opts["crop"], opts["crop"]))
        top[1].reshape((opts["batch_size"],))
        self._start(_WindowBatches(images, fg, bg, cached, opts, mean, self._dedicated_rng()),
                    int(self.layer_param.data_param.prefetch))

    def _mean_values(self, tp, channels):
        if not len(tp.mean_value):
            return None
        if tp.HasField("mean_file"):
            self.fail("cannot specify mean_file and mean_value at the same time")
        if len(tp.mean_value) not in (1, channels):
            self.fail(f"specify either 1 mean_value or as many as channels: {channels}")
        return np.resize(np.asarray(tp.mean_value, dtype=np.float32), channels)

    def _mean_image(self, tp, opts):
        if not tp.HasField("mean_file"):
            return None
        from ..io.protobinary import read_mean
        try:
            mean = np.asarray(read_mean(tp.mean_file), dtype=np.float32)
        except Exception as e:
            self.fail(f"cannot read mean_file {tp.mean_file}: {e}")
        crop = opts["crop"]
        if mean.ndim != 3 or mean.shape[0] != opts["channels"]:
            self.fail(f"mean_file {tp.mean_file} holds shape {mean.shape}; expected "
                      f"({opts['channels']}, H, W)")
        opts["mean_off"] = (mean.shape[2] - crop) // 2
        if opts["mean_off"] < 0 or mean.shape[1] < opts["mean_off"] + crop:
            self.fail(f"mean image {mean.shape[1]}x{mean.shape[2]} is smaller than the "
                      f"{crop}x{crop} crop")
        return mean

"""transform_param fields of SSD's fork (weiliu89/caffe, branch ssd) for Data and ImageData.

SSD's DataTransformer resizes (``resize_param``) and then distorts (``noise_param``) every
decoded image before the usual crop, mirror, mean and scale, in every phase (neither step
looks at its ``prob``). ``distort_param``, ``expand_param`` and ``emit_constraint`` are only
read by SSD's AnnotatedData layer: for Data and ImageData they change nothing, so they are
reported once and ignored. Noise steps that are not implemented here (hist_eq, clahe,
convert_to_hsv, convert_to_lab) and interpolations other than LINEAR and NEAREST change the
computation in every phase, so they stop with an error.

Images are (C, H, W) uint8 arrays in BGR order, as everywhere in minicaffe.data.
"""
import io
import logging

import numpy as np

from ..proto import caffe_pb2
from .image import decode_image, resize_bilinear

log = logging.getLogger("minicaffe")
_RESIZE = caffe_pb2.ResizeParameter
_IGNORED = ("distort_param", "expand_param", "emit_constraint")
_NOISE_UNSUPPORTED = ("hist_eq", "clahe", "convert_to_hsv", "convert_to_lab")
_warned = set()


def warn_once(where, field, source=None):
    """Log once per (layer, field) that a fork field has no effect here."""
    if (where, field) in _warned:
        return
    _warned.add((where, field))
    in_file = f"{source}: " if source else ""
    log.warning("%s%s%s is ignored: SSD's fork reads it only in its AnnotatedData layer, and "
                "it cannot change what this layer computes", in_file, where, field)


def warn_ignored_fields(net_param, source=None):
    """Warn (once per layer and field) about the ignored fork fields in a NetParameter."""
    for lp in net_param.layer:
        if lp.HasField("transform_param"):
            for field in _IGNORED:
                if lp.transform_param.HasField(field):
                    warn_once(f"{lp.type} layer '{lp.name}': ", field, source)


def _nearest_taps(n_src, n_dst):
    return np.minimum(np.floor(np.arange(n_dst) * (n_src / n_dst)).astype(np.int64), n_src - 1)


def _resize(chw, height, width, interp):
    if interp == _RESIZE.NEAREST:
        return chw[:, _nearest_taps(chw.shape[1], height)][:, :, _nearest_taps(chw.shape[2],
                                                                               width)]
    return resize_bilinear(chw, height, width)


def _gaussian_blur(chw):
    """OpenCV's GaussianBlur(7x7, sigma 1.5) with its reflect-101 border."""
    k = np.exp(-((np.arange(7) - 3.0) ** 2) / (2 * 1.5 ** 2))
    k /= k.sum()
    f = np.pad(chw.astype(np.float64), ((0, 0), (3, 3), (3, 3)), mode="reflect")
    h, w = chw.shape[1:]
    rows = sum(k[i] * f[:, i:i + h, :] for i in range(7))
    out = sum(k[i] * rows[:, :, i:i + w] for i in range(7))
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def _erode(chw):
    """OpenCV's erode with its 3x3 MORPH_ELLIPSE (a cross); the border does not count."""
    f = np.pad(chw, ((0, 0), (1, 1), (1, 1)), constant_values=255)
    h, w = chw.shape[1:]
    return np.minimum.reduce([f[:, 1:h + 1, 1:w + 1], f[:, :h, 1:w + 1], f[:, 2:, 1:w + 1],
                              f[:, 1:h + 1, :w], f[:, 1:h + 1, 2:]])


def _jpeg(chw, quality):
    from PIL import Image
    src = chw if chw.shape[0] != 1 else np.repeat(chw, 3, axis=0)
    img = Image.fromarray(np.ascontiguousarray(src[[2, 1, 0]].transpose(1, 2, 0)), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return decode_image(buf.getvalue(), color=True)


class ForkTransforms:
    """The resize and noise steps of one layer's transform_param (a no-op when neither is set)."""

    def __init__(self, param, fail, where=""):
        self.fail = fail
        self.resize = param.resize_param if param.HasField("resize_param") else None
        self.noise = param.noise_param if param.HasField("noise_param") else None
        self.active = self.resize is not None or self.noise is not None
        for field in _IGNORED:
            if param.HasField(field):
                warn_once(where, field)
        r = self.resize
        if r is not None:
            if r.height <= 0 or r.width <= 0:
                fail("resize_param needs height and width > 0")
            bad = [_RESIZE.Interp_mode.Name(m) for m in r.interp_mode
                   if m not in (_RESIZE.LINEAR, _RESIZE.NEAREST)]
            if bad:
                fail(f"resize_param.interp_mode {', '.join(bad)} is not implemented (LINEAR and "
                     "NEAREST are); it changes the images in every phase")
        n = self.noise
        if n is not None:
            bad = [f for f in _NOISE_UNSUPPORTED if getattr(n, f)]
            if bad:
                fail(f"noise_param.{', '.join(bad)} is not implemented; SSD applies noise_param "
                     "in every phase, so it would change the TEST computation")
            if n.saltpepper and not len(n.saltpepper_param.value):
                fail("noise_param.saltpepper needs saltpepper_param.value")

    # -- shapes ----------------------------------------------------------------------------------
    def resized_chw(self, chw):
        """The (C, H, W) an image of shape ``chw`` has after resize_param (SSD's InferNewSize)."""
        c, h, w = (int(s) for s in chw)
        r = self.resize
        if r is None:
            return (c, h, w)
        height, width = int(r.height), int(r.width)
        if r.resize_mode == _RESIZE.FIT_SMALL_SIZE:
            orig = np.float32(w) / np.float32(h)
            if orig < np.float32(width) / np.float32(height):
                height = int(np.float32(width) / orig)
            else:
                width = int(orig * np.float32(height))
        return (c, height, width)

    # -- images ----------------------------------------------------------------------------------
    def apply(self, images, rng):
        """The batch (an (N, C, H, W) array or a list of (C, H, W) arrays) resized and noised,
        as a list; unchanged when neither step is set."""
        if not self.active:
            return images
        out = []
        for a in images:
            a = np.asarray(a)
            if self.resize is not None:
                a = self._apply_resize(a, rng)
            if self.noise is not None:
                a = self._apply_noise(a, rng)
            out.append(a)
        return out

    def _pad_values(self, c):
        vals = list(self.resize.pad_value) or [0.0]
        if len(vals) not in (1, c):
            self.fail(f"specify either 1 pad_value or as many as channels: {c}")
        vals = (vals * c)[:c] if len(vals) == 1 else vals
        vals = [v if i < 3 else 0.0 for i, v in enumerate(vals)]  # cv::Scalar holds 3 here
        return np.clip(np.round(vals), 0, 255)

    def _apply_resize(self, chw, rng):
        r = self.resize
        modes = list(r.interp_mode)
        interp = modes[int(rng.integers(0, len(modes)))] if len(modes) > 1 else \
            (modes[0] if modes else _RESIZE.LINEAR)
        c, h, w = chw.shape
        height, width = int(r.height), int(r.width)
        if r.resize_mode == _RESIZE.WARP:
            return _resize(chw, height, width, interp)
        _, nh, nw = self.resized_chw(chw.shape)
        if r.resize_mode == _RESIZE.FIT_SMALL_SIZE:
            return _resize(chw, nh, nw, interp)
        orig = np.float32(w) / np.float32(h)
        if orig > np.float32(width) / np.float32(height):
            rh, rw = int(np.floor(np.float32(width) / orig)), width
        else:
            rh, rw = height, int(np.floor(orig * np.float32(height)))
        small = _resize(chw, rh, rw, interp)
        top, left = (height - rh) // 2, (width - rw) // 2
        pads = ((0, 0), (top, height - rh - top), (left, width - rw - left))
        if r.pad_mode == _RESIZE.MIRRORED:
            return np.pad(small, pads, mode="reflect")
        if r.pad_mode == _RESIZE.REPEAT_NEAREST:
            return np.pad(small, pads, mode="edge")
        out = np.empty((c, height, width), dtype=small.dtype)
        out[...] = self._pad_values(c).astype(small.dtype)[:, None, None]
        out[:, top:top + rh, left:left + rw] = small
        return out

    def _apply_noise(self, chw, rng):
        n = self.noise
        if chw.dtype != np.uint8:
            self.fail("noise_param needs 8-bit images")
        a = chw
        if n.decolorize and a.shape[0] == 3:
            b, g, r = (a[i].astype(np.int64) for i in range(3))
            grey = ((b * 1868 + g * 9617 + r * 4899 + (1 << 13)) >> 14).astype(np.uint8)
            a = np.stack([grey] * 3)
        if n.gauss_blur:
            a = _gaussian_blur(a)
        if n.jpeg > 0:
            a = _jpeg(a, n.jpeg)
        if n.erode:
            a = _erode(a)
        if n.posterize:
            a = (a // 64 * 64 + 32).astype(np.uint8)
        if n.inverse:
            a = 255 - a
        if n.saltpepper:
            a = self._salt_pepper(a, rng)
        return a

    def _salt_pepper(self, chw, rng):
        p = self.noise.saltpepper_param
        c, h, w = chw.shape
        vals = [int(v) & 0xFF for v in p.value]
        if len(vals) not in (1, c):
            self.fail(f"specify either 1 saltpepper value or as many as channels: {c}")
        vals = np.array(vals * c if len(vals) == 1 else vals, dtype=np.uint8)
        k = int(np.floor(np.float32(p.fraction) * w * h))
        if k <= 0 or c not in (1, 3):
            return chw
        out = chw.copy()
        cols = rng.integers(0, w, size=k)
        rows = rng.integers(0, h, size=k)
        out[:, rows, cols] = vals[:, None]
        return out

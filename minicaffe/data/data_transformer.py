"""Caffe's DataTransformer (``transform_param``), vectorised over a batch.

Per image, Caffe does: pick ``mirror = param.mirror and Rand(2)`` (in every phase: the flag is
not restricted to TRAIN), pick the crop offsets (random in TRAIN, centred in TEST), and write

    top[c, h, w'] = (x[c, h_off + h, w_off + w] - mean[c, h_off + h, w_off + w]) * scale

where ``w' = crop_w - 1 - w`` for a mirrored image and ``w`` otherwise; ``mean`` is the
mean_file image (cropped at the same offsets, before the flip) or the per-channel mean_value,
and the arithmetic is float32 as in Caffe. Encoded Datums are decoded first (BGR, as OpenCV
gives); force_color / force_gray pick the decoding mode and only apply to encoded data.

Randomness comes from the generator passed in (a data layer seeds a dedicated one from
``backend.rng()`` because it transforms in its prefetch thread).
"""
import logging

import numpy as np

from .. import backend
from ..errors import LayerError
from ..proto import caffe_pb2
from .db import datum_to_array
from .fork_transforms import ForkTransforms

log = logging.getLogger("minicaffe")


class DataTransformer:
    def __init__(self, param=None, phase=caffe_pb2.TRAIN, rng=None, name=""):
        self.param = param if param is not None else caffe_pb2.TransformationParameter()
        self.phase = phase
        self._rng = rng
        self.prefix = name
        p = self.param
        if p.HasField("mean_file") and len(p.mean_value):
            self.fail("cannot specify mean_file and mean_value at the same time")
        if p.force_color and p.force_gray:
            self.fail("cannot set both force_color and force_gray")
        self.scale = np.float32(p.scale)
        self.crop = int(p.crop_size)
        self.mirror = bool(p.mirror)
        self.mean = None
        if p.HasField("mean_file"):
            from ..io.protobinary import read_mean
            try:
                mean = read_mean(p.mean_file)
            except Exception as e:
                self.fail(f"cannot read mean_file: {e}")
            if mean.ndim != 3:
                self.fail(f"mean_file {p.mean_file} holds a blob of shape {mean.shape}; "
                          "expected one (C, H, W) image (shape 1 x C x H x W)")
            self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.mean_values = np.asarray(p.mean_value, dtype=np.float32) if len(p.mean_value) \
            else None
        self._warned_force = False
        self.fork = ForkTransforms(p, self.fail, name)

    # -- helpers ---------------------------------------------------------------------------------
    def fail(self, message):
        raise LayerError(f"{self.prefix}{message}" if self.prefix else message)

    @property
    def rng(self):
        return self._rng if self._rng is not None else backend.rng()

    @property
    def color(self):
        """Decoding mode for encoded data: True force colour, False force grey, None native."""
        if self.param.force_color:
            return True
        if self.param.force_gray:
            return False
        return None

    @property
    def needs_rand(self):
        return self.mirror or (self.phase == caffe_pb2.TRAIN and self.crop > 0)

    def datum_array(self, datum, what="datum"):
        """A Datum's (C, H, W) array, decoding encoded data with force_color / force_gray."""
        if not datum.encoded and (self.param.force_color or self.param.force_gray) \
                and not self._warned_force:
            log.error("%sforce_color and force_gray only apply to encoded datums", self.prefix)
            self._warned_force = True
        try:
            return datum_to_array(datum, color=self.color, what=what)
        except LayerError:
            raise
        except Exception as e:
            self.fail(str(e))

    def infer_shape(self, chw):
        """Output (C, h, w) for an input image of shape (C, H, W)."""
        return self._crop_shape(self.fork.resized_chw(chw))

    def _crop_shape(self, chw):
        c, h, w = (int(s) for s in chw)
        if c <= 0:
            self.fail(f"input image has {c} channels")
        if self.crop:
            if h < self.crop or w < self.crop:
                self.fail(f"crop_size {self.crop} is larger than the {h}x{w} input image")
            return (c, self.crop, self.crop)
        return (c, h, w)

    def _check_mean(self, chw):
        c = chw[0]
        if self.mean is not None and tuple(self.mean.shape) != tuple(chw):
            self.fail(f"mean_file shape {tuple(self.mean.shape)} does not match the input "
                      f"image shape {tuple(chw)}")
        if self.mean_values is not None and len(self.mean_values) not in (1, c):
            self.fail(f"specify either 1 mean_value or as many as channels ({c}); got "
                      f"{len(self.mean_values)}")

    # -- random choices --------------------------------------------------------------------------
    def _draw(self, heights, widths):
        """Per-image mirror flags and crop offsets (same draws whatever the batch layout)."""
        n = len(heights)
        if self.mirror:
            mirror = self.rng.integers(0, 2, size=n).astype(bool)
        else:
            mirror = np.zeros(n, dtype=bool)
        heights = np.asarray(heights, dtype=np.int64)
        widths = np.asarray(widths, dtype=np.int64)
        if self.crop:
            if self.phase == caffe_pb2.TRAIN:
                h_off = self.rng.integers(0, heights - self.crop + 1)
                w_off = self.rng.integers(0, widths - self.crop + 1)
            else:
                h_off = (heights - self.crop) // 2
                w_off = (widths - self.crop) // 2
        else:
            h_off = np.zeros(n, dtype=np.int64)
            w_off = np.zeros(n, dtype=np.int64)
        return mirror, np.asarray(h_off, np.int64), np.asarray(w_off, np.int64)

    # -- the transform ---------------------------------------------------------------------------
    def transform(self, images, out=None, choices=None):
        """Transform a batch: a (N, C, H, W) array, or a list of (C, H, W) arrays (sizes may
        differ when crop_size makes the outputs equal). Returns float32 (N, C, h, w).

        ``choices`` = (mirror, h_off, w_off) arrays overrides the random draws (for tests).
        """
        images = self.fork.apply(images, self.rng)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            stacked = images
            shapes = [images.shape[1:]] * images.shape[0]
        else:
            images = [np.asarray(a) for a in images]
            shapes = [a.shape for a in images]
            stacked = np.stack(images) if len(set(shapes)) == 1 else None
        n = len(shapes)
        if n == 0:
            self.fail("no images to transform")
        out_shapes = {self._crop_shape(s) for s in shapes}
        if len(out_shapes) != 1:
            self.fail("the images of a batch give different output shapes "
                      f"{sorted(out_shapes)}; set crop_size (or resize) so they agree")
        oshape = out_shapes.pop()
        for s in set(tuple(s) for s in shapes):
            self._check_mean(s)
        if choices is None:
            mirror, h_off, w_off = self._draw([s[1] for s in shapes], [s[2] for s in shapes])
        else:
            mirror, h_off, w_off = (np.asarray(a) for a in choices)
            mirror = mirror.astype(bool)
        if out is None:
            out = np.empty((n,) + oshape, dtype=np.float32)
        elif out.shape != (n,) + oshape:
            self.fail(f"transform output has shape {out.shape}, expected {(n,) + oshape}")
        if stacked is not None:
            self._apply(stacked, h_off, w_off, mirror, out)
        else:  # images of different sizes: each one vectorised on its own
            for i, a in enumerate(images):
                self._apply(a[None], h_off[i:i + 1], w_off[i:i + 1], mirror[i:i + 1],
                            out[i:i + 1])
        return out

    def _crop(self, x, h_off, w_off, h, w):
        """x[(n), :, h_off:h_off+h, w_off:w_off+w] per item; x is (N, C, H, W)."""
        if h == x.shape[2] and w == x.shape[3]:
            return x
        if (h_off == h_off[0]).all() and (w_off == w_off[0]).all():
            h0, w0 = int(h_off[0]), int(w_off[0])
            return x[:, :, h0:h0 + h, w0:w0 + w]
        n, c = len(h_off), x.shape[1]
        rows = h_off[:, None] + np.arange(h)
        cols = w_off[:, None] + np.arange(w)
        return x[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]

    def _apply(self, x, h_off, w_off, mirror, out):
        n, c, h, w = out.shape
        xc = self._crop(x, h_off, w_off, h, w)
        if self.mean is not None:
            mean = self._crop(np.broadcast_to(self.mean, (n,) + self.mean.shape),
                              h_off, w_off, h, w)
            np.subtract(xc, mean, out=out, dtype=np.float32, casting="unsafe")
            np.multiply(out, self.scale, out=out)
        elif self.mean_values is not None:
            mv = self.mean_values if len(self.mean_values) == c \
                else np.repeat(self.mean_values, c)
            np.subtract(xc, mv[None, :, None, None], out=out, dtype=np.float32,
                        casting="unsafe")
            np.multiply(out, self.scale, out=out)
        elif self.scale != 1:
            np.multiply(xc, self.scale, out=out, dtype=np.float32, casting="unsafe")
        else:
            out[...] = xc
        if mirror.any():
            out[mirror] = out[mirror][..., ::-1]
        return out

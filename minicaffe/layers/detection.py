"""SSD's layers (weiliu89/caffe, branch ssd): Normalize, Permute, PriorBox, DetectionOutput.

Normalize (norm_param) scales each item by its L2 norm, over the whole item
(``across_spatial``) or per spatial position across channels, then by a learned scale
(one value, or one per channel):  y = s * x / sqrt(sum x^2 + eps).

Permute (permute_param) reorders axes; the listed ``order`` is completed by the axes it omits
in increasing order.

PriorBox (prior_box_param) writes one set of default boxes for the feature map bottom[0] and
the image bottom[1]: top (1, 2, H*W*P*4), channel 0 the boxes (xmin, ymin, xmax, ymax)
normalised by the image size, channel 1 their variances. Per cell, per min_size: the square
min box, then the square sqrt(min*max) box, then one box per other aspect ratio.

DetectionOutput (detection_output_param) decodes the location predictions against the priors,
runs per-class NMS and keeps ``keep_top_k`` per image: top (1, 1, K, 7) rows of
[image_id, label, score, xmin, ymin, xmax, ymax] (one row of -1 per image when none).
"""
import logging
import math

import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2
from .box_decoding import decode_boxes, nms_fast

log = logging.getLogger("minicaffe")


@register("Normalize")
class NormalizeLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.norm_param
        if bottom[0].num_axes < 2:
            self.fail("bottom must have at least 2 axes")
        self.across_spatial = bool(p.across_spatial)
        self.channel_shared = bool(p.channel_shared)
        self.eps = float(np.float32(p.eps))
        channels = bottom[0].shape[1]
        shape = () if self.channel_shared else (channels,)
        if self.blobs:
            if self.blobs[0].count != (1 if self.channel_shared else channels):
                self.fail("Scale size is inconsistent with prototxt config")
        else:
            filler = p.scale_filler
            if not p.HasField("scale_filler"):
                filler = caffe_pb2.FillerParameter(type="constant", value=1.0)
            self.blobs = [self.make_param_blob(shape, filler)]

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            self.fail("cannot run in place (backward needs the input)")
        top[0].reshape(bottom[0].shape)

    def _views(self, bottom):
        x = bottom[0].xdata
        return x.reshape(x.shape[0], x.shape[1], bottom[0].count_range(2))   # not -1: N may be 0

    def _scale(self, x3):
        s = self.blobs[0].xdata
        return s.reshape(()) if self.channel_shared else s.reshape(1, -1, 1)

    def _norm(self, xp, x3):
        axes = (1, 2) if self.across_spatial else (1,)
        return xp.sqrt((x3 * x3).sum(axis=axes, keepdims=True) + self.eps)

    def forward(self, bottom, top):
        xp = self.xp_of(bottom[0])
        x3 = self._views(bottom)
        self._norm_data = self._norm(xp, x3)
        y3 = top[0].xdata.reshape(x3.shape)
        xp.divide(x3, self._norm_data, out=y3)
        y3 *= self._scale(x3)

    def backward(self, top, propagate_down, bottom):
        xp = self.xp_of(top[0])
        x3 = self._views(bottom)
        dy = top[0].xdiff.reshape(x3.shape)
        norm = self._norm(xp, x3)
        xhat = x3 / norm
        if self.param_propagate_down[0]:
            g = xhat * dy
            ds = self.blobs[0].xdiff
            if self.channel_shared:
                ds += g.sum()
            else:
                ds += g.sum(axis=(0, 2))
        if propagate_down[0]:
            # Exact gradient of s * x / |x|; SSD's own backward applies a per-channel scale
            # after the projection, which is only right when all scales are equal.
            g = dy * self._scale(x3)
            axes = (1, 2) if self.across_spatial else (1,)
            dot = (xhat * g).sum(axis=axes, keepdims=True)
            dx = bottom[0].xdiff.reshape(x3.shape)
            xp.subtract(g, xhat * dot, out=dx)
            dx /= norm


@register("Permute")
class PermuteLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        n = bottom[0].num_axes
        order = []
        for o in self.layer_param.permute_param.order:
            if o >= n:
                self.fail(f"order {o} should be less than the input dimension {n}")
            if o in order:
                self.fail("there are duplicate orders")
            order.append(int(o))
        self.order = tuple(order + [i for i in range(n) if i not in order])
        self.inverse = tuple(int(i) for i in np.argsort(self.order))

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            self.fail("cannot run in place")
        top[0].reshape(tuple(bottom[0].shape[o] for o in self.order))

    def forward(self, bottom, top):
        top[0].xdata[...] = bottom[0].xdata.transpose(self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].xdiff[...] = top[0].xdiff.transpose(self.inverse)


def _pair_or_single(layer, p, single, h_name, w_name):
    """(h, w) from ``single`` or from the ``h_name``/``w_name`` pair (SSD: not both); 0 unset."""
    if p.HasField(h_name) or p.HasField(w_name):
        if p.HasField(single):
            layer.fail(f"either {single} or {h_name}/{w_name} should be specified; not both")
        h, w = getattr(p, h_name), getattr(p, w_name)
        if h <= 0 or w <= 0:
            layer.fail(f"{h_name} and {w_name} should be larger than 0")
        return h, w
    if p.HasField(single):
        v = getattr(p, single)
        if v <= 0:
            layer.fail(f"{single} should be larger than 0")
        return v, v
    return 0, 0


@register("PriorBox")
class PriorBoxLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.prior_box_param
        if not len(p.min_size):
            self.fail("must provide min_size")
        # not (0 < s < inf) also catches NaN, which int() below cannot take
        if any(not 0 < s < math.inf for s in p.min_size):
            self.fail(f"min_size must be positive and finite, got {list(p.min_size)}")
        # SSD keeps the sizes in ints when it builds the boxes.
        self.min_sizes = [int(s) for s in p.min_size]
        ratios = [1.0]
        if any(not 0 < ar < math.inf for ar in p.aspect_ratio):
            self.fail(f"aspect_ratio must be positive and finite, got {list(p.aspect_ratio)}")
        for ar in p.aspect_ratio:
            if any(abs(ar - r) < 1e-6 for r in ratios):
                continue
            ratios.append(float(ar))
            if p.flip:
                ratios.append(float(np.float32(1.0 / ar)))
        self.ratios = ratios
        self.max_sizes = []
        if len(p.max_size):
            if len(p.max_size) != len(p.min_size):
                self.fail("give as many max_size as min_size values")
            for lo, hi in zip(p.min_size, p.max_size):
                if not lo < hi < math.inf:
                    self.fail("max_size must be greater than min_size, and finite")
            self.max_sizes = [int(s) for s in p.max_size]
        self.num_priors = len(ratios) * len(self.min_sizes) + len(self.max_sizes)
        var = list(p.variance)
        if len(var) > 1 and len(var) != 4:
            self.fail(f"give 1 or 4 variance values, got {len(var)}")
        if any(v <= 0 for v in var):
            self.fail("variance must be positive")
        self.variance = var or [0.1]
        self.img_hw = _pair_or_single(self, p, "img_size", "img_h", "img_w")
        self.step_hw = _pair_or_single(self, p, "step", "step_h", "step_w")
        self.offset = float(p.offset)
        self.clip = bool(p.clip)

    def reshape(self, bottom, top):
        h, w = bottom[0].height, bottom[0].width
        top[0].reshape((1, 2, h * w * self.num_priors * 4))

    def _cell_boxes(self):
        """(P, 2) widths and heights of one cell's priors, in SSD's order."""
        sizes = []
        for k, m in enumerate(self.min_sizes):
            sizes.append((m, m))
            if self.max_sizes:
                s = math.sqrt(m * self.max_sizes[k])
                sizes.append((s, s))
            for ar in self.ratios:
                if abs(ar - 1.0) >= 1e-6:
                    sizes.append((m * math.sqrt(ar), m / math.sqrt(ar)))
        return np.array(sizes, dtype=np.float64)

    def forward(self, bottom, top):
        fh, fw = bottom[0].height, bottom[0].width
        if fh * fw == 0:
            return      # no cells, an empty top (Caffe's loops run zero times)
        img_h, img_w = self.img_hw
        if img_h == 0 or img_w == 0:
            img_h, img_w = bottom[1].height, bottom[1].width
        step_h, step_w = self.step_hw
        if step_h == 0 or step_w == 0:
            step_h, step_w = img_h / fh, img_w / fw
        cx = (np.arange(fw) + self.offset) * step_w
        cy = (np.arange(fh) + self.offset) * step_h
        wh = self._cell_boxes() / 2.0
        cxg = np.broadcast_to(cx[None, :, None], (fh, fw, len(wh)))
        cyg = np.broadcast_to(cy[:, None, None], (fh, fw, len(wh)))
        boxes = np.stack([(cxg - wh[:, 0]) / img_w, (cyg - wh[:, 1]) / img_h,
                          (cxg + wh[:, 0]) / img_w, (cyg + wh[:, 1]) / img_h], axis=-1)
        boxes = boxes.reshape(-1)
        if self.clip:
            boxes = np.clip(boxes, 0.0, 1.0)
        var = np.resize(np.asarray(self.variance, np.float64), boxes.size)
        top[0].data = np.stack([boxes, var])[None]

    def backward(self, top, propagate_down, bottom):
        pass  # priors do not depend on the values of the bottoms


@register("DetectionOutput")
class DetectionOutputLayer(Layer):
    min_num_bottom = 3
    max_num_bottom = 4
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.detection_output_param
        if not p.HasField("num_classes"):
            self.fail("must specify num_classes")
        self.num_classes = int(p.num_classes)
        self.share_location = bool(p.share_location)
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background = int(p.background_label_id)
        if self.share_location and self.background == -1:
            # The shared predictions carry label -1 and are skipped as "background"; SSD
            # stops at its first lookup, as here, only earlier.
            self.fail("Could not find location predictions for label -1 (share_location "
                      "with background_label_id -1)")
        self.code_type = p.code_type
        self.variance_in_target = bool(p.variance_encoded_in_target)
        self.keep_top_k = int(p.keep_top_k)
        self.threshold = float(p.confidence_threshold) if p.HasField("confidence_threshold") \
            else -np.finfo(np.float32).max
        nms = p.nms_param
        self.nms_threshold = float(nms.nms_threshold)
        if self.nms_threshold < 0:
            self.fail("nms_threshold must be non negative")
        self.eta = float(nms.eta)
        if not 0 < self.eta <= 1:
            self.fail("nms_param.eta must be in (0, 1]")
        self.top_k = int(nms.top_k) if nms.HasField("top_k") else -1
        if p.save_output_param.output_directory or p.visualize:
            log.warning("%s layer '%s': save_output_param and visualize are not implemented; "
                        "the detections are only written to the top blob", self.type, self.name)

    def reshape(self, bottom, top):
        if bottom[0].num != bottom[1].num:
            self.fail("location and confidence bottoms have different batch sizes")
        self.num_priors = bottom[2].height // 4
        if self.num_priors * self.num_loc_classes * 4 != bottom[0].count_range(1):
            self.fail("Number of priors must match number of location predictions.")
        if self.num_priors * self.num_classes != bottom[1].count_range(1):
            self.fail("Number of priors must match number of confidence predictions.")
        if bottom[2].count < 2 * self.num_priors * 4:
            self.fail(f"the prior bottom holds {bottom[2].count} values; {self.num_priors} "
                      f"priors need {2 * self.num_priors * 4} (boxes, then variances)",
                      ShapeError)
        top[0].reshape((1, 1, 1, 7))

    def forward(self, bottom, top):
        n, p, c = bottom[0].num, self.num_priors, self.num_classes
        loc = bottom[0].cpu_data().reshape(n, p, self.num_loc_classes, 4)
        conf = bottom[1].cpu_data().reshape(n, p, c)
        prior = bottom[2].cpu_data().reshape(-1)[:2 * p * 4].reshape(2, p, 4)
        rows = []
        for i in range(n):
            rows.extend(self._detect(i, loc[i], conf[i], prior))
        if rows:
            out = np.asarray(rows, dtype=np.float64)
        else:
            log.info("%s: couldn't find any detections", self.name)
            out = np.full((n, 7), -1.0)
            out[:, 0] = np.arange(n)
        top[0].reshape((1, 1, len(out), 7))
        top[0].data = out[None, None]

    def _detect(self, image, loc, conf, prior):
        decoded = {}
        for lc in range(self.num_loc_classes):
            label = -1 if self.share_location else lc
            if label == self.background:
                continue
            decoded[label] = decode_boxes(prior[0], prior[1], loc[:, lc], self.code_type,
                                          self.variance_in_target, self.fail)
        kept = {}
        for cls in range(self.num_classes):
            if cls == self.background:
                continue
            boxes = decoded[-1 if self.share_location else cls]
            kept[cls] = nms_fast(boxes, conf[:, cls], self.threshold, self.nms_threshold,
                                 self.eta, self.top_k)
        total = sum(len(v) for v in kept.values())
        if -1 < self.keep_top_k < total:
            pairs = [(float(conf[j, cls]), cls, j) for cls, idx in kept.items() for j in idx]
            pairs.sort(key=lambda t: -t[0])
            kept = {}
            for _, cls, j in pairs[:self.keep_top_k]:
                kept.setdefault(cls, []).append(j)
        rows = []
        for cls in sorted(kept):
            boxes = decoded[-1 if self.share_location else cls]
            for j in kept[cls]:
                rows.append([image, cls, conf[j, cls]] + list(boxes[j]))
        return rows

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            self.fail("has no backward (SSD does not implement it)")

"""Box decoding and greedy non-maximum suppression, as SSD's bbox_util does them.

Boxes are (xmin, ymin, xmax, ymax) rows in image-normalised coordinates.
"""
import numpy as np

from ..proto import caffe_pb2

_CODE = caffe_pb2.PriorBoxParameter


def decode_boxes(priors, variances, loc, code_type, variance_in_target, fail):
    """Decode (P, 4) location predictions ``loc`` against (P, 4) priors and variances."""
    priors = np.asarray(priors, np.float64)
    loc = np.asarray(loc, np.float64)
    var = np.ones_like(priors) if variance_in_target else np.asarray(variances, np.float64)
    if code_type == _CODE.CORNER:
        return priors + var * loc
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    if (pw <= 0).any() or (ph <= 0).any():
        fail("a prior box has no area")
    if code_type == _CODE.CORNER_SIZE:
        size = np.stack([pw, ph, pw, ph], axis=1)
        return priors + var * loc * size
    if code_type == _CODE.CENTER_SIZE:
        cx = var[:, 0] * loc[:, 0] * pw + (priors[:, 0] + priors[:, 2]) / 2
        cy = var[:, 1] * loc[:, 1] * ph + (priors[:, 1] + priors[:, 3]) / 2
        w = np.exp(var[:, 2] * loc[:, 2]) * pw
        h = np.exp(var[:, 3] * loc[:, 3]) * ph
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    fail(f"unknown code_type {code_type}")


def box_areas(boxes):
    """Width * height, 0 for a box with xmax < xmin or ymax < ymin."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return np.where((w < 0) | (h < 0), 0.0, w * h)


def jaccard(box, boxes):
    """Intersection over union of one box with each of ``boxes``."""
    apart = (boxes[:, 0] > box[2]) | (boxes[:, 2] < box[0]) | \
        (boxes[:, 1] > box[3]) | (boxes[:, 3] < box[1])
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = iw * ih
    overlap = (~apart) & (iw > 0) & (ih > 0)
    union = box_areas(box) + box_areas(boxes) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def nms_fast(boxes, scores, score_threshold, nms_threshold, eta=1.0, top_k=-1):
    """Indices kept by greedy NMS over the boxes scoring above ``score_threshold``, best first
    (at most ``top_k`` candidates; an ``eta`` < 1 lowers the threshold after each keep while
    it is above 0.5)."""
    scores = np.asarray(scores)
    cand = np.flatnonzero(scores > score_threshold)
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    if -1 < top_k < len(cand):
        cand = cand[:top_k]
    kept = []
    threshold = nms_threshold
    for idx in cand:
        keep = not kept or bool((jaccard(boxes[idx], boxes[kept]) <= threshold).all())
        if keep:
            kept.append(int(idx))
            if eta < 1 and threshold > 0.5:
                threshold *= eta
    return kept

"""More of Caffe's loss layers: MultinomialLogisticLoss, HingeLoss, InfogainLoss and
ContrastiveLoss, with BVLC Caffe's parameters, normalisation and gradients.

Like the layers in loss.py, top 0 is a 0-axis blob and backward scales every gradient by the
loss weight the net keeps in ``top[0].xdiff``. Labels are read as integers by truncation
(Caffe's static_cast<int>); labels out of range raise an error naming the layer.

* MultinomialLogisticLoss: bottom 0 holds probabilities (N, ...), bottom 1 one label per item;
  loss = -sum_n log(max(p[n, label_n], 1e-20)) / N.
* HingeLoss (hinge_loss_param.norm L1 or L2): with t = +1 at the label and -1 elsewhere,
  loss = sum max(0, 1 - t x) / N (L1) or sum max(0, 1 - t x)^2 / N (L2).
* InfogainLoss (infogain_loss_param): softmax of bottom 0 along ``axis``, then
  loss = -sum_positions sum_l H[label, l] log(max(p_l, 1e-20)) / normalizer; H is read from
  ``source`` (a binaryproto) or given as a third bottom; optional top 1 = the probabilities;
  loss_param.ignore_label and loss_param.normalization (default VALID) as in Caffe.
* ContrastiveLoss (contrastive_loss_param): bottoms a, b (N, C) and a similarity flag (N,);
  loss = sum(similar: d^2, dissimilar: max(margin - d, 0)^2) / (2N) with d = ||a - b||, or with
  legacy_version max(margin - d^2, 0) for dissimilar pairs.
"""
import numpy as np

from ..backend import get_array_module as _module
from ..errors import ShapeError
from ..io import read_blobproto
from ..io.protobinary import blobproto_to_array
from ..layer import register
from ..proto import caffe_pb2
from .loss import LossLayer, _buffer, _class_dims, _labels, _softmax3

_LOG_THRESHOLD = 1e-20     # Caffe's kLOG_THRESHOLD


def _fmt(shape):
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _legacy_dims(layer, blob, what):
    """Caffe's (num, channels, height, width) of a blob with at most 4 axes."""
    if blob.num_axes > 4:
        layer.fail(f"{what} must have at most 4 axes, got shape {_fmt(blob.shape)}", ShapeError)
    return blob.num, blob.channels, blob.height, blob.width


def _item_labels(layer, xp, label_blob, num, num_classes):
    """One integer label per item (num,), checked to lie in [0, num_classes)."""
    lab = label_blob.xdata.reshape(num).astype(np.int64)
    bad = (lab < 0) | (lab >= num_classes)
    if num and bool(bad.any()):
        first = int(lab[int(xp.argmax(bad))])
        layer.fail(f"label {first} is out of range: labels must be in [0, {num_classes - 1}]")
    return lab


class _PerItemLabelLoss(LossLayer):
    """Bottom 0 (N, ...) scores or probabilities, bottom 1 one label per item."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        b0, b1 = bottom[0], bottom[1]
        self.num = b0.shape[0]
        self.dim = b0.count // self.num if self.num else 0
        if b1.count != self.num:
            self.fail(f"needs one label per item: prediction shape {_fmt(b0.shape)}, label "
                      f"shape {_fmt(b1.shape)}", ShapeError)
        ar = getattr(self, "_ar", None)
        if ar is None or ar.shape[0] != self.num or _module(ar) is not self.xp_of(b0):
            self._ar = b0.xp.arange(self.num)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(_PerItemLabelLoss):
    """-sum_n log(max(p[n, label_n], 1e-20)) / N; bottom 0 holds probabilities."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        _, c, h, w = _legacy_dims(self, bottom[1], "the label bottom")
        if (c, h, w) != (1, 1, 1):
            self.fail(f"the label bottom must be (N,) or (N, 1, 1, 1): got shape "
                      f"{_fmt(bottom[1].shape)}", ShapeError)

    def _true_prob(self, bottom):
        xp = bottom[0].xp
        lab = _item_labels(self, xp, bottom[1], self.num, self.dim)
        p = bottom[0].xdata.reshape(self.num, self.dim)[self._ar, lab]
        return lab, xp.maximum(p, _LOG_THRESHOLD)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        _, p = self._true_prob(bottom)
        top[0].xdata[...] = -xp.log(p).sum() / self.num

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        lab, p = self._true_prob(bottom)
        dx = bottom[0].xdiff.reshape(self.num, self.dim)
        dx[...] = 0
        scale = top[0].xdiff.reshape(()) * (-1.0 / self.num)
        dx[self._ar, lab] = scale / p


@register("HingeLoss")
class HingeLossLayer(_PerItemLabelLoss):
    """One-vs-all hinge loss: L1 sum max(0, 1 - t x) / N, L2 sum max(0, 1 - t x)^2 / N, with
    t = +1 for the label's score and -1 for the others."""

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        P = caffe_pb2.HingeLossParameter
        self.norm = self.layer_param.hinge_loss_param.norm
        if self.norm not in (P.L1, P.L2):
            self.fail(f"unknown hinge_loss_param.norm {self.norm}")
        self.l2 = self.norm == P.L2

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        shape = (self.num, self.dim)
        self._sign = _buffer(getattr(self, "_sign", None), bottom[0], shape)
        self._margin = _buffer(getattr(self, "_margin", None), bottom[0], shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        lab = _item_labels(self, xp, bottom[1], self.num, self.dim)
        s = self._sign          # -t: +1 off the label, -1 at it
        s[...] = 1
        s[self._ar, lab] = -1
        m = self._margin        # max(0, 1 - t x)
        xp.multiply(s, bottom[0].xdata.reshape(s.shape), out=m)
        m += 1
        xp.maximum(m, 0, out=m)
        total = (m * m).sum() if self.l2 else m.sum()
        top[0].xdata[...] = total / self.num

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dx = bottom[0].xdiff.reshape(self.num, self.dim)
        w = top[0].xdiff.reshape(())
        if self.l2:
            xp.multiply(self._sign, self._margin, out=dx)
            dx *= w * (2.0 / self.num)
        else:
            xp.multiply(self._sign, self._margin > 0, out=dx)
            dx *= w * (1.0 / self.num)


@register("InfogainLoss")
class InfogainLossLayer(LossLayer):
    """Softmax along infogain_loss_param.axis, then the infogain-weighted log loss with the
    (C, C) matrix H (``source`` binaryproto, or bottom 2). Gradient of the scores:
    (p * sum_l H[label, l] - H[label, :]) * loss_weight / normalizer."""
    exact_num_bottom = None
    min_num_bottom = 2
    max_num_bottom = 3
    exact_num_top = None
    min_num_top = 1
    max_num_top = 2

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        if lp.HasField("normalize"):
            self.fail('loss_param.normalize is deprecated for this layer; use '
                      '"normalization" instead')
        super().layer_setup(bottom, top)
        self._prob = None
        self._h_host = None
        self._h = None
        self._index_cache = None
        if len(bottom) < 3:
            p = self.layer_param.infogain_loss_param
            if not p.HasField("source") or not p.source:
                self.fail("the infogain matrix must be given: set infogain_loss_param.source "
                          "to a binaryproto file or pass it as a third bottom")
            self._h_host = blobproto_to_array(read_blobproto(p.source), dtype=np.float64)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        axis, outer, c, inner = _class_dims(self, bottom,
                                            self.layer_param.infogain_loss_param.axis)
        self.dims = (outer, c, inner)
        h_count = bottom[2].count if len(bottom) > 2 else self._h_host.size
        h_shape = tuple(bottom[2].shape) if len(bottom) > 2 else self._h_host.shape
        if h_count != c * c:
            self.fail(f"the infogain matrix H must be {c}x{c} for {c} classes along axis "
                      f"{axis}: got H shape {_fmt(h_shape)} for prediction shape "
                      f"{_fmt(bottom[0].shape)}", ShapeError)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
        else:
            self._prob = _buffer(self._prob, bottom[0], bottom[0].shape)

    def _matrix(self, bottom):
        """H as a (C, C) array of the bottom's module and dtype."""
        c = self.dims[1]
        if len(bottom) > 2:
            return bottom[2].xdata.reshape(c, c)
        x = bottom[0].xdata
        h = self._h
        if h is None or h.dtype != x.dtype or _module(h) is not self.xp_of(bottom[0]):
            self._h = h = bottom[0].xp.asarray(self._h_host.reshape(c, c), dtype=x.dtype)
        return h

    def _prob_array(self, top):
        return (top[1].xdata if len(top) > 1 else self._prob).reshape(self.dims)

    def _weights(self, xp, h, safe):
        """H[label, :] laid out like the scores: (outer, C, inner)."""
        return xp.moveaxis(h[safe], 2, 1)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        outer, c, inner = self.dims
        prob = self._prob_array(top)
        _softmax3(xp, bottom[0].xdata.reshape(self.dims), prob)
        lab, valid, safe = _labels(self, xp, bottom[1], outer, inner, c)
        h = self._matrix(bottom)
        logp = xp.log(xp.maximum(prob, _LOG_THRESHOLD))
        per_pos = (self._weights(xp, h, safe) * logp).sum(axis=1)   # (outer, inner)
        if valid is None:
            loss = -per_pos.sum()
            count = outer * inner
        else:
            loss = -(per_pos * valid).sum()
            count = int(valid.sum())
        self._norm = self.normalizer(outer, inner, count)
        top[0].xdata[...] = loss / self._norm

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        if len(propagate_down) > 2 and propagate_down[2]:
            self.fail("cannot backpropagate to the infogain matrix input")
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        outer, c, inner = self.dims
        lab, valid, safe = _labels(self, xp, bottom[1], outer, inner, c)
        h = self._matrix(bottom)
        row_sums = h.sum(axis=1)
        dx = bottom[0].xdiff.reshape(self.dims)
        xp.multiply(self._prob_array(top), row_sums[safe][:, None, :], out=dx)
        dx -= self._weights(xp, h, safe)
        if valid is None:
            count = outer * inner
        else:
            dx *= valid[:, None, :]
            count = int(valid.sum())
        dx *= top[0].xdiff.reshape(()) / self.normalizer(outer, inner, count)


@register("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    """Bottoms: features a (N, C), features b (N, C), similarity y (N,) (nonzero after
    truncation to int: similar). Loss = sum_n L_n / (2N) with L_n = d^2 for similar pairs and
    max(margin - d, 0)^2 (legacy_version: max(margin - d^2, 0)) for dissimilar ones."""
    exact_num_bottom = 3

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        p = self.layer_param.contrastive_loss_param
        self.margin = float(p.margin)
        self.legacy = bool(p.legacy_version)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        a, b, y = bottom
        n, c, h, w = _legacy_dims(self, a, "bottom 0")
        _, c1, h1, w1 = _legacy_dims(self, b, "bottom 1")
        ny, cy, hy, wy = _legacy_dims(self, y, "the similarity bottom")
        if (h, w) != (1, 1) or (c1, h1, w1) != (c, 1, 1):
            self.fail(f"the two feature bottoms must both be (N, C) or (N, C, 1, 1): got shapes "
                      f"{_fmt(a.shape)} and {_fmt(b.shape)}", ShapeError)
        if (ny, cy, hy, wy) != (n, 1, 1, 1):
            self.fail(f"the similarity bottom must hold one value per pair, shape (N,) or "
                      f"(N, 1, 1, 1) with N = {n}: got shape {_fmt(y.shape)}", ShapeError)
        self.n, self.c = n, c
        self._diff = _buffer(getattr(self, "_diff", None), a, (n, c))

    def _similar(self, bottom):
        return bottom[2].xdata.reshape(self.n).astype(np.int64) != 0

    def forward(self, bottom, top):
        xp = bottom[0].xp
        d = self._diff
        xp.subtract(bottom[0].xdata.reshape(d.shape), bottom[1].xdata.reshape(d.shape), out=d)
        dist_sq = (d * d).sum(axis=1)
        self._dist_sq = dist_sq
        if self.legacy:
            far = xp.maximum(self.margin - dist_sq, 0)
        else:
            far = xp.maximum(self.margin - xp.sqrt(dist_sq), 0)
            far *= far
        per_pair = xp.where(self._similar(bottom), dist_sq, far)
        top[0].xdata[...] = per_pair.sum() / self.n / 2.0

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 2 and propagate_down[2]:
            self.fail("cannot backpropagate to the similarity input")
        if not (propagate_down[0] or propagate_down[1]):
            return
        xp = bottom[0].xp
        dist_sq = self._dist_sq
        if self.legacy:
            mdist = self.margin - dist_sq
            far = -(mdist > 0).astype(dist_sq.dtype)
        else:
            dist = xp.sqrt(dist_sq)
            mdist = self.margin - dist
            # Caffe's gradient: 1e-4 keeps the division finite when the points coincide.
            far = -xp.maximum(mdist, 0) / (dist + 1e-4)
        coef = xp.where(self._similar(bottom), 1.0, far).astype(dist_sq.dtype)
        coef = coef * (top[0].xdiff.reshape(()) / self.n)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                dx = bottom[i].xdiff.reshape(self.n, self.c)
                xp.multiply(self._diff, (sign * coef)[:, None], out=dx)

"""Losses on one class label per item: MultinomialLogisticLoss and HingeLoss, with BVLC Caffe's
parameters, normalisation and gradients.

* MultinomialLogisticLoss: bottom 0 holds probabilities (N, ...), bottom 1 one label per item;
  loss = -sum_n log(max(p[n, label_n], 1e-20)) / N.
* HingeLoss (hinge_loss_param.norm L1 or L2): with t = +1 at the label and -1 elsewhere,
  loss = sum max(0, 1 - t x) / N (L1) or sum max(0, 1 - t x)^2 / N (L2).
"""
import numpy as np

from ..backend import get_array_module as _module
from ..errors import ShapeError
from ..layer import register, shape_text
from ..proto import caffe_pb2
from .loss import LossLayer
from .scratch import reuse

_LOG_THRESHOLD = 1e-20     # Caffe's kLOG_THRESHOLD


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
            self.fail(f"needs one label per item: prediction shape {shape_text(b0.shape)}, label "
                      f"shape {shape_text(b1.shape)}", ShapeError)
        ar = getattr(self, "_ar", None)
        if ar is None or ar.shape[0] != self.num or _module(ar) is not self.xp_of(b0):
            self._ar = b0.xp.arange(self.num)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(_PerItemLabelLoss):
    """-sum_n log(max(p[n, label_n], 1e-20)) / N; bottom 0 holds probabilities."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        _, c, h, w = self.legacy_dims(bottom[1], "the label bottom")
        if (c, h, w) != (1, 1, 1):
            self.fail(f"the label bottom must be (N,) or (N, 1, 1, 1): got shape "
                      f"{shape_text(bottom[1].shape)}", ShapeError)

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
        scale = top[0].xdiff.reshape(()) * (-1.0 / max(self.num, 1))   # N 0: empty dx
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
        self._sign = reuse(getattr(self, "_sign", None), shape, bottom[0].xdata)
        self._margin = reuse(getattr(self, "_margin", None), shape, bottom[0].xdata)

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
            dx *= w * (2.0 / max(self.num, 1))   # an empty batch has an empty dx
        else:
            xp.multiply(self._sign, self._margin > 0, out=dx)
            dx *= w * (1.0 / max(self.num, 1))

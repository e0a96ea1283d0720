"""Losses against targets that are not class labels: EuclideanLoss (real-valued targets),
SigmoidCrossEntropyLoss (probabilities in [0, 1]) and ContrastiveLoss (pair similarity),
with BVLC Caffe's parameters, normalisation and gradients.

ContrastiveLoss (contrastive_loss_param): bottoms a, b (N, C) and a similarity flag (N,);
loss = sum(similar: d^2, dissimilar: max(margin - d, 0)^2) / (2N) with d = ||a - b||, or with
legacy_version max(margin - d^2, 0) for dissimilar pairs.
"""
import numpy as np

from ..errors import ShapeError
from ..layer import register, shape_text
from .loss import LP, LossLayer
from .neuron import sigmoid
from .scratch import reuse


@register("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    """sum((b0 - b1)^2) / (2 N), N the first dimension; gradients reach both bottoms."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        b0, b1 = bottom[0], bottom[1]
        if b0.count_range(1) != b1.count_range(1):
            self.fail(f"inputs must have the same dimension: bottom shapes {tuple(b0.shape)} "
                      f"and {tuple(b1.shape)}")
        self._diff = reuse(getattr(self, "_diff", None), b0.shape, b0.xdata)

    def allow_force_backward(self, bottom_index):
        return True

    def forward(self, bottom, top):
        xp = bottom[0].xp
        d = self._diff
        xp.subtract(bottom[0].xdata, bottom[1].xdata.reshape(d.shape), out=d)
        flat = d.ravel()
        top[0].xdata[...] = flat.dot(flat) / bottom[0].shape[0] / 2.0

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        w = top[0].xdiff.reshape(())
        num = max(bottom[0].shape[0], 1)   # an empty batch has an empty gradient
        for i, sign in ((0, 1.0), (1, -1.0)):
            if i < len(propagate_down) and propagate_down[i]:
                dx = bottom[i].xdiff
                xp.multiply(self._diff.reshape(dx.shape), w * (sign / num), out=dx)


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Cross-entropy of sigmoid(bottom 0) against targets in [0, 1] (bottom 1), computed
    stably from the logits; loss_param.ignore_label skips targets equal to it.
    Normalisation defaults to BATCH_SIZE for this layer, as in Caffe."""
    default_normalization = LP.BATCH_SIZE

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        b0, b1 = bottom[0], bottom[1]
        if b0.count != b1.count:
            self.fail(f"inputs must have the same count: bottom shapes {tuple(b0.shape)} "
                      f"and {tuple(b1.shape)}")
        self.outer, self.inner = b0.shape[0], b0.count_range(1)
        self._sig = reuse(getattr(self, "_sig", None), b0.shape, b0.xdata)

    def _valid(self, xp, t):
        if not self.has_ignore_label:
            return None
        return t.astype(np.int64) != self.ignore_label

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].xdata
        t = bottom[1].xdata.reshape(x.shape)
        # sigmoid kept for backward (tanh form: no overflow)
        sigmoid(xp, x, out=self._sig)
        # per element: -(x (t - [x >= 0]) - log(1 + exp(-|x|)))
        term = xp.abs(x)
        xp.negative(term, out=term)
        xp.exp(term, out=term)
        xp.log1p(term, out=term)
        term -= x * (t - (x >= 0))
        valid = self._valid(xp, t)
        if valid is None:
            loss = float(term.sum())
            count = self.outer * self.inner
        else:
            loss = float((term * valid).sum())
            count = int(valid.sum())
        self._norm = self.normalizer(self.outer, self.inner, count)
        top[0].xdata[...] = loss / self._norm

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        dx = bottom[0].xdiff
        t = bottom[1].xdata.reshape(dx.shape)
        xp.subtract(self._sig, t, out=dx)
        valid = self._valid(xp, t)
        if valid is not None:
            dx *= valid
        dx *= top[0].xdiff.reshape(()) / self._norm


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
        n, c, h, w = self.legacy_dims(a, "bottom 0")
        _, c1, h1, w1 = self.legacy_dims(b, "bottom 1")
        ny, cy, hy, wy = self.legacy_dims(y, "the similarity bottom")
        if (h, w) != (1, 1) or (c1, h1, w1) != (c, 1, 1):
            self.fail(f"the two feature bottoms must both be (N, C) or (N, C, 1, 1): got shapes "
                      f"{shape_text(a.shape)} and {shape_text(b.shape)}", ShapeError)
        if (ny, cy, hy, wy) != (n, 1, 1, 1):
            self.fail(f"the similarity bottom must hold one value per pair, shape (N,) or "
                      f"(N, 1, 1, 1) with N = {n}: got shape {shape_text(y.shape)}", ShapeError)
        self.n, self.c = n, c
        self._diff = reuse(getattr(self, "_diff", None), (n, c), a.xdata)

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

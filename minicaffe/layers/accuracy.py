"""Accuracy (accuracy_param): the fraction of positions whose true class is among the top_k
scores. In GPU mode it keeps its counts on the device; labels are checked on the host at the
first forward only (later out-of-range labels count as wrong)."""
import numpy as np

from ..layer import Layer, register
from .loss import class_dims, class_labels


@register("Accuracy")
class AccuracyLayer(Layer):
    """Fraction of (outer, inner) positions whose true class is among the top_k scores along
    accuracy_param.axis: correct when fewer than top_k scores are strictly greater than the
    true class's score. Optional top 1: per-class accuracy, shape (C,). No backward."""
    exact_num_bottom = 2
    min_num_top = 1
    max_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.accuracy_param
        self.top_k = int(p.top_k)
        self.has_ignore_label = p.HasField("ignore_label")
        self.ignore_label = int(p.ignore_label)
        self._index_cache = None
        self._check_labels = True      # device path: check the labels on the host once

    def reshape(self, bottom, top):
        b0, b1 = bottom[0], bottom[1]
        if b1.count == 0 or self.top_k > b0.count // b1.count:
            self.fail(f"top_k must be less than or equal to the number of classes: top_k "
                      f"{self.top_k}, bottom shapes {tuple(b0.shape)} and {tuple(b1.shape)}")
        axis, outer, c, inner = class_dims(self, bottom, self.layer_param.accuracy_param.axis)
        self.dims = (outer, c, inner)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((c,))

    def _forward_device(self, xp, bottom, top):
        """As forward, with every count left on the device (no host sync)."""
        outer, c, inner = self.dims
        if self._check_labels:
            class_labels(self, xp, bottom[1], outer, inner, c)
            self._check_labels = False
        x = bottom[0].xdata.reshape(self.dims)
        lab = bottom[1].xdata.reshape(outer, inner).astype(np.int64)
        inside = (lab >= 0) & (lab < c)
        safe = xp.clip(lab, 0, c - 1)
        true_score = xp.take_along_axis(x, safe[:, None, :], axis=1)
        correct = (x > true_score).sum(axis=1) < self.top_k
        correct &= inside
        if self.has_ignore_label:
            valid = lab != self.ignore_label
            correct &= valid
            count = valid.sum()
        else:
            valid = None
            count = outer * inner
        top[0].xdata[...] = correct.sum() / xp.maximum(count, 1)
        if len(top) > 1:
            flat = safe.ravel()
            w_all = inside.ravel() if valid is None else (inside & valid).ravel()
            totals = xp.bincount(flat, weights=w_all.astype(np.float64), minlength=c)
            right = xp.bincount(flat, weights=correct.ravel().astype(np.float64), minlength=c)
            top[1].xdata[...] = xp.where(totals > 0, right / xp.maximum(totals, 1), 0)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        if xp is not np:
            return self._forward_device(xp, bottom, top)
        outer, c, inner = self.dims
        x = bottom[0].xdata.reshape(self.dims)
        lab, valid, safe = class_labels(self, xp, bottom[1], outer, inner, c)
        key = (outer, inner, xp)
        if self._index_cache is None or self._index_cache[0] != key:
            self._index_cache = (key, xp.arange(outer)[:, None], xp.arange(inner)[None, :])
        oi, ii = self._index_cache[1], self._index_cache[2]
        true_score = x[oi, safe, ii]
        better = (x > true_score[:, None, :]).sum(axis=1)
        correct = better < self.top_k
        if valid is not None:
            correct &= valid
            count = int(valid.sum())
        else:
            count = outer * inner
        hits = int(correct.sum())
        top[0].xdata[...] = hits / count if count else 0.0
        if len(top) > 1:
            flat = safe.ravel()
            w_all = None if valid is None else valid.ravel().astype(np.float64)
            totals = xp.bincount(flat, weights=w_all, minlength=c)
            right = xp.bincount(flat, weights=correct.ravel().astype(np.float64), minlength=c)
            per = right / xp.maximum(totals, 1)
            top[1].xdata[...] = xp.where(totals > 0, per, 0)

    def allow_force_backward(self, bottom_index):
        # Caffe lets force_backward ask this layer for gradients and then aborts; asking
        # for none keeps force_backward nets with an Accuracy layer usable.
        return False

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            self.fail("has no backward pass (accuracy is not differentiable); do not use it "
                      "as a loss or propagate gradients through it")

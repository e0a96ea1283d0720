"""Softmax, the loss layers (SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss) and
Accuracy, with BVLC Caffe's parameters, normalisation rules and checks.

A loss layer's top 0 is a 0-axis blob (count 1). The net stores the loss weight in its diff,
so backward scales every gradient by ``top[0].xdiff`` (Caffe's convention).

In GPU mode nothing here waits for the device: SoftmaxWithLoss runs the fused kernels of
``minicaffe.kernels.cuda.softmax_loss`` (its normaliser stays a device scalar when it counts
valid labels), and Accuracy keeps its counts on the device. Labels are checked on the host
at the first forward only; later out-of-range labels give a NaN loss (and count as wrong
for Accuracy) instead of an error.
"""
import numpy as np

from .. import backend
from ..kernels import cuda as _cuda
from ..layer import Layer, register
from ..proto import caffe_pb2

LP = caffe_pb2.LossParameter
_FLT_MIN = float(np.finfo(np.float32).tiny)   # Caffe's floor for log(probability)


def _buffer(old, like_blob, shape):
    """A scratch array of ``shape`` and the blob's dtype/module, reusing ``old`` when it fits."""
    x = like_blob.xdata
    if old is not None and old.shape == tuple(shape) and old.dtype == x.dtype and \
            backend.get_array_module(old) is backend.get_array_module(x):
        return old
    return like_blob.xp.empty(tuple(shape), dtype=x.dtype)


def _softmax3(xp, x, y):
    """y = softmax of x over axis 1 of (outer, C, inner) views; y may be x."""
    m = x.max(axis=1, keepdims=True)
    xp.subtract(x, m, out=y)
    xp.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)


@register("Softmax")
class SoftmaxLayer(Layer):
    """Softmax over softmax_param.axis (default 1), computed with the max subtracted."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        b = bottom[0]
        try:
            axis = b.canonical_axis_index(self.layer_param.softmax_param.axis)
        except IndexError:
            self.fail(f"softmax_param.axis {self.layer_param.softmax_param.axis} is out of "
                      f"range for bottom shape {tuple(b.shape)}")
        self.axis = axis
        self.dims = (b.count_range(0, axis), b.shape[axis], b.count_range(axis + 1))
        if top[0] is not b:
            top[0].reshape(b.shape)

    def forward(self, bottom, top):
        xp = bottom[0].xp
        _softmax3(xp, bottom[0].xdata.reshape(self.dims), top[0].xdata.reshape(self.dims))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        y = top[0].xdata.reshape(self.dims)
        dy = top[0].xdiff.reshape(self.dims)
        dx = bottom[0].xdiff.reshape(self.dims)
        # dx = (dy - <dy, y>) * y, the dot taken along the softmax axis (dx may be dy).
        dot = (dy * y).sum(axis=1, keepdims=True)
        xp.subtract(dy, dot, out=dx)
        dx *= y


class LossLayer(Layer):
    """Two bottoms (predictions, targets), one scalar top; loss weight 1 by default."""
    is_loss = True
    exact_num_bottom = 2
    exact_num_top = 1
    # Old nets often give a loss layer no top; Caffe then makes one (not a net output).
    auto_top_blobs = True

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.has_ignore_label = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        if lp.HasField("normalization"):
            self.normalization = lp.normalization
        elif lp.HasField("normalize"):
            self.normalization = LP.VALID if lp.normalize else LP.BATCH_SIZE
        else:
            self.normalization = self.default_normalization

    default_normalization = LP.VALID

    def reshape(self, bottom, top):
        b0, b1 = bottom[0], bottom[1]
        if b0.num_axes < 1 or b1.num_axes < 1 or b0.shape[0] != b1.shape[0]:
            self.fail(f"the data and label should have the same first dimension: "
                      f"bottom shapes {tuple(b0.shape)} and {tuple(b1.shape)}")
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def normalizer(self, outer, inner, valid_count):
        """Caffe's get_normalizer, clamped to at least 1."""
        mode = self.normalization
        if mode == LP.FULL:
            n = outer * inner
        elif mode == LP.VALID:
            n = outer * inner if valid_count < 0 else valid_count
        elif mode == LP.BATCH_SIZE:
            n = outer
        elif mode == LP.NONE:
            n = 1
        else:
            self.fail(f"unknown loss_param.normalization {mode}")
        return max(1.0, float(n))

    def _no_label_backward(self, propagate_down):
        if len(propagate_down) > 1 and propagate_down[1]:
            self.fail("cannot backpropagate to label inputs")


def _class_dims(layer, bottom, axis_value):
    """(axis, outer, C, inner) for class scores along ``axis_value``; checks the label count."""
    b0, b1 = bottom[0], bottom[1]
    try:
        axis = b0.canonical_axis_index(axis_value)
    except IndexError:
        layer.fail(f"axis {axis_value} is out of range for bottom shape {tuple(b0.shape)}")
    outer, inner = b0.count_range(0, axis), b0.count_range(axis + 1)
    if outer * inner != b1.count:
        layer.fail(f"number of labels must match number of predictions; e.g., if the axis is 1 "
                   f"and the prediction shape is (N, C, H, W), the label count must be N*H*W, "
                   f"with integer values in {{0, 1, ..., C-1}}; got prediction shape "
                   f"{tuple(b0.shape)} (axis {axis}) and label shape {tuple(b1.shape)}")
    return axis, outer, b0.shape[axis], inner


def _labels(layer, xp, label_blob, outer, inner, num_classes):
    """Integer labels (outer, inner), the valid mask, labels safe to index with, valid count."""
    lab = label_blob.xdata.reshape(outer, inner).astype(np.int64)   # truncation, as static_cast
    if layer.has_ignore_label:
        valid = lab != layer.ignore_label
        safe = xp.where(valid, lab, 0)
    else:
        valid = None
        safe = lab
    bad = (safe < 0) | (safe >= num_classes)
    if bool(bad.any()):
        first = int(lab.ravel()[int(xp.argmax(bad.ravel()))])
        layer.fail(f"label {first} is out of range: labels must be in [0, {num_classes - 1}]"
                   + (f" or equal ignore_label {layer.ignore_label}" if layer.has_ignore_label
                      else ""))
    return lab, valid, safe


@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(LossLayer):
    """Multinomial logistic loss of the softmax of bottom 0 (along softmax_param.axis) at the
    integer labels of bottom 1; optional top 1 is the softmax probabilities."""
    exact_num_top = None
    min_num_top = 1
    max_num_top = 2

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        self._prob = None
        self._index_cache = None
        self._check_labels = True      # device path: check the labels on the host once
        self._terms = None
        self._last_fused = False

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        axis, outer, c, inner = _class_dims(self, bottom, self.layer_param.softmax_param.axis)
        self.axis, self.dims = axis, (outer, c, inner)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
        else:
            self._prob = _buffer(self._prob, bottom[0], bottom[0].shape)

    def _prob_array(self, top):
        return top[1].xdata if len(top) > 1 else self._prob

    def _index(self, xp, outer, inner):
        key = (outer, inner, xp)
        if self._index_cache is None or self._index_cache[0] != key:
            self._index_cache = (key, xp.arange(outer)[:, None], xp.arange(inner)[None, :])
        return self._index_cache[1], self._index_cache[2]

    def _fused(self, bottom, top):
        return backend.fused_kernels(bottom[0].xp) and \
            _cuda.supported(bottom[0].xdata, bottom[1].xdata, self._prob_array(top))

    def _forward_fused(self, bottom, top):
        xp = bottom[0].xp
        outer, c, inner = self.dims
        if self._check_labels:
            _labels(self, xp, bottom[1], outer, inner, c)     # one host check, at the start
            self._check_labels = False
        x = bottom[0].xdata
        terms = self._terms = _buffer(self._terms, bottom[0], (2, outer * inner))
        ignore = self.ignore_label if self.has_ignore_label else None
        _cuda.softmax_loss.forward(x, bottom[1].xdata, self._prob_array(top), terms[0],
                                   terms[1], outer, c, inner, ignore)
        if self.has_ignore_label and self.normalization == LP.VALID:
            norm = xp.maximum(terms[1].sum(), 1)              # stays on the device
        else:
            norm = self.normalizer(outer, inner, outer * inner)
        self._norm = norm
        top[0].xdata[...] = terms[0].sum() / norm
        self._last_fused = True

    def forward(self, bottom, top):
        xp = bottom[0].xp
        if self._fused(bottom, top):
            return self._forward_fused(bottom, top)
        self._last_fused = False
        outer, c, inner = self.dims
        prob = self._prob_array(top).reshape(self.dims)
        _softmax3(xp, bottom[0].xdata.reshape(self.dims), prob)
        if xp is not np:
            return self._forward_device(xp, bottom, top, prob)
        lab, valid, safe = _labels(self, xp, bottom[1], outer, inner, c)
        self._label_state = (valid, safe)
        oi, ii = self._index(xp, outer, inner)
        p = prob[oi, safe, ii]                      # probability of the true class, (outer, inner)
        logp = xp.log(xp.maximum(p, _FLT_MIN))
        if valid is None:
            loss = -float(logp.sum())
            count = outer * inner
        else:
            loss = -float((logp * valid).sum())
            count = int(valid.sum())
        self._norm = self.normalizer(outer, inner, count)
        top[0].xdata[...] = loss / self._norm

    def _forward_device(self, xp, bottom, top, prob):
        """The rest of forward with the loss and the count left on the device."""
        outer, c, inner = self.dims
        if self._check_labels:
            _labels(self, xp, bottom[1], outer, inner, c)
            self._check_labels = False
        lab = bottom[1].xdata.reshape(outer, inner).astype(np.int64)
        inside = (lab >= 0) & (lab < c)
        valid = lab != self.ignore_label if self.has_ignore_label else None
        safe = xp.clip(lab, 0, c - 1)
        if valid is not None:
            safe = xp.where(valid, safe, 0)
        self._label_state = (valid, safe)
        oi, ii = self._index(xp, outer, inner)
        logp = xp.log(xp.maximum(prob[oi, safe, ii], _FLT_MIN))
        logp = xp.where(inside | (False if valid is None else ~valid), logp, np.nan)
        if valid is None:
            total = -logp.sum()
            norm = self.normalizer(outer, inner, outer * inner)
        else:
            total = -(logp * valid).sum()
            norm = xp.maximum(valid.sum(), 1) if self.normalization == LP.VALID else \
                self.normalizer(outer, inner, outer * inner)
        self._norm = norm
        top[0].xdata[...] = total / norm

    def backward(self, top, propagate_down, bottom):
        self._no_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        outer, c, inner = self.dims
        if self._last_fused:
            dx = bottom[0].xdiff
            scale = (top[0].xdiff.reshape(1) / self._norm).astype(dx.dtype, copy=False)
            _cuda.softmax_loss.backward(self._prob_array(top), bottom[1].xdata, scale, dx,
                                        outer, c, inner,
                                        self.ignore_label if self.has_ignore_label else None)
            return
        dx = bottom[0].xdiff.reshape(self.dims)
        dx[...] = self._prob_array(top).reshape(self.dims)
        valid, safe = self._label_state
        oi, ii = self._index(xp, outer, inner)
        dx[oi, safe, ii] -= 1
        if valid is not None:
            dx *= valid[:, None, :]
        dx *= top[0].xdiff.reshape(()) / self._norm


@register("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    """sum((b0 - b1)^2) / (2 N), N the first dimension; gradients reach both bottoms."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        b0, b1 = bottom[0], bottom[1]
        if b0.count_range(1) != b1.count_range(1):
            self.fail(f"inputs must have the same dimension: bottom shapes {tuple(b0.shape)} "
                      f"and {tuple(b1.shape)}")
        self._diff = _buffer(getattr(self, "_diff", None), b0, b0.shape)

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
        num = bottom[0].shape[0]
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
        self._sig = _buffer(getattr(self, "_sig", None), b0, b0.shape)

    def _valid(self, xp, t):
        if not self.has_ignore_label:
            return None
        return t.astype(np.int64) != self.ignore_label

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].xdata
        t = bottom[1].xdata.reshape(x.shape)
        # sigmoid kept for backward (tanh form: no overflow)
        s = self._sig
        xp.multiply(x, 0.5, out=s)
        xp.tanh(s, out=s)
        s *= 0.5
        s += 0.5
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
        axis, outer, c, inner = _class_dims(self, bottom, self.layer_param.accuracy_param.axis)
        self.dims = (outer, c, inner)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((c,))

    def _forward_device(self, xp, bottom, top):
        """As forward, with every count left on the device (no host sync)."""
        outer, c, inner = self.dims
        if self._check_labels:
            _labels(self, xp, bottom[1], outer, inner, c)
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
        lab, valid, safe = _labels(self, xp, bottom[1], outer, inner, c)
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

"""Losses of the softmax of class scores: SoftmaxWithLoss and InfogainLoss, with BVLC Caffe's
parameters, normalisation rules and checks.

* SoftmaxWithLoss: the multinomial logistic loss of the softmax (along softmax_param.axis) at
  the integer labels of bottom 1. In GPU mode nothing waits for the device: it runs the fused
  kernels of ``minicaffe.kernels.cuda.softmax_loss`` (its normaliser stays a device scalar
  when it counts valid labels). Labels are checked on the host at the first forward only;
  later out-of-range labels give a NaN loss instead of an error.
* InfogainLoss (infogain_loss_param): softmax of bottom 0 along ``axis``, then
  loss = -sum_positions sum_l H[label, l] log(max(p_l, 1e-20)) / normalizer; H is read from
  ``source`` (a binaryproto) or given as a third bottom; optional top 1 = the probabilities;
  loss_param.ignore_label and loss_param.normalization (default VALID) as in Caffe.
"""
import numpy as np

from .. import backend
from ..backend import get_array_module as _module
from ..errors import ShapeError
from ..io import read_blobproto
from ..io.protobinary import blobproto_to_array
from ..kernels import cuda as _cuda
from ..layer import register, shape_text
from .loss import LP, LossLayer, class_dims, class_labels
from .scratch import reuse
from .softmax import softmax3

_FLT_MIN = float(np.finfo(np.float32).tiny)   # Caffe's floor for log(probability)
_LOG_THRESHOLD = 1e-20     # Caffe's kLOG_THRESHOLD


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
        axis, outer, c, inner = class_dims(self, bottom, self.layer_param.softmax_param.axis)
        self.axis, self.dims = axis, (outer, c, inner)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
        else:
            self._prob = reuse(self._prob, bottom[0].shape, bottom[0].xdata)

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
            class_labels(self, xp, bottom[1], outer, inner, c)     # one host check, at the start
            self._check_labels = False
        x = bottom[0].xdata
        terms = self._terms = reuse(self._terms, (2, outer * inner), bottom[0].xdata)
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
        softmax3(xp, bottom[0].xdata.reshape(self.dims), prob)
        if xp is not np:
            return self._forward_device(xp, bottom, top, prob)
        lab, valid, safe = class_labels(self, xp, bottom[1], outer, inner, c)
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
            class_labels(self, xp, bottom[1], outer, inner, c)
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
        axis, outer, c, inner = class_dims(self, bottom,
                                            self.layer_param.infogain_loss_param.axis)
        self.dims = (outer, c, inner)
        h_count = bottom[2].count if len(bottom) > 2 else self._h_host.size
        h_shape = tuple(bottom[2].shape) if len(bottom) > 2 else self._h_host.shape
        if h_count != c * c:
            self.fail(f"the infogain matrix H must be {c}x{c} for {c} classes along axis "
                      f"{axis}: got H shape {shape_text(h_shape)} for prediction shape "
                      f"{shape_text(bottom[0].shape)}", ShapeError)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
        else:
            self._prob = reuse(self._prob, bottom[0].shape, bottom[0].xdata)

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
        softmax3(xp, bottom[0].xdata.reshape(self.dims), prob)
        lab, valid, safe = class_labels(self, xp, bottom[1], outer, inner, c)
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
        lab, valid, safe = class_labels(self, xp, bottom[1], outer, inner, c)
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

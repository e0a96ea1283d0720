"""One fused update kernel per parameter for each solver type (Caffe's order inside):

    grad = diff * iter_scale + decay * (L1 ? sign(w) : w)      (normalise, regularise)
    <the type's rule: history updates, the step into diff>
    w -= diff

All arrays are outputs of the kernel (read and written in place). Scalars are in the
parameter's type, as the NumPy path computes in it. ``update(kind, ...)`` runs one.
"""
import numpy as np

from . import ELEMENTWISE_SOURCES, elementwise

_GRAD = ("{T} grad = g * iscale; "
         "grad += l1 ? decay * (({T})(w > 0) - ({T})(w < 0)) : decay * w; ")
_SCALARS = "{T} iscale, {T} decay, int32 l1, {T} lr, {T} momentum, {T} m2, {T} delta"
_ONE_HISTORY = "{T} g, {T} w, {T} h"
_TWO_HISTORIES = "{T} g, {T} w, {T} h, {T} h2"


def _update(kind, arrays, rule):
    """Register ``kind``'s update: ``_GRAD``, then ``rule`` on the ``arrays``."""
    ELEMENTWISE_SOURCES[kind + "_update"] = (_SCALARS, arrays, _GRAD + rule)


_update("sgd", _ONE_HISTORY, "h = momentum * h + lr * grad; g = h; w -= g;")

_update("nesterov", _ONE_HISTORY,
        "{T} prev = h; h = momentum * h + lr * grad; "
        "g = ({T})(1 + momentum) * h - momentum * prev; w -= g;")

_update("adagrad", _ONE_HISTORY, "h += grad * grad; g = grad / (sqrt(h) + delta) * lr; w -= g;")

_update("rmsprop", _ONE_HISTORY,
        "h = m2 * h + ({T})(1 - m2) * (grad * grad); "
        "g = grad / (sqrt(h) + delta) * lr; w -= g;")

# AdaDelta: h = squared-gradient average, h2 = squared-update average (momentum = decay).
_update("adadelta", _TWO_HISTORIES,
        "h = momentum * h + ({T})(1 - momentum) * (grad * grad); "
        "grad *= sqrt((h2 + delta) / (h + delta)); "
        "h2 = momentum * h2 + ({T})(1 - momentum) * (grad * grad); "
        "g = grad * lr; w -= g;")

# Adam: h = first moment, h2 = second moment; lr already holds the bias correction.
_update("adam", _TWO_HISTORIES,
        "h = momentum * h + ({T})(1 - momentum) * grad; "
        "h2 = m2 * h2 + ({T})(1 - m2) * (grad * grad); "
        "g = h / (sqrt(h2) + delta) * lr; w -= g;")

KINDS = ("sgd", "nesterov", "adagrad", "rmsprop", "adadelta", "adam")


def update(kind, g, w, h, h2=None, *, iter_scale=1.0, decay=0.0, l1=False, lr=0.0,
           momentum=0.0, m2=0.0, delta=0.0):
    """Run the fused ``kind`` update on one parameter (diff g, data w, history h[, h2])."""
    t = np.dtype(w.dtype).type
    k = elementwise(kind + "_update", w.dtype)
    args = [t(iter_scale), t(decay), np.int32(bool(l1)), t(lr), t(momentum), t(m2), t(delta),
            g, w, h]
    if h2 is not None:
        args.append(h2)
    k(*args)

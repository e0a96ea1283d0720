"""A NaN or Inf loss stops training with the iteration and the first layer that went
non-finite (``MINICAFFE_ALLOW_NONFINITE=1`` or the command line's ``--allow_nonfinite`` logs
it and goes on).

Only the loss is checked every iteration (a Python float on the CPU; in GPU mode the losses
as they are read in batches, see ``smoothed_loss``: on display iterations, every 256
iterations and at the end of solve(), so the layers then show a later iteration); the layers are inspected only once it is
non-finite, from the values the last forward/backward left in the blobs, so finding the
layer changes nothing (no data is read, no layer runs again). A blob written in place by
several layers holds the last one's output: the first layer of such a chain is named, with
the others.
"""
import logging
import os

from .. import backend
from ..errors import MiniCaffeError

log = logging.getLogger("minicaffe")

ALLOW_ENV = "MINICAFFE_ALLOW_NONFINITE"


class NonFiniteError(MiniCaffeError):
    """The loss became NaN or Inf."""


def allowed_by_env():
    return os.environ.get(ALLOW_ENV, "") not in ("", "0")


def _nonfinite_count(arr):
    xp = backend.get_array_module(arr)
    return int(backend.to_float((~xp.isfinite(arr)).sum()))


def _what(arr):
    bad = _nonfinite_count(arr)
    return f"{bad} of {arr.size} values non-finite" if bad else None


def _in_place_note(net, li, blob_name):
    others = [net._layer_names[k] for k in range(li + 1, len(net.layers))
              if blob_name in net._top_ids[k]]
    return f"; also written in place by {', '.join(others)}" if others else ""


def _forward_culprit(net):
    written = set()
    for li, layer in enumerate(net.layers):
        name = net._layer_names[li]
        for pi, blob in enumerate(layer.blobs):
            what = _what(blob.xdata)
            if what:
                return (f"param blob {pi} of layer '{name}' (type {layer.type}) is already "
                        f"non-finite ({what}): the update of an earlier iteration made it so")
        for blob_name, blob in zip(net._top_ids[li], net._top_vecs[li]):
            if blob_name in written:
                continue
            written.add(blob_name)
            what = _what(blob.xdata)
            if what:
                return (f"first non-finite output: forward of layer '{name}' (type "
                        f"{layer.type}), top blob '{blob_name}' ({what}"
                        f"{_in_place_note(net, li, blob_name)})")
    return None


def _backward_culprit(net):
    for li in range(len(net.layers) - 1, -1, -1):
        if not net.layer_need_backward(li):
            continue
        layer = net.layers[li]
        name = net._layer_names[li]
        for blob_name, blob, need in zip(net._bottom_ids[li], net._bottom_vecs[li],
                                         net._bottom_need_backward[li]):
            what = _what(blob.xdiff) if need else None
            if what:
                return (f"first non-finite gradient: backward of layer '{name}' (type "
                        f"{layer.type}), bottom blob '{blob_name}' diff ({what})")
        for pi, blob in enumerate(layer.blobs):
            what = _what(blob.xdiff) if layer.param_propagate_down[pi] else None
            if what:
                return (f"first non-finite gradient: backward of layer '{name}' (type "
                        f"{layer.type}), param blob {pi} diff ({what})")
    return None


def nonfinite_culprit(net):
    """Where the last forward/backward of ``net`` first went non-finite, in words."""
    return (_forward_culprit(net) or _backward_culprit(net) or
            "no blob holds a non-finite value (the sum of the losses overflowed)")


class NonFiniteCheck:
    """One step() call's check: the first NaN/Inf loss the smoothed loss folded in is an
    error (or, when allowed, one warning) naming its iteration and the layer."""

    def __init__(self, where, allow):
        self.where = where
        self.allow = allow
        self.seen = False

    def __call__(self, smoothed_loss, net, current_iter):
        if smoothed_loss.nonfinite is None or self.seen:
            return
        self.seen = True
        it, loss = smoothed_loss.nonfinite
        late = "" if it == current_iter else \
            f" (read at iteration {current_iter}, whose values are inspected)"
        message = f"Iteration {it}: the loss is {loss}{late}; {nonfinite_culprit(net)}"
        if self.allow:
            log.warning("%s; going on (allow_nonfinite)", message)
            return
        raise NonFiniteError(f"{self.where}: {message}. Training stopped; pass "
                             f"--allow_nonfinite (or set {ALLOW_ENV}=1) to go on")

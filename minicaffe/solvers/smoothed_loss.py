"""Caffe's smoothed loss: the mean of the last ``average_loss`` iteration losses.

In GPU mode a loss is a device scalar; the losses since the last read are kept and copied to
the host in one go (when displayed, or every ``_LOSS_FLUSH`` iterations), then folded in
order, exactly as on the CPU, so that no iteration waits for the device. The first
non-finite loss folded in is kept (``nonfinite``) for the solver's check (``nonfinite.py``).
"""
import math

import numpy as np

from .. import backend

_LOSS_FLUSH = 256   # device losses kept before they are read even without a display


class SmoothedLoss:
    def __init__(self):
        self.losses = []
        self.value = 0.0      # as of the last read from the device
        self.pending = []     # (iter, start_iter, average_loss, device loss)
        self.nonfinite = None  # (iter, loss) of the first NaN/Inf loss folded in

    def reset(self, value):
        self.pending = []
        self.value = value

    def record(self, loss, it, start_iter, average_loss):
        """Fold in the loss of iteration ``it`` of a run that began at ``start_iter``."""
        if isinstance(loss, (float, int, np.floating, np.integer)) or \
                type(loss) is np.ndarray:
            self.flush()
            self._update(float(loss), it, start_iter, average_loss)
            return
        self.pending.append((it, start_iter, average_loss, loss))
        if len(self.pending) >= _LOSS_FLUSH:
            self.flush()

    def flush(self):
        """Read the pending device losses (one copy) and fold them in."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        xp = backend.get_array_module(pending[0][3])
        values = backend.to_numpy(xp.stack([xp.asarray(v, dtype=np.float64).reshape(())
                                            for *_, v in pending]))
        for (it, start_iter, average_loss, _), v in zip(pending, values):
            self._update(float(v), it, start_iter, average_loss)

    def _update(self, loss, it, start_iter, average_loss):
        if self.nonfinite is None and not math.isfinite(loss):
            self.nonfinite = (it, loss)
        if len(self.losses) < average_loss:
            self.losses.append(loss)
            n = len(self.losses)
            self.value = (self.value * (n - 1) + loss) / n
        else:
            idx = (it - start_iter) % average_loss
            self.value += (loss - self.losses[idx]) / average_loss
            self.losses[idx] = loss

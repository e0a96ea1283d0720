"""A test pass (Caffe's Solver::Test): run a test net ``test_iter`` times on the train net's
current weights, then log and return the mean of every output value.

In GPU mode the outputs (and the loss) are summed on the device and read once at the end.
"""
import logging

import numpy as np

from .. import backend
from .log_lines import cpp_float, log_net_outputs

log = logging.getLogger("minicaffe")


def evaluate(tnet, train_net, n_iter, compute_loss, stop_requested, stopped=False, split=None):
    """Mean outputs of ``tnet`` over ``n_iter`` forward passes, flattened blob by blob, or None
    when stopped: ``stopped`` already, or ``stop_requested()`` (asked before every pass).
    ``split`` (a parallel.DataParallel) shares the passes out over the ranks and sums them."""
    tnet.share_with(train_net)
    sums = None
    loss = 0.0
    on_device = backend.xp() is not np
    for _ in range(n_iter if split is None else split.local_iters(n_iter)):
        stopped = stop_requested()
        if stopped:
            break
        iter_loss = tnet.forward_from_to()
        if compute_loss:
            loss += iter_loss
        if on_device:   # summed on the device, read once after the loop
            values = [tnet.blobs[n].xdata.astype(np.float64).ravel() for n in tnet.outputs]
        else:
            values = [backend.to_numpy(tnet.blobs[n].data).astype(np.float64).ravel()
                      for n in tnet.outputs]
        if sums is None:
            sums = [v.copy() for v in values]
        else:
            for s, v in zip(sums, values):
                s += v
    if stopped:
        log.info("Test interrupted.")
        return None
    if on_device:
        sums = [backend.to_numpy(v) for v in sums] if sums is not None else None
        loss = backend.to_float(loss)
    if split is not None:
        sums, loss = split.reduce_test(tnet, sums, loss)
    if compute_loss:
        log.info("Test loss: %s", cpp_float(loss / n_iter))
    per_blob = [s / n_iter for s in sums or []]
    log_net_outputs("Test", tnet, per_blob)
    return [mean for blob_means in per_blob for mean in blob_means]

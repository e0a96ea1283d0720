"""Caffe's ``debug_info`` lines (Net::ForwardDebugInfo, BackwardDebugInfo, Backward's norms
and UpdateDebugInfo): the mean absolute value of every blob a layer wrote, in Caffe's words
so that logs compare line by line. The solver turns them on for display iterations."""
import logging
import math

import numpy as np

from . import backend

log = logging.getLogger("minicaffe")


def cpp_float(x):
    """As a C++ stream prints a float: 6 significant digits."""
    return "%g" % x


def _asum(arr):
    xp = backend.get_array_module(arr)
    return backend.to_float(xp.abs(arr).sum(dtype=np.float64))


def _mean_abs(arr):
    return _asum(arr) / arr.size if arr.size else 0.0


def _net_param_ids(net):
    return {lp: i for i, lp in enumerate(net._params.layer_indices)}


def forward_debug_info(net, li):
    name = net._layer_names[li]
    for blob_name, blob in zip(net._top_ids[li], net._top_vecs[li]):
        log.info("    [Forward] Layer %s, top blob %s data: %s", name, blob_name,
                 cpp_float(_mean_abs(blob.xdata)))
    ids = _net_param_ids(net)
    for pi, blob in enumerate(net.layers[li].blobs):
        display = net._params.display_names[ids[(li, pi)]]
        log.info("    [Forward] Layer %s, param blob %s data: %s", name, display,
                 cpp_float(_mean_abs(blob.xdata)))


def backward_debug_info(net, li):
    name = net._layer_names[li]
    layer = net.layers[li]
    for blob_name, blob, need in zip(net._bottom_ids[li], net._bottom_vecs[li],
                                     net._bottom_need_backward[li]):
        if need:
            log.info("    [Backward] Layer %s, bottom blob %s diff: %s", name, blob_name,
                     cpp_float(_mean_abs(blob.xdiff)))
    for pi, blob in enumerate(layer.blobs):
        if layer.param_propagate_down[pi]:
            log.info("    [Backward] Layer %s, param blob %d diff: %s", name, pi,
                     cpp_float(_mean_abs(blob.xdiff)))


def backward_norms(net):
    """Net::Backward's L1 and L2 norms of all learnable parameters (logged at ERROR, as
    Caffe does)."""
    sums = [0.0, 0.0, 0.0, 0.0]
    for blob, _ in net.learnable_params:
        for k, arr in enumerate((blob.xdata, blob.xdiff)):
            flat = arr.ravel()
            sums[k] += _asum(flat)
            sums[2 + k] += backend.to_float(backend.get_array_module(flat).dot(
                flat.astype(np.float64), flat.astype(np.float64)))
    log.error("    [Backward] All net params (data, diff): L1 norm = (%s, %s); L2 norm = "
              "(%s, %s)", cpp_float(sums[0]), cpp_float(sums[1]), cpp_float(math.sqrt(sums[2])),
              cpp_float(math.sqrt(sums[3])))


def update_debug_info(net):
    """The lines of Caffe's Net::Update before the step: shared blobs first, then owners."""
    params = net._params
    names = net._layer_names
    order = [i for i, o in enumerate(params.owner) if o >= 0] + \
        [i for i, o in enumerate(params.owner) if o < 0]
    for i in order:
        blob = params.blobs[i]
        layer = names[params.layer_indices[i][0]]
        diff = cpp_float(_mean_abs(blob.xdiff))
        owner = params.owner[i]
        if owner < 0:
            log.info("    [Update] Layer %s, param %s data: %s; diff: %s", layer,
                     params.display_names[i], cpp_float(_mean_abs(blob.xdata)), diff)
        else:
            log.info("    [Update] Layer %s, param blob %s (owned by layer %s, param %s) "
                     "diff: %s", layer, params.display_names[i],
                     names[params.layer_indices[owner][0]], params.display_names[owner], diff)

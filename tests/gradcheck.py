"""Finite-difference gradient checking for any layer (bottom and parameter gradients).

The objective is L = sum_k <top_k, R_k> for fixed random R_k, so the top diffs fed to
backward are R_k and every output element is checked at once. Everything runs in float64
(bottoms, tops and the layer's parameter blobs), so central differences are accurate to
~1e-8 and the tolerance can be tight.
"""
import numpy as np
from google.protobuf import text_format

from minicaffe import backend
from minicaffe.blob import Blob
from minicaffe.layer import create_layer
from minicaffe.proto import caffe_pb2


def layer_param(text, phase=caffe_pb2.TRAIN):
    p = text_format.Parse(text, caffe_pb2.LayerParameter())
    if not p.name:
        p.name = "under_test"
    if not p.HasField("phase"):
        p.phase = phase
    return p


def make_blobs(arrays, dtype=np.float64):
    out = []
    for a in arrays:
        b = Blob(np.shape(a), dtype=dtype)
        b.xdata[...] = a
        out.append(b)
    return out


def setup_layer(param, bottom_arrays, num_top=1, in_place=False, dtype=np.float64):
    layer = create_layer(param)
    bottom = make_blobs(bottom_arrays, dtype)
    top = list(bottom[:num_top]) if in_place else [Blob(dtype=dtype) for _ in range(num_top)]
    layer.setup(bottom, top)
    for i, b in enumerate(layer.blobs):
        if b.dtype != dtype:
            nb = Blob(b.shape, dtype=dtype)
            nb.xdata[...] = b.xdata
            layer.blobs[i] = nb
    return layer, bottom, top


def check_gradients(param, bottom_arrays, num_top=1, check_bottom=None, check_params=True,
                    in_place=False, seed=1701, rtol=1e-5, atol=1e-7, eps=1e-6, max_checks=150,
                    propagate_down=None):
    """Compare analytic and numerical gradients; raises AssertionError naming the first miss.

    ``check_bottom``: indices of bottoms to check (default all); ``propagate_down`` passed to
    backward (default: True for checked bottoms).
    """
    if isinstance(param, str):
        param = layer_param(param)
    originals = [np.array(a, dtype=np.float64) for a in bottom_arrays]
    layer, bottom, top = setup_layer(param, originals, num_top, in_place)
    check_bottom = list(range(len(bottom))) if check_bottom is None else list(check_bottom)
    if propagate_down is None:
        propagate_down = [i in check_bottom for i in range(len(bottom))]
    rs = np.random.RandomState(seed)

    def run_forward():
        for b, a in zip(bottom, originals):
            b.reshape(a.shape)
            b.xdata[...] = a
        backend.set_random_seed(seed)
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        return [np.array(t.xdata, copy=True) for t in top]

    outs = run_forward()
    R = [rs.standard_normal(o.shape) for o in outs]

    def objective():
        return sum(float((o * r).sum()) for o, r in zip(run_forward(), R))

    # Analytic gradients.
    run_forward()
    for t, r in zip(top, R):
        t.xdiff[...] = r
    for b in layer.blobs:
        b.xdiff[...] = 0
    layer.backward(top, propagate_down, bottom)
    analytic_bottom = {i: np.array(bottom[i].xdiff, copy=True) for i in check_bottom}
    analytic_param = [np.array(b.xdiff, copy=True) for b in layer.blobs] if check_params else []

    def numeric(get_array, index):
        arr = get_array()
        old = arr.flat[index]
        arr.flat[index] = old + eps
        fp = objective()
        arr = get_array()
        arr.flat[index] = old - eps
        fm = objective()
        get_array().flat[index] = old
        return (fp - fm) / (2 * eps)

    def compare(what, analytic, get_array):
        n = analytic.size
        idx = np.arange(n) if n <= max_checks else rs.choice(n, max_checks, replace=False)
        for k in idx:
            num = numeric(get_array, int(k))
            ana = analytic.flat[int(k)]
            if abs(num - ana) > atol + rtol * max(abs(num), abs(ana), 1.0):
                raise AssertionError(f"{param.type} '{param.name}': {what} gradient at flat "
                                     f"index {k}: analytic {ana:.8g}, numerical {num:.8g}")

    for i in check_bottom:
        compare(f"bottom {i}", analytic_bottom[i], lambda i=i: originals[i])
    for p, ana in enumerate(analytic_param):
        if layer.param_propagate_down[p]:
            compare(f"param {p}", ana, lambda p=p: layer.blobs[p].xdata)
    return layer


def forward_layer(text, arrays, num_top=1, in_place=False):
    """The layer of prototxt ``text`` set up on ``arrays`` and run forward once."""
    layer, bottom, top = setup_layer(layer_param(text), arrays, num_top=num_top,
                                     in_place=in_place)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def rand(shape, seed=0, scale=1.0):
    """Seeded standard normal values, times ``scale``."""
    return np.random.RandomState(seed).standard_normal(shape) * scale

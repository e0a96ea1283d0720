"""Fold BatchNorm (+ Scale / Bias) into the Convolution or InnerProduct before it, for deployment.

    minicaffe fold-bn deploy.prototxt trained.caffemodel folded.prototxt folded.caffemodel

In TEST phase BatchNorm, Scale and Bias are per-channel affine maps, so a chain of them after
a layer computing z = W x + b folds into that layer:

    BatchNorm:  y = (z - mean) / sqrt(var + eps)    (mean, var = stored sums * 1/factor)
    Scale:      y = gamma * z (+ beta)
    Bias:       y = z + beta
    chain:      y = A z + C   =>   W' = A W (row-wise per output channel),  b' = A b + C

The folded layer gets ``bias_term: true`` and, when the chain was not in place, the chain's
last top as its top. A chain stops at a layer that is not one of the three, at a blob that
another layer also reads, at a Scale/Bias with a second bottom or a parameter that is not
per-channel, and at a BatchNorm that is told ``use_global_stats: false``. Layers of the TEST
phase are folded; TRAIN-only layers are left as they are (the result is for inference: the
folded net no longer normalises with batch statistics when trained).
"""
import argparse
import logging
import os
import sys
import time

import numpy as np

from . import backend
from .errors import MiniCaffeError
from .io.protobinary import array_to_blobproto, write_binary
from .net import TEST, Net
from .net_state import filter_net, load_net_param
from .proto import caffe_pb2

log = logging.getLogger("minicaffe")

FOLDABLE_INTO = ("Convolution", "InnerProduct")
CHAIN_TYPES = ("BatchNorm", "Scale", "Bias")


def _readers(layers, start, blob):
    """Indices of the layers after ``start`` that read ``blob`` before it is produced again."""
    out = []
    for k in range(start + 1, len(layers)):
        lp = layers[k]
        if blob in lp.bottom:
            out.append(k)
        if blob in lp.top:
            break
    return out


def _channel_axis_ok(lp):
    """A Scale/Bias whose parameter covers exactly the channel axis (or is one scalar)."""
    p = lp.scale_param if lp.type == "Scale" else lp.bias_param
    return p.num_axes == 0 or (p.num_axes == 1 and p.axis in (1, -3))


def _affine(lp, layer, channels):
    """(a, c) with y = a * z + c for one chain layer, as float64 vectors of length channels."""
    def vec(blob):
        v = backend.to_numpy(blob.xdata).astype(np.float64).reshape(-1)
        if v.size == 1:
            v = np.full(channels, v[0])
        if v.size != channels:
            raise MiniCaffeError(f"layer '{lp.name}': parameter of size {v.size} does not match "
                                 f"{channels} channels")
        return v
    ones = np.ones(channels)
    if lp.type == "BatchNorm":
        factor = float(backend.to_numpy(layer.blobs[2].xdata).reshape(-1)[0])
        s = 0.0 if factor == 0 else 1.0 / factor
        mean, var = vec(layer.blobs[0]) * s, vec(layer.blobs[1]) * s
        a = 1.0 / np.sqrt(var + float(lp.batch_norm_param.eps))
        return a, -mean * a
    if lp.type == "Scale":
        gamma = vec(layer.blobs[0])
        beta = vec(layer.blobs[1]) if len(layer.blobs) > 1 else np.zeros(channels)
        return gamma, beta
    return ones, vec(layer.blobs[0])  # Bias


def _chain_after(layers, i, net):
    """The foldable chain after layer i: (list of layer indices, the chain's output blob)."""
    blob = layers[i].top[0]
    chain = []
    cur = i
    while True:
        readers = _readers(layers, cur, blob)
        if not readers:
            break
        k = readers[0]
        lp = layers[k]
        if lp.type not in CHAIN_TYPES or len(lp.bottom) != 1 or len(lp.top) != 1:
            break
        if lp.name not in net.layer_by_name or not net.layer_by_name[lp.name].blobs:
            break
        if lp.type == "BatchNorm" and lp.batch_norm_param.HasField("use_global_stats") \
                and not lp.batch_norm_param.use_global_stats:
            break
        if lp.type in ("Scale", "Bias") and not _channel_axis_ok(lp):
            break
        in_place = lp.top[0] == blob
        if not in_place and len(readers) != 1:
            break  # the chain's input blob is read elsewhere too: it must stay
        chain.append(k)
        blob = lp.top[0]
        cur = k
    return chain, blob


def fold_batchnorm(model, weights):
    """Fold the net's BatchNorm/Scale/Bias chains.

    ``model``: prototxt path or NetParameter; ``weights``: caffemodel path or NetParameter.
    Returns (net prototxt NetParameter, weights NetParameter, list of (layer, [folded names])).
    """
    net = Net(model, weights=weights, phase=TEST)
    raw = load_net_param(model)                  # all phases, upgraded, for the new prototxt
    test_param = filter_net(load_net_param(model, TEST))
    layers = list(test_param.layer)
    names = [lp.name for lp in layers]
    folds = []                                   # (index, chain indices, output blob)
    taken = set()
    for i, lp in enumerate(layers):
        if lp.type not in FOLDABLE_INTO or len(lp.bottom) != 1 or len(lp.top) != 1:
            continue
        if names.count(lp.name) != 1 or lp.name not in net.layer_by_name:
            continue
        # The output channels must be axis 1, the axis BatchNorm normalises per channel.
        axis = (lp.convolution_param.axis if lp.type == "Convolution"
                else lp.inner_product_param.axis)
        if axis != 1:
            continue
        chain, out_blob = _chain_after(layers, i, net)
        chain = [k for k in chain if k not in taken]
        if chain:
            taken.update(chain)
            folds.append((i, chain, out_blob))

    new_blobs = {}      # layer name -> (W', b')
    new_top = {}        # layer name -> top name
    removed = set()
    report = []
    for i, chain, out_blob in folds:
        lp = layers[i]
        layer = net.layer_by_name[lp.name]
        W = backend.to_numpy(layer.blobs[0].xdata).astype(np.float64)
        transpose = lp.type == "InnerProduct" and lp.inner_product_param.transpose
        channels = W.shape[1] if transpose else W.shape[0]
        b = (backend.to_numpy(layer.blobs[1].xdata).astype(np.float64).reshape(-1)
             if len(layer.blobs) > 1 else np.zeros(channels))
        A, C = np.ones(channels), np.zeros(channels)
        for k in chain:
            a, c = _affine(layers[k], net.layer_by_name[layers[k].name], channels)
            A, C = A * a, C * a + c
        if transpose:
            W2 = W * A[None, :]
        else:
            W2 = W * A.reshape((channels,) + (1,) * (W.ndim - 1))
        new_blobs[lp.name] = (W2.astype(np.float32), (A * b + C).astype(np.float32))
        new_top[lp.name] = out_blob
        chain_names = [layers[k].name for k in chain]
        removed.update(chain_names)
        report.append((lp.name, chain_names))

    def set_bias(lp):
        p = lp.convolution_param if lp.type == "Convolution" else lp.inner_product_param
        p.bias_term = True

    test_state = caffe_pb2.NetState(phase=TEST)
    out_param = caffe_pb2.NetParameter()
    out_param.CopyFrom(raw)
    out_param.ClearField("layer")
    for lp in raw.layer:
        in_test = len(filter_net(caffe_pb2.NetParameter(layer=[lp], state=test_state)).layer)
        if in_test and lp.name in removed:
            continue
        nl = out_param.layer.add()
        nl.CopyFrom(lp)
        if in_test and lp.name in new_blobs:
            set_bias(nl)
            nl.top[0] = new_top[lp.name]
            nl.ClearField("blobs")

    out_weights = caffe_pb2.NetParameter(name=net.name)
    for lp in net.to_proto().layer:
        if lp.name in removed or lp.type == "Split":
            continue
        nl = out_weights.layer.add()
        nl.CopyFrom(lp)
        if lp.name in new_blobs:
            set_bias(nl)
            nl.top[0] = new_top[lp.name]
            nl.ClearField("blobs")
            for arr in new_blobs[lp.name]:
                array_to_blobproto(arr, proto=nl.blobs.add())
    return out_param, out_weights, report


def fold_bn_files(model, weights, out_model, out_weights):
    """Fold and write the new prototxt and caffemodel; returns the fold report."""
    param, wparam, report = fold_batchnorm(model, weights)
    tmp = f"{out_model}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(param))
    os.replace(tmp, out_model)
    write_binary(wparam, os.fspath(out_weights))
    return report


def compare_nets(model_a, weights_a, model_b, weights_b, iters=0, seed=0):
    """Run both nets (TEST) on the same random inputs.

    Returns (max |difference| per output blob, seconds per forward of a, of b); the times are
    None when ``iters`` is 0.
    """
    na = Net(model_a, weights=weights_a, phase=TEST)
    nb = Net(model_b, weights=weights_b, phase=TEST)
    rs = np.random.RandomState(seed)
    for name in na.inputs:
        x = rs.standard_normal(tuple(na.blobs[name].shape)).astype(np.float32)
        na.blobs[name].data[...] = x
        if name in nb.blobs:
            nb.blobs[name].data[...] = x
    na.forward()
    nb.forward()
    diffs = {}
    for name in na.outputs:
        if name not in nb.blobs:
            continue
        a = backend.to_numpy(na.blobs[name].data)
        b = backend.to_numpy(nb.blobs[name].data)
        diffs[name] = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0

    def timed(n):
        if not iters:
            return None
        n.forward()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(iters):
                n.forward()
            best = min(best, (time.perf_counter() - t0) / iters)
        return best
    return diffs, timed(na), timed(nb)


def main_fold_bn(argv=None, prog="minicaffe fold-bn"):
    """``minicaffe fold-bn MODEL WEIGHTS OUT_MODEL OUT_WEIGHTS [--check] [--time N]``."""
    ap = argparse.ArgumentParser(
        prog=prog, description="Fold BatchNorm/Scale/Bias after Convolution/InnerProduct "
        "into its weights and bias (for deployment).")
    ap.add_argument("model", help="net prototxt")
    ap.add_argument("weights", help="trained .caffemodel")
    ap.add_argument("out_model", help="folded prototxt to write")
    ap.add_argument("out_weights", help="folded .caffemodel to write")
    ap.add_argument("--check", action="store_true",
                    help="run both nets on random inputs and print the largest difference "
                    "(the net needs Input layers)")
    ap.add_argument("--time", type=int, default=0, metavar="N",
                    help="also time N forward passes of both nets and print the speed-up")
    args = ap.parse_args(argv)
    try:
        report = fold_bn_files(args.model, args.weights, args.out_model, args.out_weights)
    except MiniCaffeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    if not report:
        print("No BatchNorm/Scale/Bias layer follows a Convolution or InnerProduct: "
              "nothing folded (the files were written unchanged).")
    for name, chain in report:
        print(f"folded {' + '.join(chain)} into {name}")
    print(f"wrote {args.out_model} and {args.out_weights}")
    if args.check or args.time:
        try:
            diffs, ta, tb = compare_nets(args.model, args.weights, args.out_model,
                                         args.out_weights, args.time)
        except MiniCaffeError as e:
            print(f"{prog}: cannot run the nets to compare them: {e}", file=sys.stderr)
            return 1
        for name, d in diffs.items():
            print(f"output '{name}': max |original - folded| = {d:.3g}")
        if ta is not None:
            print(f"forward: original {ta * 1e3:.3f} ms, folded {tb * 1e3:.3f} ms, "
                  f"speed-up {ta / tb:.2f}x")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_fold_bn())

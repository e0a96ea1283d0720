"""``minicaffe classify``: top-k classes of images through a deploy net.

The CIFAR-10 LMDBs keep the file's RGB channel order (as Caffe's convert_cifar_data), so the
default is RGB, 0..255, minus the mean image; ``--channel_swap 2,1,0`` gives Caffe's usual BGR
for ImageNet-style models.
"""
import argparse
import os

import numpy as np

from ..errors import MiniCaffeError


def _labels(path, n):
    if path:
        if not os.path.exists(path):
            raise MiniCaffeError(f"{path}: no such file")
        with open(path) as f:
            names = [ln.strip() for ln in f if ln.strip()]
        return names
    if n == 10:
        from ..data.cifar10 import CLASSES
        return list(CLASSES)
    return [str(i) for i in range(n)]


def classify(model, weights, images, mean=None, labels=None, top_k=5, channel_swap=None,
             output=None):
    from .. import io as cio
    from ..net import TEST, Net
    net = Net(model, weights, TEST)
    inp = net.inputs[0]
    shape = net.blobs[inp].shape
    if len(shape) != 4:
        raise MiniCaffeError(f"{model}: input '{inp}' must be N x C x H x W, got {tuple(shape)}")
    t = cio.Transformer({inp: (len(images),) + tuple(shape[1:])})
    t.set_transpose(inp, (2, 0, 1))
    t.set_raw_scale(inp, 255)
    if channel_swap:
        t.set_channel_swap(inp, channel_swap)
    if mean:
        t.set_mean(inp, cio.read_mean(mean))
    batch = []
    for path in images:
        if not os.path.exists(path):
            raise MiniCaffeError(f"{path}: no such file")
        batch.append(t.preprocess(inp, cio.load_image(path, color=shape[1] == 3)))
    net.blobs[inp].reshape(len(images), *shape[1:])
    net.reshape()
    out = net.forward(**{inp: np.stack(batch)})
    name = output or net.outputs[-1]
    probs = np.asarray(out[name]).reshape(len(images), -1)
    names = _labels(labels, probs.shape[1])
    results = []
    for path, p in zip(images, probs):
        order = np.argsort(-p, kind="stable")[:top_k]
        results.append((path, [(names[i] if i < len(names) else str(i), float(p[i]))
                               for i in order]))
    return results


def main_classify(argv=None):
    ap = argparse.ArgumentParser(prog="minicaffe classify",
                                 description="Print the top-k classes of each image.")
    ap.add_argument("--model", required=True, help="deploy prototxt (Input layer, softmax output)")
    ap.add_argument("--weights", required=True, help=".caffemodel")
    ap.add_argument("--mean", help="mean image (.binaryproto) to subtract")
    ap.add_argument("--labels", help="text file with one class name per line")
    ap.add_argument("--top_k", type=int, default=5)
    ap.add_argument("--channel_swap", help="e.g. 2,1,0 for RGB -> BGR")
    ap.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
    swap = tuple(int(c) for c in args.channel_swap.split(",")) if args.channel_swap else None
    for path, top in classify(args.model, args.weights, args.images, args.mean, args.labels,
                              args.top_k, swap):
        print(path)
        for name, p in top:
            print(f"  {p:.4f} - \"{name}\"")
    return 0

"""Benchmark of minicaffe's BatchNorm, Scale and Bias layers (a script, not a timed test).

1. Forward and backward times of BatchNorm (batch statistics, TRAIN), Scale, Bias,
   Scale(bias_term) and Scale followed by Bias, at 100x32x32x32, 100x32x16x16 and 100x64x8x8
   (float32), next to PyTorch's CPU ``batch_norm`` and an affine multiply-add when torch is
   installed (``pip install torch==2.13.0``; never a minicaffe dependency), with ratios.
2. Peak memory (tracemalloc: NumPy reports its array buffers to it) of a training iteration of
   the CIFAR-10 batch-norm example net, with and without its BatchNorm/Scale/Bias layers. The
   net is built here from a prototxt string with Input layers; that part is skipped with a
   message while a layer type it needs is not registered.

Usage: python tools/bench_bn.py [--repeat N] [--threads T] [--no-memory] [--no-speed]
Targets: BatchNorm fwd+bwd <= 1.5x PyTorch; Scale(bias_term) no slower than Scale + Bias;
peak memory with BN <= 1.3x without.
"""
import argparse
import gc
import sys
import time
import tracemalloc

import minicaffe as caffe
import numpy as np
from google.protobuf import text_format
from minicaffe.blob import Blob
from minicaffe.layer import create_layer, layer_types
from minicaffe.proto import caffe_pb2

from .harness import rounds

SHAPES = [(100, 32, 32, 32), (100, 32, 16, 16), (100, 64, 8, 8)]


def best_times(candidates, repeat):
    """Best time (ms) of each named callable, timed round by round.

    Every round times each candidate once, so all of them meet the same load from other
    processes (the machine is shared); the best of the rounds is the figure least disturbed.
    """
    return {k: min(v) * 1e3 for k, v in rounds(candidates, repeat, warmup=1).items()}


# ------------------------------------------------------------------------------ layers
def make_layer(text, shape, in_place, rs, bottom=None):
    lp = text_format.Parse(text, caffe_pb2.LayerParameter())
    lp.name = lp.name or "bench"
    lp.phase = caffe_pb2.TRAIN
    layer = create_layer(lp)
    if bottom is None:
        bottom = Blob(shape)
        bottom.xdata[...] = rs.standard_normal(shape).astype(np.float32)
    top = bottom if in_place else Blob()
    layer.setup([bottom], [top])
    top.xdiff[...] = rs.standard_normal(shape).astype(np.float32)
    return layer, [bottom], [top]


def chain_calls(layers):
    """Forward and backward callables of a chain of (layer, bottom, top)."""
    def fwd():
        for layer, b, t in layers:
            layer.reshape(b, t)
            layer.forward(b, t)

    def bwd():
        for layer, b, t in reversed(layers):
            layer.backward(t, [True] * len(b), b)
    fwd()
    return fwd, bwd


# Run in place, each timed call works on the previous call's output: a scale of 1 keeps the
# values from drifting into denormals (which would time something else).
LAYERS = [
    ("BatchNorm", 'type: "BatchNorm"'),
    ("Scale", 'type: "Scale" scale_param { filler { value: 1 } }'),
    ("Bias", 'type: "Bias" bias_param { filler { value: 0.01 } }'),
    ("Scale(bias_term)", 'type: "Scale" scale_param { bias_term: true '
                         'filler { value: 1 } bias_filler { value: 0.01 } }'),
]


def shape_candidates(shape, rs, torch):
    """{(name, in_place, 'fwd'|'bwd'): callable} for one shape; torch entries time fwd and
    fwd+bwd (its backward alone cannot be run twice on one graph)."""
    cands = {}
    for key, text in LAYERS:
        for in_place in (False, True):
            f, b = chain_calls([make_layer(text, shape, in_place, rs)])
            cands[(key, in_place, "fwd")] = f
            cands[(key, in_place, "bwd")] = b
    for in_place in (False, True):
        s = make_layer(LAYERS[1][1], shape, in_place, rs)
        b = make_layer(LAYERS[2][1], shape, True, rs, bottom=s[2][0])  # Bias in place on it
        f, bw = chain_calls([s, b])
        cands[("Scale+Bias", in_place, "fwd")] = f
        cands[("Scale+Bias", in_place, "bwd")] = bw
    if torch is not None:
        F = torch.nn.functional
        C = shape[1]
        x = torch.from_numpy(rs.standard_normal(shape).astype(np.float32))
        g = torch.from_numpy(rs.standard_normal(shape).astype(np.float32))
        w = torch.from_numpy(rs.standard_normal(C).astype(np.float32))
        bb = torch.from_numpy(rs.standard_normal(C).astype(np.float32))
        xg = x.clone().requires_grad_(True)
        wg = w.clone().requires_grad_(True)
        bg = bb.clone().requires_grad_(True)

        def bn_fwd():
            with torch.no_grad():
                F.batch_norm(x, None, None, training=True, eps=1e-5)

        def bn_fb():
            y = F.batch_norm(xg, None, None, training=True, eps=1e-5)
            torch.autograd.grad(y, xg, g)

        def aff_fwd():
            with torch.no_grad():
                torch.addcmul(bb[:, None, None], x, w[:, None, None])

        def aff_fb():
            y = torch.addcmul(bg[:, None, None], xg, wg[:, None, None])
            torch.autograd.grad(y, (xg, wg, bg), g)
        cands[("torch_bn", None, "fwd")] = bn_fwd
        cands[("torch_bn", None, "fb")] = bn_fb
        cands[("torch_affine", None, "fwd")] = aff_fwd
        cands[("torch_affine", None, "fb")] = aff_fb
    return cands


def bench_speed(repeat, threads):
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        torch = None
        print("torch is not installed: PyTorch columns skipped "
              "(pip install torch==2.13.0 for the CPU build)\n")
    rs = np.random.default_rng(1701)
    rows = []
    for shape in SHAPES:
        t = best_times(shape_candidates(shape, rs, torch), repeat)
        res = {}
        for key, _ in LAYERS + [("Scale+Bias", None)]:
            for in_place in (False, True):
                res[(key, in_place)] = (t[(key, in_place, "fwd")], t[(key, in_place, "bwd")])
        if torch is not None:
            for key in ("torch_bn", "torch_affine"):
                f, fb = t[(key, None, "fwd")], t[(key, None, "fb")]
                res[key] = (f, fb - f)
        rows.append((shape, res))

    print(f"Forward / backward times in ms (best of {repeat} interleaved rounds), float32, NumPy "
          f"{np.__version__}" + ("" if torch is None else
                                 f", PyTorch {torch.__version__} with {threads} threads"))
    header = f"{'layer':<22}{'in place':>9}" + "".join(
        f"{'x'.join(map(str, s)):>26}" for s in SHAPES)
    print(header)
    print(f"{'':<31}" + "".join(f"{'fwd':>9}{'bwd':>8}{'total':>9}" for _ in SHAPES))
    keys = ["BatchNorm", "Scale", "Bias", "Scale(bias_term)", "Scale+Bias"]
    for key in keys:
        for in_place in (False, True):
            line = f"{key:<22}{'yes' if in_place else 'no':>9}"
            for _, res in rows:
                f, b = res[(key, in_place)]
                line += f"{f:9.3f}{b:8.3f}{f + b:9.3f}"
            print(line)
    if torch is not None:
        for key, label in [("torch_bn", "torch batch_norm"), ("torch_affine", "torch addcmul")]:
            line = f"{label:<22}{'':>9}"
            for _, res in rows:
                f, b = res[key]
                line += f"{f:9.3f}{b:8.3f}{f + b:9.3f}"
            print(line)
        print("(torch backward = best fwd+bwd - best fwd)")
        print("\nRatios (fwd+bwd):")
        for shape, res in rows:
            tb = sum(res["torch_bn"])
            ta = sum(res["torch_affine"])
            bn = [sum(res[("BatchNorm", ip)]) / tb for ip in (False, True)]
            sb = [sum(res[("Scale(bias_term)", ip)]) / ta for ip in (False, True)]
            print(f"  {'x'.join(map(str, shape)):<14} BatchNorm / torch batch_norm: "
                  f"{bn[0]:.2f} (out of place) {bn[1]:.2f} (in place)   "
                  f"Scale(bias_term) / torch addcmul: {sb[0]:.2f} / {sb[1]:.2f}")
    print("\nScale(bias_term) / (Scale + Bias), fwd+bwd:")
    for shape, res in rows:
        r = [sum(res[("Scale(bias_term)", ip)]) / sum(res[("Scale+Bias", ip)])
             for ip in (False, True)]
        print(f"  {'x'.join(map(str, shape)):<14} {r[0]:.2f} (out of place) "
              f"{r[1]:.2f} (in place)")


# ------------------------------------------------------------------------------ memory
NET_HEAD = """
name: "cifar10_bn_bench"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 100 dim: 3 dim: 32 dim: 32 } shape { dim: 100 } } }
"""


def conv(name, bottom, num, std):
    return f"""
layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"
  param {{ lr_mult: 1 }}
  convolution_param {{ num_output: {num} pad: 2 kernel_size: 5 stride: 1 bias_term: false
    weight_filler {{ type: "gaussian" std: {std} }} }} }}"""


def bn_block(i, blob):
    return f"""
layer {{ name: "bn{i}" type: "BatchNorm" bottom: "{blob}" top: "{blob}" }}
layer {{ name: "scale{i}" type: "Scale" bottom: "{blob}" top: "{blob}" }}
layer {{ name: "bias{i}" type: "Bias" bottom: "{blob}" top: "{blob}" }}"""


def pool(name, bottom, kind):
    return f"""
layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}"
  pooling_param {{ pool: {kind} kernel_size: 3 stride: 2 }} }}"""


def relu(i, blob):
    return f"""
layer {{ name: "relu{i}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}"""


def cifar_net(with_bn):
    bn = bn_block if with_bn else (lambda i, b: "")
    return (NET_HEAD + conv("conv1", "data", 32, 1e-4) + pool("pool1", "conv1", "MAX") +
            bn(1, "pool1") + relu(1, "pool1") +
            conv("conv2", "pool1", 32, 1e-2) + bn(2, "conv2") + relu(2, "conv2") +
            pool("pool2", "conv2", "AVE") +
            conv("conv3", "pool2", 64, 1e-2) + bn(3, "conv3") + relu(3, "conv3") +
            pool("pool3", "conv3", "AVE") + """
layer { name: "ip1" type: "InnerProduct" bottom: "pool3" top: "ip1"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
""")


def training_peak(with_bn, iters=2):
    """Peak traced bytes of building the net and running ``iters`` training iterations."""
    param = text_format.Parse(cifar_net(with_bn), caffe_pb2.NetParameter())
    gc.collect()
    tracemalloc.start()
    try:
        net = caffe.Net(param, caffe.TRAIN)
        rs = np.random.default_rng(1)
        net.blobs["data"].data[...] = rs.standard_normal((100, 3, 32, 32)).astype(np.float32)
        net.blobs["label"].data[...] = rs.integers(0, 10, 100)
        t0 = time.perf_counter()
        for _ in range(iters):
            net.clear_param_diffs()
            net.forward_backward()
            for blob, spec in net.learnable_params:   # plain SGD step, in place
                if spec.lr_mult:
                    blob.data[...] -= (0.001 * spec.lr_mult) * blob.diff
        dt = (time.perf_counter() - t0) / iters
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del net
    gc.collect()
    return peak, dt


def bench_memory():
    need = ["Convolution", "Pooling", "ReLU", "InnerProduct", "SoftmaxWithLoss",
            "BatchNorm", "Scale", "Bias", "Input"]
    missing = [t for t in need if t not in layer_types()]
    if missing:
        print(f"\nPeak memory: skipped, layer types not registered yet: {', '.join(missing)}")
        return
    # Each measurement in a fresh process: the convolution's column workspace is shared by
    # all nets of a process, so a second net in the same process would not pay for it.
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(1) as pool:
        with_bn, t_bn = pool.apply(training_peak, (True,))
    with mp.get_context("spawn").Pool(1) as pool:
        without, t_plain = pool.apply(training_peak, (False,))
    mib = 1024.0 * 1024.0
    print("\nPeak traced memory of a training iteration, CIFAR-10 BN net, batch 100:")
    print(f"  with BatchNorm/Scale/Bias:    {with_bn / mib:8.1f} MiB   ({t_bn * 1e3:.0f} ms/iter "
          "under tracemalloc)")
    print(f"  without them:                 {without / mib:8.1f} MiB   ({t_plain * 1e3:.0f} "
          "ms/iter under tracemalloc)")
    print(f"  ratio: {with_bn / without:.2f} (target <= 1.3)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args(argv)
    caffe.set_mode_cpu()
    caffe.set_random_seed(1701)
    if not args.no_speed:
        bench_speed(args.repeat, args.threads)
    if not args.no_memory:
        bench_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())

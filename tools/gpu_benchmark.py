#!/usr/bin/env python3
"""GPU benchmark of the CIFAR-10 batch-norm example (models/cifar10_bn), beside PyTorch.

A tool, not a test. On one GPU (float32):

* train iteration, batch 100: one SGD step (forward, backward, update) of train_val.prototxt
  in TRAIN phase with its Data layers replaced by an Input layer holding random images (data
  loading excluded); also with the fused kernels switched off (plain CuPy expressions);
* forward, batch 1000: deploy.prototxt (TEST phase, softmax output) reshaped to 1000 images;
* per-layer forward / backward at batch 100, measured as ``minicaffe time --gpu 0`` does
  (the device synchronised after every layer);
* the memory pool (bytes in use / held) after the timed runs.

With torch importable and CUDA available to it, the same network runs in PyTorch on the same
GPU (NCHW and channels-last, cuDNN autotuned; the best layout counts) and every row shows
ours / PyTorch / ratio. Targets (issue 8): train within 2x of PyTorch at batch 100, forward
ahead of 2x at batch 1000. Times are medians over ``--rounds`` rounds of ``--iters``
iterations, each round timed between two device synchronisations.

Usage: python tools/gpu_benchmark.py [--iters N] [--rounds R] [--no-torch] [--device cpu]
``--device cpu`` runs the same script on the CPU (minicaffe and PyTorch), to check it
without a GPU; its figures say nothing about GPU speed.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
from torch_cifar_bn import cifar_bn_net  # noqa: E402  (tools/, beside this script)

TRAIN_VAL = os.path.join(ROOT, "models", "cifar10_bn", "train_val.prototxt")
DEPLOY = os.path.join(ROOT, "models", "cifar10_bn", "deploy.prototxt")


# ------------------------------------------------------------------------------- minicaffe
def train_param(batch):
    """train_val in TRAIN phase with one Input layer (data, label) instead of Data layers."""
    from minicaffe.io.prototxt import read_prototxt
    from minicaffe.net_state import filter_net
    from minicaffe.proto import caffe_pb2
    full = read_prototxt(TRAIN_VAL, caffe_pb2.NetParameter())
    full.state.phase = caffe_pb2.TRAIN
    param = filter_net(full)
    out = caffe_pb2.NetParameter(name=param.name)
    out.state.phase = caffe_pb2.TRAIN
    inp = out.layer.add(name="input", type="Input", top=["data", "label"])
    inp.input_param.shape.add(dim=[batch, 3, 32, 32])
    inp.input_param.shape.add(dim=[batch])
    for lp in param.layer:
        if lp.type not in ("Data", "Accuracy"):
            out.layer.add().CopyFrom(lp)
    return out


def deploy_param(batch):
    from minicaffe.io.prototxt import read_prototxt
    from minicaffe.proto import caffe_pb2
    param = read_prototxt(DEPLOY, caffe_pb2.NetParameter())
    for lp in param.layer:
        if lp.type == "Input":
            lp.input_param.shape[0].dim[0] = batch
    param.state.phase = caffe_pb2.TEST
    return param


def fill(net, seed=0):
    rng = np.random.default_rng(seed)
    d = net.blobs["data"]
    d.data[...] = rng.standard_normal(d.shape, dtype=np.float32) * 60.0
    if "label" in net.blobs:
        lab = net.blobs["label"]
        lab.data[...] = rng.integers(0, 10, lab.shape)


def make_solver(batch):
    import minicaffe as caffe
    from minicaffe.proto import caffe_pb2
    sp = caffe_pb2.SolverParameter(base_lr=0.001, momentum=0.9, weight_decay=0.004,
                                   lr_policy="fixed", max_iter=10 ** 7, display=0,
                                   random_seed=1701)
    sp.train_net_param.CopyFrom(train_param(batch))
    s = caffe.SGDSolver(sp)
    fill(s.net)
    return s


def per_layer(net, iters, sync):
    """Mean forward/backward ms per layer, each layer timed between synchronisations."""
    layers, bottoms, tops = net.layers, net._bottom_vecs, net._top_vecs
    need = net._bottom_need_backward
    fwd, bwd = np.zeros(len(layers)), np.zeros(len(layers))
    clock = time.perf_counter
    for _ in range(iters):
        for i, layer in enumerate(layers):
            sync()
            t0 = clock()
            layer.reshape(bottoms[i], tops[i])
            layer.forward(bottoms[i], tops[i])
            sync()
            fwd[i] += clock() - t0
        for i in range(len(layers) - 1, -1, -1):
            if net.layer_need_backward(i):
                sync()
                t0 = clock()
                layers[i].backward(tops[i], need[i], bottoms[i])
                sync()
                bwd[i] += clock() - t0
    return [(layer.name, layer.type, f * 1e3 / iters, b * 1e3 / iters)
            for layer, f, b in zip(layers, fwd, bwd)]


# ------------------------------------------------------------------------------- PyTorch
class TorchNet:
    """The same network in PyTorch (Caffe's ceil-mode pooling, BN + affine)."""

    def __init__(self, device, channels_last, batch):
        import torch
        import torch.nn as nn
        self.torch = torch
        self.F = torch.nn.functional
        self.device = device
        torch.manual_seed(1701)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        net = cifar_bn_net(nn)
        self.net = net.to(device).to(memory_format=self.fmt)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.001, momentum=0.9,
                                   weight_decay=0.004)
        self.x = torch.randn(batch, 3, 32, 32, device=device).contiguous(
            memory_format=self.fmt) * 60
        self.y = torch.randint(0, 10, (batch,), device=device)
        self.x_eval = None

    def train_step(self):
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        self.F.cross_entropy(self.net(self.x), self.y).backward()
        self.opt.step()

    def forward(self, batch):
        torch = self.torch
        if self.x_eval is None or self.x_eval.shape[0] != batch:
            self.x_eval = torch.randn(batch, 3, 32, 32, device=self.device).contiguous(
                memory_format=self.fmt)
        self.net.eval()
        with torch.inference_mode():
            self.F.softmax(self.net(self.x_eval), dim=1)


# ------------------------------------------------------------------------------- timing
def timed(fn, iters, rounds, sync, warmup=3):
    """Median ms per call over ``rounds`` rounds of ``iters`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3 / iters)
    return statistics.median(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=30, help="iterations per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--layer-iters", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--gpu", type=int, default=0)
    args = ap.parse_args(argv)

    import logging
    logging.getLogger("minicaffe").setLevel(logging.WARNING)
    import minicaffe as caffe
    from minicaffe import backend

    if args.device == "gpu":
        cp = backend.cupy_module()
        if cp is None:
            print("No GPU: CuPy is missing or finds no usable GPU (pip install minicaffe[gpu]);"
                  " use --device cpu to check the script on the CPU.")
            return 2
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
        props = cp.cuda.runtime.getDeviceProperties(args.gpu)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        print(f"GPU {args.gpu}: {name}, compute capability {props['major']}.{props['minor']}, "
              f"{props['totalGlobalMem'] / 2 ** 30:.1f} GiB; CuPy {cp.__version__}")
    else:
        caffe.set_mode_cpu()
        print("CPU run (checks the script; not a GPU figure)")
    sync = backend.synchronize

    torch_nets = {}
    tdevice, tsync = None, (lambda: None)
    if not args.no_torch:
        try:
            import torch
            if args.device == "gpu":
                if not torch.cuda.is_available():
                    raise ImportError("torch has no CUDA")
                tdevice = torch.device("cuda", args.gpu)
                torch.backends.cudnn.benchmark = True
                tsync = torch.cuda.synchronize
            else:
                tdevice = torch.device("cpu")
            print(f"PyTorch {torch.__version__}")
        except ImportError as e:
            print(f"PyTorch not used: {e}")
            tdevice = None

    def torch_best(what, batch, run):
        if tdevice is None:
            return None, ""
        best = None
        for layout in ("NCHW", "channels-last"):
            key = (layout, batch)
            if key not in torch_nets:
                torch_nets[key] = TorchNet(tdevice, layout != "NCHW", batch)
            t = timed(lambda: run(torch_nets[key]), args.iters, args.rounds, tsync)
            if best is None or t < best[0]:
                best = (t, layout)
        return best

    rows = []

    def row(name, ours, ref):
        t, layout = ref if ref else (None, "")
        ratio = f"{ours / t:6.2f}" if t else "     -"
        rows.append(f"{name:<40s} {ours:10.3f} {t if t else float('nan'):10.3f} "
                    f"{layout:>14s} {ratio}")

    # training, batch 100
    solver = make_solver(100)
    ours = timed(lambda: solver.step(1), args.iters, args.rounds, sync)
    row("train iteration, batch 100", ours,
        torch_best("train", 100, lambda tn: tn.train_step()))
    if args.device == "gpu":
        backend.set_fused_kernels(False)
        plain = timed(lambda: solver.step(1), args.iters, args.rounds, sync)
        backend.set_fused_kernels(True)
        rows.append(f"{'  same, fused kernels off':<40s} {plain:10.3f}")

    # forward, batch 1000
    net = caffe.Net(deploy_param(1000), caffe.TEST)
    fill(net)
    fwd = timed(lambda: net.forward_from_to(), max(args.iters // 3, 3), args.rounds, sync)
    row("forward, batch 1000", fwd, torch_best("forward", 1000, lambda tn: tn.forward(1000)))

    print()
    print(f"{'row (ms)':<40s} {'minicaffe':>10s} {'pytorch':>10s} {'layout':>14s} {'ratio':>6s}")
    for r in rows:
        print(r)

    # per-layer table, as `minicaffe time --gpu 0`
    table = per_layer(solver.net, args.layer_iters, sync)
    print()
    print(f"per layer, batch 100 (ms, synchronised after each layer, {args.layer_iters} "
          "iterations):")
    print(f"{'layer':<12s} {'type':<16s} {'forward':>9s} {'backward':>9s}")
    for name, ltype, f, b in table:
        print(f"{name:<12s} {ltype:<16s} {f:9.3f} {b:9.3f}")
    print(f"{'total':<12s} {'':<16s} {sum(t[2] for t in table):9.3f} "
          f"{sum(t[3] for t in table):9.3f}")
    used, held = backend.memory_pool_bytes()
    if args.device == "gpu":
        print(f"\nCuPy memory pool: {used / 2 ** 20:.1f} MiB in use, {held / 2 ** 20:.1f} MiB held")
    return 0


if __name__ == "__main__":
    sys.exit(main())

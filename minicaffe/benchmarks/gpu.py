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
import sys

import numpy as np

from .harness import layer_times, timed
from .nets import (CIFAR10_BN, CIFAR10_BN_DEPLOY, deploy_param, fill_inputs, input_net_param,
                   make_solver, quiet_logs)
from .torch_reference import TorchNet, cifar_bn_net

WEIGHT_DECAY = 0.004


def per_layer(net, iters, sync):
    """Mean forward/backward ms per layer, each layer timed between synchronisations."""
    fwd, bwd = np.zeros(len(net.layers)), np.zeros(len(net.layers))
    for _ in range(iters):
        f, b = layer_times(net, sync)
        fwd += f
        bwd += b
    return [(layer.name, layer.type, f * 1e3 / iters, b * 1e3 / iters)
            for layer, f, b in zip(net.layers, fwd, bwd)]


def use_device(args, caffe, backend):
    """Set minicaffe's mode for ``args.device`` and print what runs; False without a GPU."""
    if args.device == "cpu":
        caffe.set_mode_cpu()
        print("CPU run (checks the script; not a GPU figure)")
        return True
    cp = backend.cupy_module()
    if cp is None:
        print("No GPU: CuPy is missing or finds no usable GPU (pip install minicaffe[gpu]);"
              " use --device cpu to check the script on the CPU.")
        return False
    caffe.set_device(args.gpu)
    caffe.set_mode_gpu()
    props = cp.cuda.runtime.getDeviceProperties(args.gpu)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"GPU {args.gpu}: {name}, compute capability {props['major']}.{props['minor']}, "
          f"{props['totalGlobalMem'] / 2 ** 30:.1f} GiB; CuPy {cp.__version__}")
    return True


def torch_device(args):
    """(torch device, its synchronize) for ``args``, or (None, no-op) without torch."""
    if args.no_torch:
        return None, (lambda: None)
    try:
        import torch
        if args.device == "gpu":
            if not torch.cuda.is_available():
                raise ImportError("torch has no CUDA")
            torch.backends.cudnn.benchmark = True
            device, sync = torch.device("cuda", args.gpu), torch.cuda.synchronize
        else:
            device, sync = torch.device("cpu"), (lambda: None)
        print(f"PyTorch {torch.__version__}")
        return device, sync
    except ImportError as e:
        print(f"PyTorch not used: {e}")
        return None, (lambda: None)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=30, help="iterations per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--layer-iters", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--gpu", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    quiet_logs()
    import minicaffe as caffe
    from minicaffe import backend

    if not use_device(args, caffe, backend):
        return 2
    sync = backend.synchronize
    tdevice, tsync = torch_device(args)
    torch_nets = {}

    def torch_best(batch, run):
        if tdevice is None:
            return None, ""
        best = None
        for layout in ("NCHW", "channels-last"):
            key = (layout, batch)
            if key not in torch_nets:
                torch_nets[key] = TorchNet(cifar_bn_net, tdevice, layout != "NCHW", batch,
                                           weight_decay=WEIGHT_DECAY, input_scale=60.0,
                                           softmax=True)
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
    solver = make_solver(input_net_param(CIFAR10_BN, 100, caffe.TRAIN, drop=("Data", "Accuracy")),
                         weight_decay=WEIGHT_DECAY)
    fill_inputs(solver.net)
    ours = timed(lambda: solver.step(1), args.iters, args.rounds, sync)
    row("train iteration, batch 100", ours, torch_best(100, lambda tn: tn.train_step()))
    if args.device == "gpu":
        backend.set_fused_kernels(False)
        plain = timed(lambda: solver.step(1), args.iters, args.rounds, sync)
        backend.set_fused_kernels(True)
        rows.append(f"{'  same, fused kernels off':<40s} {plain:10.3f}")

    # forward, batch 1000
    net = caffe.Net(deploy_param(CIFAR10_BN_DEPLOY, 1000), caffe.TEST)
    fill_inputs(net)
    fwd = timed(lambda: net.forward_from_to(), max(args.iters // 3, 3), args.rounds, sync)
    row("forward, batch 1000", fwd, torch_best(1000, lambda tn: tn.eval_forward(1000)))

    print()
    print(f"{'row (ms)':<40s} {'minicaffe':>10s} {'pytorch':>10s} {'layout':>14s} {'ratio':>6s}")
    for r in rows:
        print(r)
    print_layers(per_layer(solver.net, args.layer_iters, sync), args.layer_iters)
    used, held = backend.memory_pool_bytes()
    if args.device == "gpu":
        print(f"\nCuPy memory pool: {used / 2 ** 20:.1f} MiB in use, {held / 2 ** 20:.1f} MiB held")
    return 0


def print_layers(table, iters):
    """The per-layer table, as ``minicaffe time --gpu 0`` prints it."""
    print()
    print(f"per layer, batch 100 (ms, synchronised after each layer, {iters} iterations):")
    print(f"{'layer':<12s} {'type':<16s} {'forward':>9s} {'backward':>9s}")
    for name, ltype, f, b in table:
        print(f"{name:<12s} {ltype:<16s} {f:9.3f} {b:9.3f}")
    print(f"{'total':<12s} {'':<16s} {sum(t[2] for t in table):9.3f} "
          f"{sum(t[3] for t in table):9.3f}")


if __name__ == "__main__":
    sys.exit(main())

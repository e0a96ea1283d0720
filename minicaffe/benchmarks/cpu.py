"""CPU benchmark of the CIFAR-10 batch-norm example (models/cifar10_bn), beside PyTorch.

A tool, not a test. Rows (float32, batch 100 unless said):

* train iteration, Input layers: one SGD solver step (forward, backward, update) of the
  train_val net with its Data layers replaced by Input layers holding random images, so data
  loading is excluded;
* train iteration, Data layer: the same with the real LMDB Data layer (prefetching);
  its ratio is to the Input-layer row (target: within 5 %);
* forward, batch 1000 (TEST phase);
* per-layer forward / backward (as ``minicaffe time``; BatchNorm+Scale+Bias make one row);
* peak RSS of ``minicaffe train`` on the example (50 iterations with a test pass at batch
  1000), in a child process, next to a PyTorch child that does the same work.

With torch installed (``pip install torch==2.13.0``; never a minicaffe dependency) the same
network runs in PyTorch, channels-last and NCHW, and every row shows ours / PyTorch's best
layout / ratio. Each side is timed in its own child process, never two in one: sharing a
process, torch's thread pools and memory slowed minicaffe's training iteration by ~30 %. The
parent runs the children one right after the other for ``--pairs`` passes (ours, PyTorch
NHWC, PyTorch NCHW, ours, ...), so all meet the same load (the machine is shared), and pools
their samples; figures are medians of the pooled samples.

Usage: python tools/benchmark.py [--rounds N] [--pairs K] [--no-torch] [--no-data] [--no-rss]
                                 [--quick]
Needs data/cifar10 (``python -m minicaffe data cifar10`` / tools/get_cifar10.py) for the Data
row and the RSS row; those rows are skipped with a message without it.
"""
import argparse
import os
import sys

import minicaffe
import numpy as np

from .harness import (alternate, emit_result, layer_sample, layer_times, med_ms, own_peak_mib,
                      rounds, run_child, sample_rounds)
from .nets import CIFAR10_BN, ROOT, fill_inputs, input_net_param, make_solver, quiet_logs
from .rss import add_rss_row
from .table import Table
from .torch_reference import TorchNet, cifar_bn_net, installed_version

DATA_DIR = os.path.join(ROOT, "data", "cifar10")
THREADS = 2
BN_GROUPS = {"scale": "bn", "bias": "bn"}   # scaleN / biasN are timed in the row of bnN
SKIP_ROWS = ("input", "label_input")
SIDES = ("ours", "torch-cl", "torch-nchw")
CHILD = "minicaffe.benchmarks.cpu"   # this module, run as a child process per side


def row_name(name):
    for prefix, group in BN_GROUPS.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return group + name[len(prefix):]
    return name


class Ours:
    """The example in minicaffe: a solver on the Input-layer train net, and the TEST net at
    batch 1000 sharing its weights (built on first use)."""

    def __init__(self):
        quiet_logs()
        self.solver = make_solver(input_net_param(CIFAR10_BN, 100, minicaffe.TRAIN))
        fill_inputs(self.solver.net)
        self.names = [row_name(layer.name) for layer in self.solver.net.layers]
        self.test_net = None

    def train_step(self):
        self.solver.step(1)

    def forward_test(self):
        if self.test_net is None:
            self.test_net = minicaffe.Net(input_net_param(CIFAR10_BN, 1000, minicaffe.TEST),
                                          phase=minicaffe.TEST)
            self.test_net.share_with(self.solver.net)
            fill_inputs(self.test_net, seed=1)
        self.test_net.forward()

    def per_layer(self):
        kept = [(n, f, b) for n, f, b in zip(self.names, *layer_times(self.solver.net))
                if n not in SKIP_ROWS]
        return layer_sample(*zip(*kept))

    def data_rounds(self, n):
        """The real Data-layer net's iteration and the Input-layer one, interleaved."""
        dsolver = make_solver(net_path=CIFAR10_BN)   # data paths relative to ROOT, the cwd
        return rounds({"data": lambda: dsolver.step(1), "data_input": self.train_step}, n,
                      warmup=3)


def side_child(side, n, with_data):
    """Measure one side (``ours``, ``torch-cl`` or ``torch-nchw``) in this process and emit
    its raw samples (seconds)."""
    # Torch builds its model (importing torch) first; ours is never built next to it.
    w = Ours() if side == "ours" else TorchNet(cifar_bn_net, channels_last=side == "torch-cl",
                                               threads=THREADS)
    timings = rounds({"train": w.train_step}, n, warmup=3)
    if side == "ours" and with_data:
        timings.update(w.data_rounds(n))
    forward = w.forward_test if side == "ours" else (lambda: w.eval_forward(1000))
    timings.update(rounds({"forward": forward}, max(3, n // 3), warmup=1))
    layers = sample_rounds(w.per_layer, n)
    emit_result({"timings": timings, "layers": layers, "peak_mib": own_peak_mib()})
    return 0


def run_side(side, n, with_data):
    args = ["--side", side, "--rounds", n] + ([] if with_data else ["--no-data"])
    return run_child(CHILD, args, side)


def fill_table(table, pooled):
    def med(side, part, key):
        vals = pooled.get(side, {}).get(part, {}).get(key)
        return med_ms(vals) if vals else None

    def add(name, part, key):
        vals = [med(s, part, key) for s in SIDES]
        table.add(name, *vals)
        return vals

    add("train iteration, batch 100 (Input layers)", "timings", "train")
    if "data" in pooled["ours"]["timings"]:
        d, i = med("ours", "timings", "data"), med("ours", "timings", "data_input")
        if table.torch_cols:
            table.lines.append(f"| train iteration, batch 100 (Data layer, prefetch) | "
                               f"{d:.2f} ms | | | {d / i:.3f}× of Input-layer ({i:.2f} ms) |")
        else:
            table.lines.append(f"| train iteration (Data layer) | {d:.2f} ms "
                               f"({d / i:.3f}× Input) |")
    add("forward, batch 1000 (TEST)", "timings", "forward")
    sums = [0.0, 0.0, 0.0]
    for key in pooled["ours"]["layers"]:
        o, a, b = add(key, "layers", key)
        sums[0] += o
        if a is not None and b is not None:
            sums[1] += a
            sums[2] += b
    table.add("sum of layers", *sums)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20,
                    help="timed rounds per row, all passes together (default 20)")
    ap.add_argument("--pairs", type=int, default=2,
                    help="passes over the sides, each a fresh process per side (default 2)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, no RSS row")
    ap.add_argument("--no-torch", action="store_true", help="minicaffe only")
    ap.add_argument("--no-data", action="store_true", help="skip the Data-layer row")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak RSS row")
    ap.add_argument("--rss-iters", type=int, default=50)
    ap.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.side is not None:
        return side_child(args.side, args.rounds, not args.no_data)
    if args.quick:
        args.rounds, args.no_rss = 5, True

    tv = None if args.no_torch else installed_version()
    if not args.no_torch and tv is None:
        print("torch is not installed: minicaffe figures only (pip install torch==2.13.0)")
    have_data = os.path.isdir(os.path.join(DATA_DIR, "cifar10_train_lmdb"))
    with_data = not args.no_data and have_data
    if not args.no_data and not have_data:
        print(f"(no {DATA_DIR}/cifar10_train_lmdb: Data-layer row skipped)")
    pairs = max(1, args.pairs)
    per_child = max(3, -(-args.rounds // pairs))
    print(f"minicaffe {getattr(minicaffe, '__version__', '?')}, numpy {np.__version__}"
          + (f", torch {tv} ({THREADS} threads)" if tv else "")
          + f", {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print("OPENBLAS_THREAD_TIMEOUT=" + os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"))
    print(f"rounds: {per_child * pairs} (median; {pairs} passes of {per_child} per side, "
          "one process per side and pass)\n", flush=True)

    sides = SIDES if tv else SIDES[:1]
    pooled = alternate(sides, pairs, lambda side: run_side(side, per_child, with_data))
    table = Table(tv is not None)
    fill_table(table, pooled)
    if not args.no_rss and have_data:
        add_rss_row(table, args.rss_iters, tv is not None)
    print("timing processes, peak RSS: "
          + ", ".join(f"{s} {pooled[s]['peak_mib']:.0f} MiB" for s in sides) + "\n")
    table.show()
    return 0


if __name__ == "__main__":
    sys.exit(main())

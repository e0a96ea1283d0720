#!/usr/bin/env python3
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
import importlib.metadata
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
# minicaffe before NumPy: it sets OpenBLAS's thread timeout, read when OpenBLAS loads. Importing
# it loads no compiled kernel, so the OpenMP wait policy those kernels set when they load never
# reaches the torch children, which build no minicaffe net.
import minicaffe  # noqa: E402

import numpy as np  # noqa: E402
from torch_cifar_bn import cifar_bn_net  # noqa: E402  (tools/, beside this script)

MODEL = os.path.join(ROOT, "models", "cifar10_bn", "train_val.prototxt")
DATA_DIR = os.path.join(ROOT, "data", "cifar10")
THREADS = 2
BN_GROUPS = {"scale": "bn", "bias": "bn"}   # scaleN / biasN are timed in the row of bnN
SKIP_ROWS = ("input", "label_input")
SIDES = ("ours", "torch-cl", "torch-nchw")


def layer_sample(keys, fwd, bwd):
    """One per-layer sample as {"<row> fwd": s, "<row> bwd": s, ...} in layer order; layers
    sharing a row add up."""
    out = {}
    for key, f, b in zip(keys, fwd, bwd):
        for label, v in (("fwd", f), ("bwd", b)):
            out[f"{key} {label}"] = out.get(f"{key} {label}", 0.0) + v
    return out


# ------------------------------------------------------------------------------- minicaffe
def quiet_logs():
    import logging
    logging.getLogger("minicaffe").setLevel(logging.WARNING)


def net_param_with_inputs(batch, phase):
    """The example's NetParameter for ``phase`` with its Data layers replaced by one Input
    layer giving ``data`` (batch, 3, 32, 32) and ``label`` (batch,)."""
    from minicaffe.io.prototxt import read_prototxt
    from minicaffe.net_state import filter_net
    from minicaffe.proto import caffe_pb2
    full = read_prototxt(MODEL, caffe_pb2.NetParameter())
    full.state.phase = phase
    param = filter_net(full)
    out = caffe_pb2.NetParameter(name=param.name)
    out.state.phase = phase
    inp = out.layer.add(name="input", type="Input", top=["data", "label"])
    inp.input_param.shape.add(dim=[batch, 3, 32, 32])
    inp.input_param.shape.add(dim=[batch])
    for lp in param.layer:
        if lp.type != "Data":
            out.layer.add().CopyFrom(lp)
    return out


def fill_inputs(net, seed=0):
    rng = np.random.default_rng(seed)
    data = net.blobs["data"].data
    data[...] = rng.standard_normal(data.shape, dtype=np.float32) * 60.0
    label = net.blobs["label"].data
    label[...] = rng.integers(0, 10, label.shape)


def make_solver(net_param=None, net_path=None):
    from minicaffe.proto import caffe_pb2
    from minicaffe.solvers import SGDSolver
    sp = caffe_pb2.SolverParameter(base_lr=0.001, momentum=0.9, lr_policy="fixed",
                                   max_iter=10 ** 6, random_seed=1701, display=0,
                                   solver_mode=caffe_pb2.SolverParameter.CPU)
    if net_param is not None:
        sp.train_net_param.CopyFrom(net_param)
    else:
        sp.train_net = net_path
    return SGDSolver(sp)


class OursPerLayer:
    """Per-layer forward/backward times of a net, as ``minicaffe time`` measures them."""

    def __init__(self, net):
        self.net = net
        self.names = [layer.name for layer in net.layers]

    def run(self):
        net = self.net
        layers, bottoms, tops = net.layers, net._bottom_vecs, net._top_vecs
        need = net._bottom_need_backward
        clock = time.perf_counter
        fwd, bwd = [0.0] * len(layers), [0.0] * len(layers)
        for i, layer in enumerate(layers):
            t0 = clock()
            layer.reshape(bottoms[i], tops[i])
            layer.forward(bottoms[i], tops[i])
            fwd[i] = clock() - t0
        for i in range(len(layers) - 1, -1, -1):
            if net.layer_need_backward(i):
                t0 = clock()
                layers[i].backward(tops[i], need[i], bottoms[i])
                bwd[i] = clock() - t0
        return fwd, bwd

    def sample(self):
        kept = [(row_name(n), f, b) for n, f, b in zip(self.names, *self.run())
                if row_name(n) not in SKIP_ROWS]
        return layer_sample(*zip(*kept))


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
        self.solver = make_solver(net_param_with_inputs(100, minicaffe.TRAIN))
        fill_inputs(self.solver.net)
        self.per_layer = OursPerLayer(self.solver.net).sample
        self.test_net = None

    def train_step(self):
        self.solver.step(1)

    def forward_test(self):
        if self.test_net is None:
            from minicaffe.net import TEST, Net
            self.test_net = Net(net_param_with_inputs(1000, TEST), phase=TEST)
            self.test_net.share_with(self.solver.net)
            fill_inputs(self.test_net, seed=1)
        self.test_net.forward()

    def data_rounds(self, n):
        """The real Data-layer net's iteration and the Input-layer one, interleaved."""
        dsolver = make_solver(net_path=MODEL)   # data paths relative to ROOT, the child's cwd
        return rounds({"data": lambda: dsolver.step(1), "data_input": self.train_step}, n,
                      warmup=3)


# ------------------------------------------------------------------------------- PyTorch
class Torch:
    """The same network in PyTorch (Caffe's ceil-mode pooling), one model per layout."""

    def __init__(self, channels_last, batch=100):
        import torch
        import torch.nn as nn
        self.torch, self.F = torch, __import__("torch.nn.functional", fromlist=["x"])
        torch.set_num_threads(THREADS)
        torch.manual_seed(1701)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        net = cifar_bn_net(nn)
        self.net = net.to(memory_format=self.fmt)
        self.opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
        self.x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=self.fmt)
        self.y = torch.randint(0, 10, (batch,))
        self.x_eval = None

    def train_step(self):
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        self.F.cross_entropy(self.net(self.x), self.y).backward()
        self.opt.step()

    def eval_forward(self, batch):
        torch = self.torch
        if self.x_eval is None or self.x_eval.shape[0] != batch:
            self.x_eval = torch.randn(batch, 3, 32, 32).contiguous(memory_format=self.fmt)
        self.net.eval()
        with torch.inference_mode():
            self.net(self.x_eval)

    def forward_test(self):
        self.eval_forward(1000)

    def per_layer(self):
        """Forward and backward of each module on its own (graph cut between modules; conv1
        computes no input gradient), the loss as the last row; flatten counts into ip1."""
        F = self.F
        self.net.train()
        mods = list(self.net.named_children()) + [("loss", lambda z: F.cross_entropy(z, self.y))]
        ins, outs, tf = [], [], []
        h = self.x
        for i, (_, m) in enumerate(mods):
            inp = h.detach().requires_grad_(i > 0)
            t0 = time.perf_counter()
            h = m(inp)
            tf.append(time.perf_counter() - t0)
            ins.append(inp)
            outs.append(h)
        tb = [0.0] * len(mods)
        g = None
        for i in reversed(range(len(mods))):
            t0 = time.perf_counter()
            outs[i].backward(g)
            tb[i] = time.perf_counter() - t0
            g = ins[i].grad
        self.net.zero_grad(set_to_none=True)
        keys = ["ip1" if name == "flatten" else name for name, _ in mods]
        return layer_sample(keys, tf, tb)


def torch_version():
    """The installed torch's version, read without importing it into this process."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------- timing
def rounds(candidates, n, warmup=2):
    """Time each named callable once per round, ``n`` rounds after ``warmup``; all candidates
    meet the same load from other processes. Returns name -> list of seconds."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    out = {k: [] for k in candidates}
    for _ in range(n):
        for k, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def sample_rounds(fn, n, warmup=2):
    """``n`` calls of ``fn`` (returning name -> seconds) after ``warmup``; name -> list."""
    for _ in range(warmup):
        fn()
    out = {}
    for _ in range(n):
        for k, v in fn().items():
            out.setdefault(k, []).append(v)
    return out


def med_ms(ts):
    return 1e3 * statistics.median(ts)


class Table:
    def __init__(self, torch_cols):
        self.torch_cols = torch_cols
        self.lines = []

    def header(self):
        if self.torch_cols:
            return "| row | minicaffe | PyTorch NHWC | PyTorch NCHW | ratio to best |\n" \
                   "|---|---:|---:|---:|---:|"
        return "| row | minicaffe |\n|---|---:|"

    def add(self, name, ours, t_cl=None, t_nchw=None, unit="ms", ref=None):
        if not self.torch_cols:
            self.lines.append(f"| {name} | {ours:.2f} {unit} |")
            return
        fmt = (lambda v: "—" if v is None else f"{v:.2f} {unit}")
        best = ref if ref is not None else min((v for v in (t_cl, t_nchw) if v is not None),
                                               default=None)
        ratio = "" if best is None else f"{ours / best:.2f}×"
        self.lines.append(f"| {name} | {fmt(ours)} | {fmt(t_cl)} | {fmt(t_nchw)} | {ratio} |")

    def show(self):
        print(self.header())
        for line in self.lines:
            print(line)
        print(flush=True)


# ------------------------------------------------------------------------------- timing children
def side_child(side, n, with_data):
    """Measure one side (``ours``, ``torch-cl`` or ``torch-nchw``) in this process and print
    its raw samples (seconds) as one ``RESULT {json}`` line."""
    # Torch builds its model (importing torch) first; ours is never built next to it.
    w = Ours() if side == "ours" else Torch(channels_last=side == "torch-cl")
    timings = rounds({"train": w.train_step}, n, warmup=3)
    if side == "ours" and with_data:
        timings.update(w.data_rounds(n))
    timings.update(rounds({"forward": w.forward_test}, max(3, n // 3), warmup=1))
    layers = sample_rounds(w.per_layer, n)
    print("RESULT " + json.dumps({"timings": timings, "layers": layers,
                                  "peak_mib": own_peak_mib()}), flush=True)
    return 0


def run_side(side, n, with_data):
    """Run ``side_child`` in a fresh process (cwd ROOT: the prototxt's data paths are relative
    to the repository); return its result dict."""
    cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--rounds", str(n)]
    if not with_data:
        cmd.append("--no-data")
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"{side} child failed ({proc.returncode}):\n{out[-2000:]}")


def measure(sides, pairs, n, with_data):
    """``pairs`` passes over ``sides``, one child each, one right after the other; returns
    side -> {"timings": name -> samples, "layers": row -> samples, "peak_mib": max}."""
    pooled = {s: {"timings": {}, "layers": {}, "peak_mib": 0.0} for s in sides}
    for p in range(pairs):
        print(f"pass {p + 1}/{pairs}:", end="", flush=True)
        for side in sides:
            print(f" {side}", end="", flush=True)
            res, into = run_side(side, n, with_data), pooled[side]
            for part in ("timings", "layers"):
                for k, v in res[part].items():
                    into[part].setdefault(k, []).extend(v)
            into["peak_mib"] = max(into["peak_mib"], res["peak_mib"])
        print(flush=True)
    return pooled


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


# ------------------------------------------------------------------------------- RSS children
def own_peak_mib():
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited through fork
    from the parent that started it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_rss(which, iters):
    """Run the RSS workload ``which`` ('ours' or 'torch') in a fresh process; return
    (exit status, its peak RSS in MiB or None, its output tail)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", which, str(iters)]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.decode(errors="replace")
    peak = None
    for line in out.splitlines():
        if line.startswith("PEAK_RSS_MIB "):
            peak = float(line.split()[1])
    return proc.returncode, peak, out[-2000:]


def rss_child(which, iters):
    """``ours``: ``minicaffe train`` on the example, ``iters`` iterations with tests
    (10 x 1000 images) at the start and the end, as the example's solver does every 1000
    iterations. ``torch``: the same work in PyTorch (channels-last) on random data."""
    if which == "ours":
        from minicaffe.cli import main as cli_main
        tmp = tempfile.mkdtemp(prefix="mc-bench-")
        solver = os.path.join(tmp, "solver.prototxt")
        with open(solver, "w") as f:
            f.write(f'net: "{MODEL}"\ntest_iter: 10\ntest_interval: {iters}\nbase_lr: 0.001\n'
                    f'momentum: 0.9\nlr_policy: "fixed"\ndisplay: 0\nmax_iter: {iters}\n'
                    f'snapshot_after_train: false\nsnapshot_prefix: "{tmp}/snap"\n'
                    f'random_seed: 1701\nsolver_mode: CPU\n')
        rc = cli_main(["train", "--solver", solver])
        if rc:
            return rc
    else:
        t = Torch(channels_last=True)
        for rep in range(2):
            for _ in range(10):
                t.eval_forward(1000)
            if rep == 0:
                for _ in range(iters):
                    t.train_step()
    print(f"PEAK_RSS_MIB {own_peak_mib():.1f}", flush=True)
    return 0


# ------------------------------------------------------------------------------- main
def add_rss_row(table, iters, with_torch):
    rc, ours_mib, tail = child_rss("ours", iters)
    if rc != 0 or ours_mib is None:
        print(f"minicaffe train failed ({rc}):\n{tail}")
        ours_mib = float("nan")
    t_mib = None
    if with_torch:
        rc2, t_mib, tail2 = child_rss("torch", iters)
        if rc2 != 0:
            print(f"torch child failed ({rc2}):\n{tail2}")
            t_mib = None
    what = f"peak RSS, train {iters} iters + 2 tests of 10×1000"
    if t_mib is not None:
        table.lines.append(f"| {what} | {ours_mib:.0f} MiB | {t_mib:.0f} MiB | | "
                           f"{ours_mib / t_mib:.2f}× |")
    else:
        table.lines.append(f"| {what} | {ours_mib:.0f} MiB |")


def main():
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
    ap.add_argument("--rss-child", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child is not None:
        return rss_child(args.rss_child[0], int(args.rss_child[1]))
    if args.side is not None:
        return side_child(args.side, args.rounds, not args.no_data)
    if args.quick:
        args.rounds, args.no_rss = 5, True

    tv = None if args.no_torch else torch_version()
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
    pooled = measure(sides, pairs, per_child, with_data)
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

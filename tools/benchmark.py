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
network runs in PyTorch in this process, both NCHW and channels-last, timed round by round
with ours so that all meet the same load (the machine is shared), and every row shows ours /
PyTorch's best layout / ratio. Figures are medians (train, forward) of the rounds.

Usage: python tools/benchmark.py [--rounds N] [--no-torch] [--no-data] [--no-rss] [--quick]
Needs data/cifar10 (``python -m minicaffe data cifar10`` / tools/get_cifar10.py) for the Data
row and the RSS row; those rows are skipped with a message without it.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)

MODEL = os.path.join(ROOT, "models", "cifar10_bn", "train_val.prototxt")
DATA_DIR = os.path.join(ROOT, "data", "cifar10")
THREADS = 2
BN_GROUPS = {"scale": "bn", "bias": "bn"}   # scaleN / biasN are timed in the row of bnN


# ------------------------------------------------------------------------------- minicaffe
def quiet_logs():
    import logging
    logging.getLogger("minicaffe").setLevel(logging.WARNING)


def net_param_with_inputs(batch, phase):
    """The example's NetParameter for ``phase`` with its Data layers replaced by one Input
    layer giving ``data`` (batch, 3, 32, 32) and ``label`` (batch,)."""
    from minicaffe.io.prototxt import read_prototxt
    from minicaffe.net import filter_net
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


def row_name(name):
    for prefix, group in BN_GROUPS.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return group + name[len(prefix):]
    return name


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
        net = nn.Sequential()
        for name, mod in [
                ("conv1", nn.Conv2d(3, 32, 5, padding=2, bias=False)),
                ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
                ("bn1", nn.BatchNorm2d(32, momentum=0.001)), ("relu1", nn.ReLU()),
                ("conv2", nn.Conv2d(32, 32, 5, padding=2, bias=False)),
                ("bn2", nn.BatchNorm2d(32, momentum=0.001)), ("relu2", nn.ReLU()),
                ("pool2", nn.AvgPool2d(3, 2, ceil_mode=True)),
                ("conv3", nn.Conv2d(32, 64, 5, padding=2, bias=False)),
                ("bn3", nn.BatchNorm2d(64, momentum=0.001)), ("relu3", nn.ReLU()),
                ("pool3", nn.AvgPool2d(3, 2, ceil_mode=True)),
                ("flatten", nn.Flatten()), ("ip1", nn.Linear(1024, 10))]:
            net.add_module(name, mod)
        with torch.no_grad():
            for name, std in (("conv1", 1e-4), ("conv2", 1e-2), ("conv3", 1e-2), ("ip1", 1e-2)):
                getattr(net, name).weight.normal_(0, std)
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
        fwd, bwd = {}, {}
        for (name, _), a, b in zip(mods, tf, tb):
            key = "ip1" if name == "flatten" else name
            fwd[key] = fwd.get(key, 0.0) + a
            bwd[key] = bwd.get(key, 0.0) + b
        return fwd, bwd


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
        best = ref if ref is not None else min(v for v in (t_cl, t_nchw) if v is not None)
        self.lines.append(f"| {name} | {fmt(ours)} | {fmt(t_cl)} | {fmt(t_nchw)} | "
                          f"{ours / best:.2f}× |")

    def show(self):
        print(self.header())
        for line in self.lines:
            print(line)
        print(flush=True)


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
def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds per row (default 20)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, no RSS row")
    ap.add_argument("--no-torch", action="store_true", help="minicaffe only")
    ap.add_argument("--no-data", action="store_true", help="skip the Data-layer row")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak RSS row")
    ap.add_argument("--rss-iters", type=int, default=50)
    ap.add_argument("--rss-child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child is not None:
        return rss_child(args.rss_child[0], int(args.rss_child[1]))
    if args.quick:
        args.rounds, args.no_rss = 5, True

    quiet_logs()
    import minicaffe
    from minicaffe.net import TEST, TRAIN, Net
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: minicaffe figures only (pip install torch==2.13.0)")
    have_data = os.path.isdir(os.path.join(DATA_DIR, "cifar10_train_lmdb"))
    print(f"minicaffe {getattr(minicaffe, '__version__', '?')}, numpy {np.__version__}"
          + (f", torch {torch.__version__} ({THREADS} threads)" if torch else "")
          + f", {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"rounds: {args.rounds} (median)\n", flush=True)
    table = Table(torch is not None)

    # -- training iteration, Input layers ------------------------------------------------
    solver = make_solver(net_param_with_inputs(100, minicaffe.TRAIN))
    fill_inputs(solver.net)
    cands = {"ours": lambda: solver.step(1)}
    if torch is not None:
        t_cl, t_nchw = Torch(True), Torch(False)
        cands["cl"], cands["nchw"] = t_cl.train_step, t_nchw.train_step
    r = rounds(cands, args.rounds, warmup=3)
    train_ours = med_ms(r["ours"])
    if torch is not None:
        table.add("train iteration, batch 100 (Input layers)", train_ours, med_ms(r["cl"]),
                  med_ms(r["nchw"]))
    else:
        table.add("train iteration, batch 100 (Input layers)", train_ours)

    # -- training iteration, Data layer --------------------------------------------------
    if not args.no_data and have_data:
        cwd = os.getcwd()
        os.chdir(ROOT)    # the prototxt's data paths are relative to the repository
        try:
            dsolver = make_solver(net_path=MODEL)
            r2 = rounds({"data": lambda: dsolver.step(1), "input": lambda: solver.step(1)},
                        args.rounds, warmup=3)
        finally:
            os.chdir(cwd)
        d, i = med_ms(r2["data"]), med_ms(r2["input"])
        line = f"| train iteration, batch 100 (Data layer, prefetch) | {d:.2f} ms |"
        if torch is not None:
            line += f" | | {d / i:.3f}× of Input-layer ({i:.2f} ms) |"
        else:
            line = f"| train iteration (Data layer) | {d:.2f} ms ({d / i:.3f}× Input) |"
        table.lines.append(line)
        del dsolver
    elif not args.no_data:
        print(f"(no {DATA_DIR}/cifar10_train_lmdb: Data-layer row skipped)")

    # -- forward at batch 1000 -----------------------------------------------------------
    test_net = Net(net_param_with_inputs(1000, TEST), phase=TEST)
    test_net.share_with(solver.net)
    fill_inputs(test_net, seed=1)
    cands = {"ours": test_net.forward}
    if torch is not None:
        cands["cl"] = lambda: t_cl.eval_forward(1000)
        cands["nchw"] = lambda: t_nchw.eval_forward(1000)
    r = rounds(cands, max(3, args.rounds // 3), warmup=1)
    if torch is not None:
        table.add("forward, batch 1000 (TEST)", med_ms(r["ours"]), med_ms(r["cl"]),
                  med_ms(r["nchw"]))
    else:
        table.add("forward, batch 1000 (TEST)", med_ms(r["ours"]))
    del test_net, cands, r

    # -- per layer -----------------------------------------------------------------------
    per = OursPerLayer(solver.net)
    cands = {"ours": per.run}
    if torch is not None:
        cands["cl"], cands["nchw"] = t_cl.per_layer, t_nchw.per_layer
    samples = {k: [] for k in cands}
    for _ in range(2):
        for fn in cands.values():
            fn()
    for _ in range(args.rounds):
        for k, fn in cands.items():
            samples[k].append(fn())
    rows = []
    for name in per.names:
        key = row_name(name)
        if key not in rows and key not in ("input", "label_input"):
            rows.append(key)

    def ours_row(key, which):
        vals = []
        for fwd, bwd in samples["ours"]:
            t = fwd if which == 0 else bwd
            vals.append(sum(v for n, v in zip(per.names, t) if row_name(n) == key))
        return med_ms(vals)

    def torch_row(k, key, which):
        vals = [s[which].get(key) for s in samples[k]]
        return None if vals[0] is None else med_ms(vals)

    sums = {k: 0.0 for k in ("ours", "cl", "nchw")}
    for key in rows:
        if key == "input":
            continue
        for which, label in ((0, "fwd"), (1, "bwd")):
            o = ours_row(key, which)
            sums["ours"] += o
            if torch is not None:
                a, b = torch_row("cl", key, which), torch_row("nchw", key, which)
                if a is None:
                    table.lines.append(f"| {key} {label} | {o:.2f} ms | — | — | |")
                    continue
                sums["cl"] += a
                sums["nchw"] += b
                table.add(f"{key} {label}", o, a, b)
            else:
                table.add(f"{key} {label}", o)
    if torch is not None:
        table.add("sum of layers", sums["ours"], sums["cl"], sums["nchw"])
    else:
        table.add("sum of layers", sums["ours"])

    # -- peak RSS ------------------------------------------------------------------------
    if not args.no_rss and have_data:
        rc, ours_mib, tail = child_rss("ours", args.rss_iters)
        if rc != 0 or ours_mib is None:
            print(f"minicaffe train failed ({rc}):\n{tail}")
            ours_mib = float("nan")
        t_mib = None
        if torch is not None:
            rc2, t_mib, tail2 = child_rss("torch", args.rss_iters)
            if rc2 != 0:
                print(f"torch child failed ({rc2}):\n{tail2}")
                t_mib = None
        what = f"peak RSS, train {args.rss_iters} iters + 2 tests of 10×1000"
        if t_mib is not None:
            table.lines.append(f"| {what} | {ours_mib:.0f} MiB | {t_mib:.0f} MiB | | "
                               f"{ours_mib / t_mib:.2f}× |")
        else:
            table.lines.append(f"| {what} | {ours_mib:.0f} MiB |")
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
          " MiB (torch included when loaded)\n")
    table.show()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU benchmark of the CIFAR-10 examples (models/cifar10_bn, models/cifar10_resnet20),
beside PyTorch.

A tool, not a test. Rows (float32, batch 100 unless said), for each net of ``--net``:

* train iteration, Input layers: one SGD solver step (forward, backward, update) of the
  train_val net with its Data layers replaced by Input layers holding random images, so data
  loading is excluded;
* forward, batch 1000 (TEST phase);

and for cifar10_bn also:

* train iteration, Data layer: the same with the real LMDB Data layer (prefetching);
  its ratio is to the Input-layer row (target: within 5 %);
* per-layer forward / backward (as ``minicaffe time``; BatchNorm+Scale+Bias make one row);
* peak RSS of ``minicaffe train`` on the example (50 iterations with a test pass at batch
  1000), in a child process, next to a PyTorch child that does the same work.

With torch installed (``pip install torch==2.13.0``; never a minicaffe dependency) the same
nets run in PyTorch, channels-last and NCHW. Each side is timed in its own child process with
the environment as given (without the thread defaults importing
minicaffe sets), never two in one: sharing a process, torch's thread pools and
memory slowed minicaffe's training iteration by ~30 %. The parent runs the children one right
after the other for ``--pairs`` passes (at least two: ours, PyTorch NHWC, PyTorch NCHW, ours,
...), so all meet the same load. Times are medians of the pooled samples; ratios (ours over
PyTorch's best layout) are taken pass by pass, and every row shows their median and min–max.

The machine may be shared: every child measures the CPU other processes used meanwhile (in
cores), and the parent prints it. ``--readme`` also prints the README's table, and refuses
to (exit status 3, saying why) when others used more than 0.2 cores during any timed child.

Usage: python tools/benchmark.py [--net cifar10_bn|resnet20|all] [--rounds N] [--pairs K]
                                 [--no-torch] [--no-data] [--no-rss] [--quick] [--readme]
Needs data/cifar10 (``python -m minicaffe data cifar10`` / tools/get_cifar10.py) for the Data
row and the RSS row; those rows are skipped with a message without it.
"""
import argparse
import os
import sys
import time

import minicaffe
import numpy as np

from .harness import (alternate, emit_result, layer_sample, layer_times, own_peak_mib, pool,
                      rounds, run_child, sample_rounds)
from .load import README_MAX_CORES, OtherLoad, readme_refusal
from .nets import ROOT, TRAIN_VAL, fill_inputs, input_net_param, make_solver, quiet_logs
from .rss import add_rss_row
from .stats import med_ms, ratio_summary
from .table import Table, fmt_ratio
from .torch_reference import TWINS, TorchNet, installed_version

DATA_DIR = os.path.join(ROOT, "data", "cifar10")
THREADS = 2
BN_GROUPS = {"scale": "bn", "bias": "bn"}   # scaleN / biasN are timed in the row of bnN
SKIP_ROWS = ("input", "label_input")
SIDES = ("ours", "torch-cl", "torch-nchw")
DETAILED = "cifar10_bn"   # the net with the per-layer, Data-layer and RSS rows
CHILD = "minicaffe.benchmarks.cpu"   # this module, run as a child process per side


def row_name(name):
    for prefix, group in BN_GROUPS.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return group + name[len(prefix):]
    return name


class Ours:
    """A net in minicaffe: a solver on its Input-layer train net, and its TEST net at batch
    1000 sharing the weights (built on first use)."""

    def __init__(self, model):
        quiet_logs()
        self.model = model
        self.solver = make_solver(input_net_param(model, 100, minicaffe.TRAIN))
        fill_inputs(self.solver.net)
        self.names = [row_name(layer.name) for layer in self.solver.net.layers]
        self.test_net = None

    def train_step(self):
        self.solver.step(1)

    def eval_forward(self, batch):
        if self.test_net is None:
            self.test_net = minicaffe.Net(input_net_param(self.model, batch, minicaffe.TEST),
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
        dsolver = make_solver(net_path=self.model)   # data paths relative to ROOT, the cwd
        return rounds({"data": lambda: dsolver.step(1), "data_input": self.train_step}, n,
                      warmup=3)


def side_child(net, side, n, with_data):
    """Measure one side (``ours``, ``torch-cl`` or ``torch-nchw``) of ``net`` in this process
    and emit its raw samples (seconds) and the other processes' load meanwhile (cores)."""
    # Torch builds its model (importing torch) first; ours is never built next to it.
    w = Ours(TRAIN_VAL[net]) if side == "ours" else TorchNet(
        TWINS[net], channels_last=side == "torch-cl", threads=THREADS)
    detailed = net == DETAILED
    with OtherLoad() as load:
        timings = rounds({"train": w.train_step}, n, warmup=3)
        if side == "ours" and with_data and detailed:
            timings.update(w.data_rounds(n))
        timings.update(rounds({"forward": lambda: w.eval_forward(1000)}, max(3, n // 3),
                              warmup=1))
        layers = sample_rounds(w.per_layer, n) if detailed else {}
    emit_result({"timings": timings, "layers": layers, "peak_mib": own_peak_mib(),
                 "others_cores": load.cores})
    return 0


def run_side(key, n, with_data):
    net, side = key
    args = ["--side", side, "--net", net, "--rounds", n] + ([] if with_data else ["--no-data"])
    return run_child(CHILD, args, "/".join(key))


# ------------------------------------------------------------------------------- report
def figure(part, key):
    """The median (ms) of samples ``key`` of a result's ``part``, None where it has none."""
    return lambda res: med_ms(res[part][key]) if res and res[part].get(key) else None


def layers_sum(keys):
    return lambda res: sum(med_ms(res["layers"][k]) for k in keys if k in res["layers"]) \
        if res and res["layers"] else None


class Report:
    """The rows of the runs of ``passes`` (one {(net, side): result} per pass)."""

    def __init__(self, passes, torch_cols):
        self.passes = passes
        self.pooled = {k: pool([p[k] for p in passes]) for k in passes[0]}
        self.table = Table(torch_cols)

    def row(self, name, net, fig, readme=False):
        def sides(results):
            return fig(results.get((net, "ours"))), [fig(results.get((net, s)))
                                                      for s in SIDES[1:]]
        ours, refs = sides(self.pooled)
        self.table.add(name, ours, *refs, ratios=ratio_summary([sides(p) for p in self.passes]),
                       readme=readme)

    def data_row(self):
        """The Data-layer iteration over the Input-layer one, measured in the same rounds."""
        data, inp = figure("timings", "data"), figure("timings", "data_input")
        d, i = (fig(self.pooled[(DETAILED, "ours")]) for fig in (data, inp))
        if d is None:
            return
        ratios = ratio_summary([(data(p[(DETAILED, "ours")]), [inp(p[(DETAILED, "ours")])])
                                for p in self.passes])
        if self.table.torch_cols:
            self.table.line(f"| {DETAILED}: train iteration, batch 100 (Data layer, prefetch; "
                            f"ratio to the Input-layer row, {i:.2f} ms) | {d:.2f} ms | | | "
                            f"{fmt_ratio(ratios, 3)} |", readme=True)
        else:
            self.table.line(f"| {DETAILED}: train iteration (Data layer) | {d:.2f} ms "
                            f"({ratios[0]:.3f}× Input) |", readme=True)

    def fill(self, nets):
        for net in nets:
            self.row(f"{net}: train iteration, batch 100 (Input layers)", net,
                     figure("timings", "train"), readme=True)
            if net == DETAILED:
                self.data_row()
            self.row(f"{net}: forward, batch 1000 (TEST)", net, figure("timings", "forward"),
                     readme=True)
        if DETAILED in nets:
            keys = list(self.pooled[(DETAILED, "ours")]["layers"])
            for key in keys:
                self.row(f"{DETAILED}: {key}", DETAILED, figure("layers", key))
            self.row(f"{DETAILED}: sum of layers", DETAILED, layers_sum(keys), readme=True)

    def loads(self):
        """(where, cores) of every timed child."""
        return [(f"{'/'.join(k)} in pass {i + 1}", res["others_cores"])
                for i, p in enumerate(self.passes) for k, res in p.items()]


def print_loads(report):
    print("other processes' CPU use during each timed child (cores):")
    for i, p in enumerate(report.passes):
        print(f"  pass {i + 1}: " + ", ".join(f"{'/'.join(k)} {res['others_cores']:.2f}"
                                            for k, res in p.items()))
    worst = max(c for _, c in report.loads())
    print(f"  most: {worst:.2f} (the README table needs at most {README_MAX_CORES})\n")
    return worst


def print_readme(report, argv, passes, per_child):
    """The README's table, or why not; the exit status."""
    why = readme_refusal(report.loads())
    if why:
        print(f"README table not printed: {why}")
        return 3
    worst = max(c for _, c in report.loads())
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"`python tools/benchmark.py {' '.join(argv)}` on {os.cpu_count()} CPUs, {when}: "
          f"times are medians of {passes} passes of {per_child} rounds, one process per side "
          f"and pass; ratios are taken pass by pass (ours over PyTorch's best layout in the "
          f"same pass), their median and min–max shown; other processes used at most "
          f"{worst:.2f} cores meanwhile.\n")
    print(report.table.text(readme=True) + "\n")
    return 0


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=tuple(TRAIN_VAL) + ("all",), default="all",
                    help="the nets whose train and forward rows run (default all)")
    ap.add_argument("--rounds", type=int, default=20,
                    help="timed rounds per row, all passes together (default 20)")
    ap.add_argument("--pairs", type=int, default=2,
                    help="passes over the sides, each a fresh process per side (default and "
                         "least 2)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, no RSS row")
    ap.add_argument("--no-torch", action="store_true", help="minicaffe only")
    ap.add_argument("--no-data", action="store_true", help="skip the Data-layer row")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak RSS row")
    ap.add_argument("--rss-iters", type=int, default=50)
    ap.add_argument("--readme", action="store_true",
                    help="also print the README table (refused when others loaded the CPUs)")
    ap.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.side is not None:
        return side_child(args.net, args.side, args.rounds, not args.no_data)
    if args.quick:
        args.rounds, args.no_rss = 5, True

    tv = None if args.no_torch else installed_version()
    if not args.no_torch and tv is None:
        print("torch is not installed: minicaffe figures only (pip install torch==2.13.0)")
    nets = tuple(TRAIN_VAL) if args.net == "all" else (args.net,)
    have_data = os.path.isdir(os.path.join(DATA_DIR, "cifar10_train_lmdb"))
    with_data = not args.no_data and have_data and DETAILED in nets
    if not args.no_data and not have_data:
        print(f"(no {DATA_DIR}/cifar10_train_lmdb: Data-layer row skipped)")
    pairs = max(2, args.pairs)
    per_child = max(3, -(-args.rounds // pairs))
    print(f"minicaffe {getattr(minicaffe, '__version__', '?')}, numpy {np.__version__}"
          + (f", torch {tv} ({THREADS} threads)" if tv else "")
          + f", {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    given = {k: minicaffe.user_environ.get(k, "unset") for k in (
        "OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print("children get the environment as given: " +
          ", ".join(f"{k}={v}" for k, v in given.items()) +
          " (minicaffe's children then set their own defaults, as a user's run does)")
    print(f"nets: {', '.join(nets)}; rounds: {per_child * pairs} (median; {pairs} passes of "
          f"{per_child} per side, one process per side and pass)\n", flush=True)

    sides = SIDES if tv else SIDES[:1]
    keys = [(net, side) for net in nets for side in sides]
    report = Report(alternate(keys, pairs, lambda key: run_side(key, per_child, with_data)),
                    tv is not None)
    report.fill(nets)
    if not args.no_rss and have_data and DETAILED in nets:
        add_rss_row(report.table, args.rss_iters, tv is not None)
    print("timing processes, peak RSS: "
          + ", ".join(f"{'/'.join(k)} {report.pooled[k]['peak_mib']:.0f} MiB" for k in keys))
    print_loads(report)
    print(report.table.text() + "\n", flush=True)
    return print_readme(report, argv, pairs, per_child) if args.readme else 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak resident set of ``minicaffe train`` on the CIFAR-10 BN example beside PyTorch doing
the same work, each in a child process of its own."""
import os
import sys
import tempfile

from .harness import own_peak_mib, run_module
from .nets import CIFAR10_BN
from .torch_reference import TorchNet, cifar_bn_net

CHILD = "minicaffe.benchmarks.rss"   # this module, run as a child process
THREADS = 2
PEAK = "PEAK_RSS_MIB "


def child_rss(which, iters):
    """Run the RSS workload ``which`` ('ours' or 'torch') in a fresh process; return
    (exit status, its peak RSS in MiB or None, its output tail)."""
    rc, out = run_module(CHILD, [which, iters])
    peak = None
    for line in out.splitlines():
        if line.startswith(PEAK):
            peak = float(line.split()[1])
    return rc, peak, out[-2000:]


def rss_child(which, iters):
    """``ours``: ``minicaffe train`` on the example, ``iters`` iterations with tests
    (10 x 1000 images) at the start and the end, as the example's solver does every 1000
    iterations. ``torch``: the same work in PyTorch (channels-last) on random data."""
    if which == "ours":
        from minicaffe.cli import main as cli_main
        tmp = tempfile.mkdtemp(prefix="mc-bench-")
        solver = os.path.join(tmp, "solver.prototxt")
        with open(solver, "w") as f:
            f.write(f'net: "{CIFAR10_BN}"\ntest_iter: 10\ntest_interval: {iters}\n'
                    f'base_lr: 0.001\nmomentum: 0.9\nlr_policy: "fixed"\ndisplay: 0\n'
                    f'max_iter: {iters}\nsnapshot_after_train: false\n'
                    f'snapshot_prefix: "{tmp}/snap"\nrandom_seed: 1701\nsolver_mode: CPU\n')
        rc = cli_main(["train", "--solver", solver])
        if rc:
            return rc
    else:
        t = TorchNet(cifar_bn_net, channels_last=True, threads=THREADS)
        for rep in range(2):
            for _ in range(10):
                t.eval_forward(1000)
            if rep == 0:
                for _ in range(iters):
                    t.train_step()
    print(f"{PEAK}{own_peak_mib():.1f}", flush=True)
    return 0


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
        table.line(f"| {what} | {ours_mib:.0f} MiB | {t_mib:.0f} MiB | | "
                   f"{ours_mib / t_mib:.2f}× | |", readme=True)
    else:
        table.line(f"| {what} | {ours_mib:.0f} MiB |", readme=True)


if __name__ == "__main__":
    sys.exit(rss_child(sys.argv[1], int(sys.argv[2])))

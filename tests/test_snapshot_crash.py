"""kill -9 during training never leaves a broken snapshot: a real ``minicaffe train``
subprocess snapshots every iteration (2 MB of weights and 2 MB of history per snapshot, so
writing takes a while) and is killed with SIGKILL at random moments; after every kill each
file under a snapshot name must load (weights into the net, solverstate into a solver), in
both snapshot formats. Leftover temporary files must be hidden ``.partial-<pid>`` names, and
the next run's first snapshot removes those of dead processes."""
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

import minicaffe as caffe
from test_cli import NET as TINY_NET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# test_cli's tiny net made big: a 1000 x 500 weight (2 MB per snapshot, as much history).
NET = (TINY_NET.replace("dim: 4 dim: 3", "dim: 2 dim: 500")
       .replace("dim: 4 dim: 2", "dim: 2 dim: 1000")
       .replace("num_output: 2", "num_output: 1000").replace("std: 0.5", "std: 0.01"))

SOLVER = """net: "net.prototxt"
base_lr: 0.01
momentum: 0.9
lr_policy: "fixed"
display: 0
max_iter: 100000
snapshot: 1
snapshot_prefix: "snaps/crash"
solver_mode: CPU
random_seed: 5
"""

FINAL = re.compile(r"^crash_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?$")
PARTIAL = re.compile(r"^\.crash_iter_\d+\.(caffemodel|solverstate)(\.h5)?\.partial-(\d+)$")
TRIALS = {"BINARYPROTO": 8, "HDF5": 7}


def _start(workdir):
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "minicaffe", "train", "--solver",
                             "solver.prototxt"], cwd=workdir, env=env,
                            stderr=subprocess.PIPE, text=True)


def _kill_at_random(proc, rng):
    """SIGKILL ``proc`` a random moment after its first snapshot began."""
    for line in proc.stderr:
        if "Snapshotting" in line:
            break
    time.sleep(rng.uniform(0.0, 0.35))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _check_snapshots(workdir, solver, net, killed_pid):
    """Every final-name file loads; partial files are hidden and only the last run's."""
    snaps = workdir / "snaps"
    loaded = 0
    partials = 0
    for name in sorted(os.listdir(snaps)):
        path = str(snaps / name)
        if PARTIAL.match(name):
            assert int(PARTIAL.match(name).group(3)) == killed_pid, name
            partials += 1
            continue
        m = FINAL.match(name)
        assert m, f"unexpected file {name}"
        if m.group(2) == "caffemodel":
            net.copy_from(path)
        else:
            solver.restore(path)
            assert solver.iter == int(m.group(1))
        loaded += 1
    return loaded, partials


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("fmt", sorted(TRIALS))
def test_kill_9_never_leaves_a_broken_snapshot(tmp_path, fmt):
    if fmt == "HDF5":
        pytest.importorskip("h5py")
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER + f"snapshot_format: {fmt}\n")
    (tmp_path / "snaps").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)        # learned_net paths in the solverstates are relative to here
    try:
        solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
        net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
        rng = random.Random(fmt)
        total_loaded = total_partials = 0
        for _ in range(TRIALS[fmt]):
            proc = _start(tmp_path)
            _kill_at_random(proc, rng)
            loaded, partials = _check_snapshots(tmp_path, solver, net, proc.pid)
            total_loaded += loaded
            total_partials += partials
    finally:
        os.chdir(cwd)
    assert total_loaded >= TRIALS[fmt]
    print(f"{fmt}: {TRIALS[fmt]} kills, {total_loaded} snapshot files loaded, "
          f"{total_partials} partial files left (each removed by the next run)")

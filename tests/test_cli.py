"""The `minicaffe` command through subprocesses: train with snapshots and resume, test, time,
device_query, Caffe's flag spellings, and one-line errors with the right exit codes."""
import os
import re
import signal
import subprocess
import sys

import pytest

from minicaffe.cli.entry import normalize_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" }
    shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "out"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
test_iter: 2
test_interval: 2
base_lr: 0.05
lr_policy: "step"
gamma: 0.5
stepsize: 2
momentum: 0.9
display: 1
max_iter: {max_iter}
snapshot: 2
solver_mode: CPU
random_seed: 3
"""


def run(args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("GLOG_minloglevel", None)
    return subprocess.run([sys.executable, "-m", "minicaffe", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(max_iter=4))
    return tmp_path


def test_normalize_argv():
    assert normalize_argv(["train", "-solver", "s", "-gpu=0", "--weights", "w", "-h"]) == \
        ["train", "--solver", "s", "--gpu=0", "--weights", "w", "-h"]
    assert normalize_argv(["test", "-iterations", "-5"]) == ["test", "--iterations", "-5"]


def test_train_snapshots_resume_then_test_and_time(workdir):
    r = run(["train", "-solver", "solver.prototxt"], workdir)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    for name in ("solver_iter_2.caffemodel", "solver_iter_2.solverstate",
                 "solver_iter_4.caffemodel", "solver_iter_4.solverstate"):
        assert (workdir / name).exists(), name
    assert "Iteration 2, lr = 0.025" in err
    assert re.search(r"Iteration 3 \([\d.e+-]+ iter/s, [\d.e+-]+s/1 iters\), loss = [\d.]+", err)
    from log_assertions import assert_logged
    assert_logged(err, "    Train net output #0: loss = ", "Iteration 2, Testing net (#0)",
                  "    Test net output #0: loss = ", "Optimization Done.",
                  "Snapshotting to binary proto file solver_iter_4.caffemodel",
                  "Snapshotting solver state to binary proto file solver_iter_4.solverstate")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    log_lines = [ln for ln in lines if GLOG.match(ln)]
    assert len(log_lines) > 20 and "Iteration 0, lr = 0.05" in "".join(log_lines)
    assert "Traceback" not in err and "\r" not in err   # no progress bar when not a TTY

    (workdir / "solver.prototxt").write_text(SOLVER.format(max_iter=6))
    r = run(["train", "--solver=solver.prototxt", "-snapshot=solver_iter_4.solverstate"], workdir)
    assert r.returncode == 0, r.stderr
    assert "Resuming from solver_iter_4.solverstate" in r.stderr
    assert "Iteration 3," not in r.stderr and "Iteration 5, lr = 0.0125" in r.stderr
    assert (workdir / "solver_iter_6.caffemodel").exists()

    r = run(["test", "-model", "net.prototxt", "-weights", "solver_iter_6.caffemodel",
             "-iterations", "3"], workdir)
    assert r.returncode == 0, r.stderr
    assert "Running for 3 iterations." in r.stderr
    assert "Batch 2, loss = " in r.stderr
    assert re.search(r"\] loss = [\d.e+-]+ \(\* 1 = [\d.e+-]+ loss\)$", r.stderr, re.M)

    r = run(["time", "--model", "net.prototxt", "--iterations", "2"], workdir)
    assert r.returncode == 0, r.stderr
    for text in ("*** Benchmark begins ***", "Testing for 2 iterations.",
                 "Iteration: 2 forward-backward time: ", "        ip\tforward: ",
                 "        ip\tbackward: ", "Average Forward pass: ", "Average Backward pass: ",
                 "Average Forward-Backward: ", "Total Time: ", "*** Benchmark ends ***"):
        assert text in r.stderr, text


def test_weights_and_device_query(workdir):
    r = run(["train", "--solver", "solver.prototxt"], workdir)
    assert r.returncode == 0
    (workdir / "solver.prototxt").write_text(
        SOLVER.format(max_iter=1) + 'snapshot_prefix: "ft"\n')
    r = run(["-weights", "solver_iter_4.caffemodel", "train", "-solver", "solver.prototxt"],
            workdir)
    assert r.returncode == 0, r.stderr
    assert "Finetuning from solver_iter_4.caffemodel" in r.stderr
    assert (workdir / "ft_iter_1.caffemodel").exists()
    r = run(["device_query"], workdir)
    assert r.returncode == 0, r.stderr
    assert "NumPy " in r.stderr and ("CuPy" in r.stderr)


@pytest.mark.parametrize("args,code,match", [
    (["train", "--bogus", "1"], 2, "unrecognized arguments: --bogus"),
    (["trian", "-solver", "s"], 2, "invalid choice: 'trian'"),
    (["train"], 2, "need a solver definition"),
    (["train", "-solver", "s", "-sigint_effect", "explode"], 2, "sigint_effect"),
    (["test", "-model", "net.prototxt"], 2, "need model weights"),
    (["train", "-solver", "missing.prototxt"], 1, "missing.prototxt: no such file"),
    (["test", "-model", "net.prototxt", "-weights", "nope.caffemodel"], 1, "nope.caffemodel"),
    (["train", "-solver", "sub/solver.prototxt"], 1, "did you mean 'sub/subnet.prototxt'"),
    (["train", "-solver", "broken.prototxt"], 1, r"broken.prototxt:2:"),
])
def test_errors_are_one_line(workdir, args, code, match):
    (workdir / "sub").mkdir()
    (workdir / "sub" / "subnet.prototxt").write_text(NET)
    (workdir / "sub" / "solver.prototxt").write_text(
        SOLVER.format(max_iter=1).replace("net.prototxt", "subnet.prototxt"))
    (workdir / "broken.prototxt").write_text('net: "net.prototxt"\nbase_lr: fast\n')
    r = run(args, workdir)
    assert r.returncode == code, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("minicaffe: error:")]
    assert len(errors) == 1, r.stderr
    assert re.search(match, errors[0]), errors[0]
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
def test_sigint_stops_after_the_iteration_with_a_snapshot(workdir):
    (workdir / "solver.prototxt").write_text(
        SOLVER.format(max_iter=10 ** 7).replace("snapshot: 2", "snapshot: 0")
        .replace("display: 1", "display: 100"))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "minicaffe", "train", "-solver",
                             "solver.prototxt"], cwd=workdir, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "Iteration 200 " in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "Optimization stopped early." in rest
    snaps = list(workdir.glob("solver_iter_*.caffemodel"))
    assert len(snaps) == 1 and (workdir / (snaps[0].stem + ".solverstate")).exists()
    assert int(snaps[0].stem.split("_")[-1]) > 200

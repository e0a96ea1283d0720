"""Robust training runs: an unusable GPU is an error unless the fallback is asked for, the
snapshot prefix is probed before training, SIGTERM acts as SIGINT, a NaN/Inf loss stops with
the layer that went non-finite, and debug_info prints Caffe's per-layer lines (checked
against a NumPy computation of the same net)."""
import logging
import os
import re
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import backend
from minicaffe.cli.device import select_device
from minicaffe.cli.entry import normalize_argv
from minicaffe.errors import MiniCaffeError
from minicaffe.io import parse_text
from minicaffe.proto import caffe_pb2
from minicaffe.solvers.nonfinite import NonFiniteError
from test_cli import NET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# sqrt(relu(x) - 0.5) is NaN wherever relu(x) < 0.5: the Power layer goes non-finite.
NAN_NET = NET.replace('bottom: "out" bottom: "label"', 'bottom: "root" bottom: "label"').replace(
    'layer { name: "loss"', 'layer { name: "relu" type: "ReLU" bottom: "out" top: "out" }\n'
    'layer { name: "root" type: "Power" bottom: "out" top: "root"\n'
    '  power_param { power: 0.5 shift: -0.5 } }\nlayer { name: "loss"')

SOLVER = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
display: 1
max_iter: 3
solver_mode: CPU
random_seed: 3
"""


def run(args, cwd, env=None, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "minicaffe", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, **kw)


def one_error(r):
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("minicaffe: error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    return errors[0]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "nan.prototxt").write_text(NAN_NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    return tmp_path


def solver_param(text, net=NET):
    p = parse_text(text, caffe_pb2.SolverParameter())
    parse_text(net, p.net_param)
    return p


# -- GPU requests ----------------------------------------------------------------------------
def _fake_cupy(count=None, error=None):
    def device_count():
        if error:
            raise error
        return count
    runtime = types.SimpleNamespace(getDeviceCount=device_count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(backend, "cupy_module", lambda: None)
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.delenv("MINICAFFE_GPU_FALLBACK", raising=False)


def test_gpu_request_without_cupy_is_an_error(no_gpu):
    with pytest.raises(MiniCaffeError, match=r"GPU 0 requested \(--gpu\) but it cannot be "
                                             r"used: CuPy is not importable.*--gpu auto"):
        select_device("0")
    p = solver_param("solver_mode: GPU device_id: 1")
    with pytest.raises(MiniCaffeError, match=r"GPU 1 requested \(solver_mode: GPU"):
        select_device("", p)


def test_gpu_request_without_a_device_or_out_of_range(no_gpu, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(error=RuntimeError("no driver")))
    with pytest.raises(MiniCaffeError, match=r"no CUDA device \(RuntimeError: no driver\)"):
        select_device("0")
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=0))
    with pytest.raises(MiniCaffeError, match=r"no CUDA device \(CuPy sees 0 devices\)"):
        select_device("0")
    monkeypatch.setattr(backend, "cupy_module", lambda: _fake_cupy(count=2))
    with pytest.raises(MiniCaffeError, match=r"device 5 is out of range \(2 CUDA device\(s\) "
                                             r"found: 0\.\.1\)"):
        select_device("5")


def test_gpu_fallback_only_when_asked(no_gpu, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="minicaffe")
    assert select_device("auto") is False and backend.mode() == "cpu"
    assert "--gpu auto: no usable GPU (CuPy is not importable" in caplog.text
    assert select_device("", solver_param("max_iter: 1")) is False   # solver_mode unset
    monkeypatch.setenv("MINICAFFE_GPU_FALLBACK", "1")
    caplog.clear()
    assert select_device("0") is False
    assert "GPU 0 is not usable" in caplog.text and "MINICAFFE_GPU_FALLBACK=1" in caplog.text


@pytest.mark.skipif(backend.cupy_module() is not None, reason="a usable GPU is present")
def test_cli_gpu_without_cuda_exits_1(workdir):
    for verb in (["train", "--solver", "solver.prototxt"],
                 ["time", "--model", "net.prototxt", "--iterations", "1"]):
        r = run(verb + ["--gpu", "0"], workdir)
        assert r.returncode == 1
        assert "GPU 0 requested (--gpu) but it cannot be used" in one_error(r)
    r = run(["train", "--solver", "solver.prototxt", "--gpu", "auto"], workdir)
    assert r.returncode == 0, r.stderr
    r = run(["train", "--solver", "solver.prototxt", "--gpu", "0"], workdir,
            env={"MINICAFFE_GPU_FALLBACK": "1"})
    assert r.returncode == 0, r.stderr


# -- snapshot prefix -------------------------------------------------------------------------
def test_missing_prefix_folder_fails_before_training(workdir):
    (workdir / "solver.prototxt").write_text(SOLVER + 'snapshot_prefix: "nodir/sub/tiny"\n')
    r = run(["train", "--solver", "solver.prototxt"], workdir)
    assert r.returncode == 1
    assert re.search(r"solver.prototxt: cannot write to snapshot prefix 'nodir/sub/tiny' "
                     r"\(No such file or directory", one_error(r))
    assert "Iteration 0" not in r.stderr
    (workdir / "a_file").write_text("")
    (workdir / "solver.prototxt").write_text(SOLVER + 'snapshot_prefix: "a_file/tiny"\n'
                                             "snapshot: 1\n")
    r = run(["train", "--solver", "solver.prototxt"], workdir)
    assert r.returncode == 1 and "(Not a directory" in one_error(r)


def test_prefix_probe_follows_snapshot_after_train(tmp_path, caplog):
    bad = (f'snapshot_prefix: "{tmp_path}/nodir/tiny" max_iter: 2 base_lr: 0.01 '
           'lr_policy: "fixed" ')
    s = caffe.SGDSolver(solver_param(bad))      # pycaffe may step() without snapshots
    s.step(1)
    with pytest.raises(MiniCaffeError, match="cannot write to snapshot prefix"):
        s.solve()
    assert s.iter == 1                          # no iteration ran
    caffe.SGDSolver(solver_param(bad + "snapshot_after_train: false")).solve()
    caplog.set_level(logging.WARNING, logger="minicaffe")
    # no prefix at all: the final snapshot is skipped with a warning
    caffe.SGDSolver(solver_param("max_iter: 1 base_lr: 0.01 lr_policy: 'fixed'")).solve()
    assert "snapshot_prefix is not set: no snapshot after training" in caplog.text
    with pytest.raises(MiniCaffeError, match="snapshot is set but snapshot_prefix is not"):
        caffe.SGDSolver(solver_param("max_iter: 1 snapshot: 1 lr_policy: 'fixed'"))


# -- SIGTERM ---------------------------------------------------------------------------------
def _train_until(workdir, args, marker="Iteration 30 "):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "minicaffe", "train", "-solver",
                             "solver.prototxt", *args], cwd=workdir, env=env,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if marker in line:
            break
    return proc


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_sigterm_with_snapshot_effect_leaves_a_resumable_snapshot(workdir):
    (workdir / "solver.prototxt").write_text(SOLVER.replace("max_iter: 3", "max_iter: 10000000")
                                             + "snapshot_after_train: false\n")
    proc = _train_until(workdir, ["-sigint_effect", "snapshot"])
    try:
        proc.send_signal(signal.SIGTERM)
        for line in proc.stderr:
            if "Snapshotting solver state" in line:
                break
        for line in proc.stderr:            # logged before the write: wait until it is done
            if "Iteration " in line:
                break
        assert proc.poll() is None          # snapshot, then training goes on
    finally:
        proc.kill()                         # the scheduler's SIGKILL after its grace period
        proc.wait(timeout=30)
        proc.stderr.close()
    states = list(workdir.glob("solver_iter_*.solverstate"))
    assert len(states) == 1
    it = int(states[0].stem.split("_")[-1])
    (workdir / "solver.prototxt").write_text(SOLVER.replace("max_iter: 3", f"max_iter: {it + 2}"))
    r = run(["train", "--solver", "solver.prototxt", "--snapshot", states[0].name], workdir)
    assert r.returncode == 0, r.stderr
    assert f"Iteration {it + 1} " in r.stderr and f"Iteration {it - 1} " not in r.stderr


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_sigterm_stops_like_sigint_by_default(workdir):
    (workdir / "solver.prototxt").write_text(SOLVER.replace("max_iter: 3", "max_iter: 10000000"))
    proc = _train_until(workdir, [])
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == 0, rest
    assert "SIGTERM received: stop" in rest and "Optimization stopped early." in rest
    assert len(list(workdir.glob("solver_iter_*.caffemodel"))) == 1   # snapshot_after_train


# -- non-finite values -----------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_names_the_iteration_and_layer():
    s = caffe.SGDSolver(solver_param("base_lr: 0.01 lr_policy: 'fixed' max_iter: 3", NAN_NET))
    s.allow_nonfinite = False
    with pytest.raises(NonFiniteError, match=r"Iteration 0: the loss is nan; first non-finite "
                                             r"output: forward of layer 'root' \(type Power\), "
                                             r"top blob 'root' \(\d of 8 values non-finite\)"):
        s.step(3)
    assert s.iter == 0                           # stopped before the update


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_param_is_named_and_allow_goes_on(caplog):
    s = caffe.SGDSolver(solver_param("base_lr: 0.01 lr_policy: 'fixed' max_iter: 3"))
    s.allow_nonfinite = False
    s.net.params["ip"][0].data[0, 1] = np.inf
    with pytest.raises(NonFiniteError, match=r"param blob 0 of layer 'ip' \(type InnerProduct\) "
                                             r"is already non-finite \(1 of 6 values"):
        s.step(1)
    caplog.set_level(logging.WARNING, logger="minicaffe")
    s.allow_nonfinite = True
    s.step(2)
    assert s.iter == 2
    assert caplog.text.count("going on (allow_nonfinite)") == 1     # once per step() call


def test_cli_nonfinite_exit_1_and_the_flag(workdir):
    (workdir / "solver.prototxt").write_text(SOLVER.replace("net.prototxt", "nan.prototxt"))
    r = run(["train", "--solver", "solver.prototxt"], workdir)
    assert r.returncode == 1
    assert re.search(r"solver.prototxt: Iteration 0: the loss is nan; .*layer 'root'.*"
                     r"--allow_nonfinite", one_error(r))
    assert "RuntimeWarning" not in r.stderr
    assert run(["train", "--solver", "solver.prototxt", "--allow_nonfinite"],
               workdir).returncode == 0
    assert run(["train", "--solver", "solver.prototxt"], workdir,
               env={"MINICAFFE_ALLOW_NONFINITE": "1"}).returncode == 0
    assert normalize_argv(["-allow_nonfinite=true", "--allow_nonfinite=false"]) == \
        ["--allow_nonfinite"]


# -- debug_info ------------------------------------------------------------------------------
def _logged(text, pattern):
    m = re.search(re.escape(pattern) + r" ([-\d.e+]+)\n", text)
    assert m, f"not logged: {pattern}"
    return float(m.group(1))


def test_debug_info_lines_match_numpy(caplog):
    lr = 0.1
    s = caffe.SGDSolver(solver_param(f"base_lr: {lr} lr_policy: 'fixed' display: 1 "
                                     "max_iter: 1 debug_info: true"))
    s.net.params["ip"][1].data[...] = [0.1, -0.2]
    W = s.net.params["ip"][0].data.astype(np.float64)
    b = s.net.params["ip"][1].data.astype(np.float64)
    caplog.set_level(logging.INFO, logger="minicaffe")
    s.step(1)
    X = s.net.blobs["data"].data.astype(np.float64)    # this iteration's DummyData batch
    Y = s.net.blobs["label"].data.astype(np.float64)
    out = X @ W.T + b
    r = (out - Y) / 4
    dW, db = r.T @ X, r.sum(0)
    expect = {
        "    [Forward] Layer ip, top blob out data:": np.abs(out).mean(),
        "    [Forward] Layer ip, param blob 0 data:": np.abs(W).mean(),
        "    [Forward] Layer loss, top blob loss data:": ((out - Y) ** 2).sum() / 8,
        "    [Backward] Layer loss, bottom blob out diff:": np.abs(r).mean(),
        "    [Backward] Layer ip, param blob 0 diff:": np.abs(dW).mean(),
        "    [Backward] Layer ip, param blob 1 diff:": np.abs(db).mean(),
        "    [Update] Layer ip, param 1 data: %g; diff:" % np.abs(b).mean(): lr * np.abs(db).mean(),
    }
    for pattern, value in expect.items():
        assert _logged(caplog.text, pattern) == pytest.approx(value, rel=1e-4), pattern
    l1 = np.abs(W).sum() + np.abs(b).sum(), np.abs(dW).sum() + np.abs(db).sum()
    l2 = np.sqrt((W ** 2).sum() + (b ** 2).sum()), np.sqrt((dW ** 2).sum() + (db ** 2).sum())
    assert ("    [Backward] All net params (data, diff): L1 norm = (%g, %g); L2 norm = (%g, %g)"
            % (*l1, *l2)) in caplog.text
    assert "[Backward] Layer ip, bottom blob data" not in caplog.text   # data needs none


# -- GPU mode on test_blob_sync's stand-in device ----------------------------------------------
from test_blob_sync import gpu  # noqa: E402,F401  (the fixture)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_gpu_mode_nonfinite_found_when_the_losses_are_read(gpu):
    s = caffe.SGDSolver(solver_param("base_lr: 0.01 lr_policy: 'fixed' display: 0 "
                                     "max_iter: 3", NAN_NET))
    s.allow_nonfinite = False
    with pytest.raises(NonFiniteError, match=r"Iteration 0: the loss is nan \(read at "
                                             r"iteration 3, .*layer 'ip'"):
        s.solve()                 # never displayed: read once training is over


def test_gpu_mode_debug_info_and_hdf5_snapshot(gpu, tmp_path, caplog):
    h5py = pytest.importorskip("h5py")
    s = caffe.SGDSolver(solver_param(f"base_lr: 0.01 lr_policy: 'fixed' display: 1 max_iter: 1 "
                                     f"debug_info: true snapshot_format: HDF5 "
                                     f'snapshot_prefix: "{tmp_path}/g"'))
    caplog.set_level(logging.INFO, logger="minicaffe")
    s.solve()
    assert "    [Update] Layer ip, param 0 data:" in caplog.text
    with h5py.File(tmp_path / "g_iter_1.caffemodel.h5", "r") as f:
        np.testing.assert_array_equal(f["data/ip/0"][()], s.net.params["ip"][0].data)

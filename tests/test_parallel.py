"""Data-parallel training (minicaffe.parallel): sharding, the --gpu launcher, and K ranks
under mpiexec against the single-process run they must reproduce.

The mpiexec tests need mpi4py and an MPI (pip install mpi4py mpich) and are skipped without;
the NCCL path needs two GPUs and has no test that runs here.
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe.data.db import LMDBWriter
from minicaffe.io.protobinary import blobproto_to_array, read_binary
from minicaffe.parallel import launcher, sharding, world
from minicaffe.parallel.training import SingleProcess
from minicaffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_RECORDS, BATCH, ITERS = 48, 8, 20
_RNG = np.random.default_rng(5)
IMAGES = _RNG.integers(0, 256, size=(N_RECORDS, 1, 4, 4)).astype(np.uint8)
LABELS = (IMAGES.reshape(N_RECORDS, -1).sum(axis=1) % 3).astype(np.int64)


@pytest.fixture(autouse=True)
def _single_process_world():
    yield
    world.set_solver_count(1)
    world.set_solver_rank(0)


# -- data files and nets --------------------------------------------------------------------------
def make_lmdb(path):
    with LMDBWriter(str(path)) as w:
        for i, (img, lab) in enumerate(zip(IMAGES, LABELS)):
            d = caffe_pb2.Datum(channels=1, height=4, width=4, data=img.tobytes(), label=int(lab))
            w.put(f"{i:08d}".encode(), d.SerializeToString())
    return str(path)


def make_hdf5(dirpath):
    h5py = pytest.importorskip("h5py")
    h5 = os.path.join(dirpath, "rows.h5")
    with h5py.File(h5, "w") as f:
        f["data"] = IMAGES.astype(np.float32) / 256   # as the Data layer's scale
        f["label"] = LABELS.astype(np.float32)
    listing = os.path.join(dirpath, "rows.txt")
    with open(listing, "w") as f:
        f.write(h5 + "\n")
    return listing


def data_layer(kind, source, batch, phase):
    if kind == "lmdb":
        body = (f'type: "Data" transform_param {{ scale: 0.00390625 }} '
                f'data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }}')
    else:
        body = f'type: "HDF5Data" hdf5_data_param {{ source: "{source}" batch_size: {batch} }}'
    return (f'layer {{ name: "data" {body} top: "data" top: "label" '
            f'include {{ phase: {phase} }} }}\n')


def net_text(kind, source, batch, batch_norm=False):
    bn = ('layer { name: "bn" type: "BatchNorm" bottom: "ip1" top: "ip1" }\n'
          'layer { name: "sc" type: "Scale" bottom: "ip1" top: "ip1" '
          'scale_param { bias_term: true } }\n') if batch_norm else ""
    return (data_layer(kind, source, batch, "TRAIN") + data_layer(kind, source, 4, "TEST") +
            'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" '
            'inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.3 } '
            'bias_filler { type: "constant" value: 0.1 } } }\n' + bn +
            'layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }\n'
            'layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" '
            'inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" '
            'top: "loss" }\n')


def write_solver(tmp_path, name, kind, source, batch, batch_norm=False, max_iter=ITERS):
    net = tmp_path / f"{name}_net.prototxt"
    net.write_text(net_text(kind, source, batch, batch_norm))
    (tmp_path / name).mkdir()
    solver = tmp_path / f"{name}_solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.2\nmomentum: 0.9\nweight_decay: 0.001\n'
                      f'lr_policy: "fixed"\nmax_iter: {max_iter}\ndisplay: 5\n'
                      f'test_iter: 4\ntest_interval: 10\ntest_compute_loss: true\n'
                      f'snapshot_prefix: "{tmp_path / name}/snap"\nrandom_seed: 7\n'
                      'solver_mode: CPU\n')
    return str(solver)


def weights(path):
    """{(layer, index): array} of a .caffemodel."""
    proto = read_binary(path, caffe_pb2.NetParameter())
    return {(layer.name, i): blobproto_to_array(b) for layer in proto.layer
            for i, b in enumerate(layer.blobs)}


def single_process(solver_path):
    """Weights after training in this process, and the last test's mean outputs."""
    solver = caffe.get_solver(solver_path)
    solver.solve()
    path = solver._snapshot_filename(".caffemodel")
    return weights(path), solver.mean_scores[0]


# -- sharding, in one process -------------------------------------------------------------------
def test_stride_gives_each_rank_every_kth_record():
    for count in (1, 2, 3, 4):
        seen = []
        for rank in range(count):
            seq = iter(range(10 ** 6))
            stride = sharding.RecordStride(rank, count)
            got = [stride.next(lambda: next(seq)) for _ in range(7)]
            assert got == [rank + count * j for j in range(7)]
            seen += got
        assert sorted(seen) == list(range(7 * count))


@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_data_layers_shard_by_rank_and_cover_an_epoch_once(tmp_path, kind):
    source = make_lmdb(tmp_path / "db") if kind == "lmdb" else make_hdf5(str(tmp_path))
    count, batch = 4, 3
    per_rank = N_RECORDS // count // batch          # batches that make one epoch per rank
    seen = []
    for rank in range(count):
        world.set_solver_count(count)
        world.set_solver_rank(rank)
        text = data_layer(kind, source, batch, "TRAIN").replace("include { phase: TRAIN }", "")
        param = text_format.Merge(text, caffe_pb2.NetParameter())
        net = caffe.Net(param, caffe.TRAIN)
        rows = []
        for _ in range(per_rank):
            net.forward()
            rows.append(np.round(net.blobs["data"].data * 256).astype(np.uint8))
        np.testing.assert_array_equal(np.concatenate(rows), IMAGES[rank::count])
        seen += range(rank, N_RECORDS, count)
    assert sorted(seen) == list(range(N_RECORDS))


# -- environment and launcher -------------------------------------------------------------------
def test_placement_from_environment():
    assert world.placement_from_environment({}) is None
    assert world.placement_from_environment({"PMI_SIZE": "1", "PMI_RANK": "0"}) is None
    p = world.placement_from_environment({"PMI_SIZE": "4", "PMI_RANK": "2",
                                          "MPI_LOCALRANKID": "0"})
    assert (p.backend, p.size, p.rank, p.local_rank) == ("mpi", 4, 2, 0)
    p = world.placement_from_environment({"OMPI_COMM_WORLD_SIZE": "2",
                                          "OMPI_COMM_WORLD_RANK": "1"})
    assert (p.backend, p.size, p.rank, p.local_rank) == ("mpi", 2, 1, 1)
    p = world.placement_from_environment(launcher.child_env(1, 2, "1,2,3", base={}))
    assert (p.backend, p.size, p.rank, p.uid) == ("nccl", 2, 1, "1,2,3")


def test_launcher_child_arguments():
    from minicaffe.cli.entry import build_parser
    parser = build_parser()
    args = parser.parse_args(["train", "--solver", "s.prototxt", "--gpu", "0,1",
                              "--weights", "w.caffemodel", "--sigint_effect", "snapshot"])
    assert launcher.child_argv(args, parser, 1) == [
        "train", "--solver=s.prototxt", "--weights=w.caffemodel", "--sigint_effect=snapshot",
        "--gpu=1"]


def test_launcher_ends_the_other_ranks_when_one_fails():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    start = time.monotonic()
    assert launcher.watch([sleeper, failing], poll_s=0.05) == 3
    assert sleeper.poll() is not None and time.monotonic() - start < 30


def test_no_launch_without_two_gpus():
    run = SingleProcess()
    assert run.gpus_to_launch([0]) is None
    if caffe.backend.cupy_module() is None:
        assert run.gpus_to_launch([0, 1]) is None


def test_single_process_training_never_imports_mpi4py(tmp_path):
    solver = write_solver(tmp_path, "one", "lmdb", make_lmdb(tmp_path / "db"), BATCH, max_iter=2)
    code = ("import sys\nfrom minicaffe.cli import main\n"
            f"assert main(['train', '--solver', {solver!r}]) == 0\n"
            "assert 'mpi4py' not in sys.modules and 'cupy.cuda.nccl' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


# -- under mpiexec ------------------------------------------------------------------------------
def mpiexec_command(n):
    exe = shutil.which("mpiexec")
    if importlib.util.find_spec("mpi4py") is None or exe is None:
        pytest.skip("needs mpi4py and an MPI (pip install mpi4py mpich)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    extra = ["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    return [exe, "-n", str(n)] + extra


def run_mpi(n, argv, env=None, timeout=120):
    cmd = mpiexec_command(n) + [sys.executable] + argv
    full_env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **(env or {}))
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    return out, time.monotonic() - start


def last_test_outputs(log):
    """The values of the last test's "Test net output #k: name = value" lines."""
    lines = re.findall(r"Test net output #(\d+): \w+ = ([-0-9.e+]+)", log)
    n = len({k for k, _ in lines})
    return [float(v) for _, v in lines[-n:]]


@pytest.mark.parametrize("ranks,kind", [(2, "lmdb"), (4, "hdf5")])
def test_k_ranks_follow_the_single_process_trajectory(tmp_path, ranks, kind):
    source = make_lmdb(tmp_path / "db") if kind == "lmdb" else make_hdf5(str(tmp_path))
    expected, expected_test = single_process(write_solver(tmp_path, "ref", kind, source, BATCH))
    solver = write_solver(tmp_path, "par", kind, source, BATCH // ranks)
    out, _ = run_mpi(ranks, ["-m", "minicaffe", "train", "--solver", solver],
                     env={"MINICAFFE_CHECK_EVERY": "5"})
    assert out.returncode == 0, out.stderr[-3000:]
    got = weights(str(tmp_path / "par" / f"snap_iter_{ITERS}.caffemodel"))
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=key)
    # test passes split over the ranks, results summed: the single-process means
    np.testing.assert_allclose(last_test_outputs(out.stderr), expected_test, rtol=1e-4)
    # rank 0 alone logs and snapshots
    assert out.stderr.count("Snapshotting to binary proto file") == 1
    assert out.stderr.count("Optimization Done.") == 1
    assert sorted(os.listdir(tmp_path / "par")) == [f"snap_iter_{ITERS}.caffemodel",
                                                    f"snap_iter_{ITERS}.solverstate"]


def test_sync_bn_follows_the_single_process_batch_statistics(tmp_path):
    source = make_hdf5(str(tmp_path))
    expected, _ = single_process(write_solver(tmp_path, "ref", "hdf5", source, BATCH, True))
    solver = write_solver(tmp_path, "par", "hdf5", source, BATCH // 2, True)
    out, _ = run_mpi(2, ["-m", "minicaffe", "train", "--solver", solver],
                     env={"MINICAFFE_SYNC_BN": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    got = weights(str(tmp_path / "par" / f"snap_iter_{ITERS}.caffemodel"))
    for key in expected:   # the running statistics included
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-5, err_msg=key)


FAILING_RANK = """
import os, signal, sys, time
from minicaffe.parallel import world
from minicaffe.solvers import sgd
apply_update = sgd.SGDSolver.apply_update
def failing_update(self):
    if world.solver_rank() == 1 and self.iter == 3:
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if sys.argv[2] == "diverge":
            self.net.params["ip1"][0].data[0, 0] += 1.0
        else:
            time.sleep(600)
    apply_update(self)
sgd.SGDSolver.apply_update = failing_update
from minicaffe.cli import main
sys.exit(main(["train", "--solver", sys.argv[1]]))
"""


@pytest.mark.parametrize("how", ["kill", "hang", "diverge"])
def test_a_dead_hung_or_diverged_rank_ends_the_run(tmp_path, how):
    solver = write_solver(tmp_path, "par", "lmdb", make_lmdb(tmp_path / "db"), BATCH // 2)
    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK)
    out, took = run_mpi(2, [str(script), solver, how], timeout=90,
                        env={"MINICAFFE_COMM_TIMEOUT": "3", "MINICAFFE_CHECK_EVERY": "5"})
    assert out.returncode != 0
    assert took < 45
    if how == "hang":
        assert "did not complete within 3 s" in out.stderr
    if how == "diverge":   # the debug check (every 5 iterations) catches it
        assert "the weights differ between ranks" in out.stderr

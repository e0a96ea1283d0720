"""Data-parallel scaling of the CIFAR-10 batch-norm example (models/cifar10_bn): throughput
and weak-scaling efficiency for K = 1, 2, 4 ranks under mpiexec, the bytes all-reduced per
iteration and the time spent waiting for them; then the ring all-reduce model's estimate
for more workers.

Each rank trains the train_val net with its Data layers swapped for Input layers of random
data (so data loading is out of the figure) at a fixed per-rank batch (weak scaling):
efficiency(K) = iteration time(1) / iteration time(K). On a machine with fewer cores than
ranks the ranks share the cores: the figures then measure the overhead of the parallel
machinery (all-reduce, stragglers, oversubscription), not a speedup.

Model (no overlap assumed, so a lower bound): a ring all-reduce of S bytes over K workers
takes 2 (K - 1) / K * S / bandwidth + 2 (K - 1) * latency per bucket.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "models", "cifar10_bn",
                     "train_val.prototxt")
TAG = "SCALING "
# (name, bandwidth in bytes/s, latency per ring step in s)
LINKS = (("25 Gb/s Ethernet (MPI, TCP)", 25e9 / 8, 30e-6),
         ("NVLink (NCCL, H100)", 150e9, 8e-6))


def input_net(batch):
    """The TRAIN net of the example, its Data layers replaced by one Input layer."""
    from ..io.prototxt import read_prototxt
    from ..net_state import filter_net
    from ..proto import caffe_pb2
    full = read_prototxt(os.path.normpath(MODEL), caffe_pb2.NetParameter())
    full.state.phase = caffe_pb2.TRAIN
    train = filter_net(full)
    kept = [lp for lp in train.layer if lp.type != "Data"]
    del train.layer[:]
    source = train.layer.add(name="input", type="Input", top=["data", "label"])
    source.input_param.shape.add(dim=[batch, 3, 32, 32])
    source.input_param.shape.add(dim=[batch])
    train.layer.extend(kept)
    return train


def worker(batch, iters, warmup):
    """One rank's measurement; rank 0 prints a TAG line of JSON."""
    import logging
    from ..parallel import training
    from ..proto import caffe_pb2
    from ..solvers import SGDSolver
    logging.getLogger("minicaffe").setLevel(logging.WARNING)
    sp = caffe_pb2.SolverParameter(base_lr=0.001, momentum=0.9, lr_policy="fixed",
                                   max_iter=10 ** 6, random_seed=1701,
                                   solver_mode=caffe_pb2.SolverParameter.CPU)
    sp.train_net_param.CopyFrom(input_net(batch))
    run = training.join()
    solver = SGDSolver(sp)
    rng = np.random.default_rng(1 + training.world.solver_rank())
    solver.net.blobs["data"].data[...] = rng.standard_normal((batch, 3, 32, 32)) * 60
    solver.net.blobs["label"].data[...] = rng.integers(0, 10, batch)
    dp = run.attach(solver)
    solver.step(warmup)
    barrier = (lambda: dp.comm.allreduce(np.zeros(1))) if dp else (lambda: None)
    comm0 = dp.comm_seconds if dp else 0.0
    barrier()
    start = time.perf_counter()
    solver.step(iters)
    barrier()
    took = (time.perf_counter() - start) / iters
    out = {"ranks": dp.comm.size if dp else 1, "batch": batch, "iter_s": took,
           "comm_wait_s": ((dp.comm_seconds - comm0) / iters) if dp else 0.0,
           "bytes": dp.bytes_per_iteration if dp else _param_bytes(solver),
           "buckets": len(dp.buckets.buckets) if dp else 0}
    if dp:   # a blocking all-reduce of one iteration's gradients, alone
        flat = np.zeros(dp.bytes_per_iteration // 4, np.float32)
        t0 = time.perf_counter()
        for _ in range(20):
            dp.comm.allreduce(flat)
        out["allreduce_s"] = (time.perf_counter() - t0) / 20
    if training.world.is_root():
        print(TAG + json.dumps(out), flush=True)


def _param_bytes(solver):
    return sum(b.xdiff.nbytes for b, s in solver.net.learnable_params if s.lr_mult != 0)


def measure(ranks, batch, iters, warmup):
    cmd = [sys.executable, "-m", "minicaffe.parallel.scaling_benchmark", "--worker",
           f"--batch={batch}", f"--iters={iters}", f"--warmup={warmup}"]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in out.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    raise RuntimeError(f"K={ranks} gave no result:\n{out.stderr[-3000:]}")


def ring_seconds(nbytes, workers, bandwidth, latency, buckets=1):
    if workers < 2:
        return 0.0
    return 2 * (workers - 1) / workers * nbytes / bandwidth + 2 * (workers - 1) * latency * buckets


def estimates(compute_s, nbytes, buckets, workers=(8, 64)):
    """[(link, workers, comm seconds, efficiency)] under the ring model, no overlap."""
    rows = []
    for name, bw, lat in LINKS:
        for k in workers:
            t = ring_seconds(nbytes, k, bw, lat, buckets)
            rows.append((name, k, t, compute_s / (compute_s + t)))
    return rows


def report(results, gpu_iter_s):
    base = results[0]["iter_s"]
    print(f"{'K':>3} {'iter ms':>9} {'img/s':>8} {'efficiency':>10} {'comm wait ms':>12} "
          f"{'allreduce ms':>12} {'bytes/iter':>11}")
    for r in results:
        print(f"{r['ranks']:>3} {r['iter_s'] * 1e3:9.1f} {r['ranks'] * r['batch'] / r['iter_s']:8.0f}"
              f" {base / r['iter_s']:10.1%} {r['comm_wait_s'] * 1e3:12.2f}"
              f" {r.get('allreduce_s', 0) * 1e3:12.3f} {r['bytes']:11d}")
    last = results[-1]
    buckets = max(1, last.get("buckets", 1))
    print(f"\nRing all-reduce model, {last['bytes']} bytes in {buckets} bucket(s), no overlap:")
    for label, compute in (("CPU iteration (measured, K=1)", base),
                           ("GPU iteration (assumed)", gpu_iter_s)):
        print(f"  compute = {label}: {compute * 1e3:.1f} ms")
        for name, k, t, eff in estimates(compute, last["bytes"], buckets):
            print(f"    {name:28s} K={k:<3d} comm {t * 1e3:7.3f} ms  efficiency {eff:6.1%}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--batch", type=int, default=32, help="per-rank batch (weak scaling)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gpu-iter-ms", type=float, default=4.0,
                    help="GPU iteration time the NVLink/Ethernet estimate assumes")
    ap.add_argument("--json", help="also write the measurements here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.batch, args.iters, args.warmup)
    print(f"{os.cpu_count()} CPU core(s); with more ranks than cores the figures measure "
          "overhead, not speedup.")
    results = [measure(int(k), args.batch, args.iters, args.warmup)
               for k in args.ranks.split(",")]
    report(results, args.gpu_iter_ms / 1e3)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

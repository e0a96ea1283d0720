"""Memory does not grow over iterations: training a small net, and the LMDB Data layer's
prefetch thread over many epochs, keep the traced heap (tracemalloc, every thread) flat after
a warm-up, and the resident set (/proc/self/statm) nearly so."""
import gc
import resource
import tracemalloc

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe
from minicaffe.data import db as dbm
from minicaffe.proto import caffe_pb2

# Past the warm-up, the traced heap may wander by this much (buffers sized to a batch are
# made once; what grows per iteration shows up as a trend far above it).
HEAP_TOLERANCE = 256 << 10
# RSS moves by whole pages and the allocator's arenas: a looser bound, against a leak of
# the arrays themselves (one batch of the conv net below is ~25 KiB).
RSS_TOLERANCE = 8 << 20


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_samples(step, warmup, samples, every):
    """Run ``step()`` ``warmup`` times, then ``samples`` x ``every`` times; the traced heap and
    RSS after the warm-up and after each block."""
    for _ in range(warmup):
        step()
    # Tracing starts after the warm-up: it would slow the first runs' JIT compiles tenfold,
    # and what is allocated before it and kept is not growth anyway.
    tracemalloc.start()
    try:
        gc.collect()
        heap, rss = [tracemalloc.get_traced_memory()[0]], [rss_bytes()]
        for _ in range(samples):
            for _ in range(every):
                step()
            gc.collect()
            heap.append(tracemalloc.get_traced_memory()[0])
            rss.append(rss_bytes())
    finally:
        tracemalloc.stop()
    return heap, rss


def assert_flat(heap, rss, what):
    kib = [round(h / 1024) for h in heap]
    growth = max(heap) - heap[0]
    assert growth <= HEAP_TOLERANCE, (
        f"{what}: traced heap grew {growth / 1024:.0f} KiB after warm-up (tolerance "
        f"{HEAP_TOLERANCE >> 10} KiB); samples in KiB: {kib}")
    rss_growth = max(rss) - rss[0]
    assert rss_growth <= RSS_TOLERANCE, (
        f"{what}: RSS grew {rss_growth / 2**20:.1f} MiB after warm-up (tolerance "
        f"{RSS_TOLERANCE >> 20} MiB); samples in MiB: {[round(r / 2**20, 1) for r in rss]}")


SOLVER = """
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75
max_iter: 100000 display: 50 average_loss: 20 type: "SGD" random_seed: 7 snapshot_after_train: false
net_param {
  name: "flat"
  layer { name: "data" type: "DummyData" top: "data" top: "label"
    dummy_data_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 }
      data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
  layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
    convolution_param { num_output: 6 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
  layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
  layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
  layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
  layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
    pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
  layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
    inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
}
"""


def test_training_keeps_memory_flat(tmp_path):
    param = text_format.Parse(SOLVER, caffe_pb2.SolverParameter())
    param.snapshot_prefix = str(tmp_path / "flat")
    solver = minicaffe.get_solver(param)
    heap, rss = memory_samples(lambda: solver.step(1), warmup=50, samples=5, every=40)
    assert solver.iter == 250
    assert np.isfinite(solver.smoothed_loss)
    assert_flat(heap, rss, "SGD training, 200 iterations after 50 warm-up")


def write_tiny_lmdb(path, n=5):
    with dbm.LMDBWriter(str(path), commit_every=2) as w:
        for i in range(n):
            img = ((7 * i + np.arange(3 * 4 * 5)) % 256).astype(np.uint8).reshape(3, 4, 5)
            w.put(b"%05d" % i, dbm.array_to_datum(img, i).SerializeToString())
    return str(path)


def test_lmdb_data_layer_prefetch_keeps_memory_flat(tmp_path):
    src = write_tiny_lmdb(tmp_path / "db")
    net = minicaffe.Net(text_format.Parse(f"""
        layer {{ name: "d" type: "Data" top: "data" top: "label"
          transform_param {{ scale: 0.5 mirror: true crop_size: 3 }}
          data_param {{ source: "{src}" batch_size: 2 backend: LMDB prefetch: 3 }} }}
        layer {{ name: "s" type: "Silence" bottom: "data" bottom: "label" }}""",
        caffe_pb2.NetParameter()),
        minicaffe.TRAIN)
    seen = set()

    def step():
        net.forward()
        seen.update(int(v) for v in net.blobs["label"].data)
    # 2 per batch from 5 records: the 50 + 6 x 100 batches go round the database 260 times
    heap, rss = memory_samples(step, warmup=50, samples=6, every=100)
    assert seen == set(range(5))
    assert_flat(heap, rss, "LMDB Data layer, 1200 records (240 epochs) after warm-up")


def test_the_measurement_sees_a_leak():
    # A check that cannot fail proves nothing: 64 KiB kept per step must trip it.
    kept = []
    heap, rss = memory_samples(lambda: kept.append(bytes(64 << 10)), warmup=2, samples=3,
                               every=4)
    with pytest.raises(AssertionError, match="traced heap grew"):
        assert_flat(heap, rss, "a deliberate leak")

"""minicaffe.benchmarks: the ResNet-20 example net, load accounting, ratio spreads and the
README-table refusal (no timing is asserted)."""
import importlib.util
import os

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.benchmarks import cpu, load, stats
from minicaffe.benchmarks.nets import fill_inputs, input_net_param, make_solver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET = os.path.join(ROOT, "models", "cifar10_resnet20")


def resnet20_counts():
    """(learnable parameters, BatchNorm statistics, convolutions) of a CIFAR ResNet-20 with
    projection shortcuts, from the architecture: every convolution (bias-free) is followed by
    BatchNorm (mean, variance, one factor) and Scale (weight, bias) over its output channels."""
    convs = [(3, 16, 3)]                          # (in, out, kernel)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(3):
            convs += [(cin, width, 3), (width, width, 3)]
            if cin != width:
                convs.append((cin, width, 1))     # projection shortcut
            cin = width
    weights = sum(i * o * k * k for i, o, k in convs)
    channels = sum(o for _, o, _ in convs)
    learnable = weights + 2 * channels + 64 * 10 + 10
    return learnable, 2 * channels + len(convs), len(convs)


def test_resnet20_counts_by_hand():
    # 3*16*9 + 6*16*16*9 + (16*32*9 + 5*32*32*9 + 16*32) + (32*64*9 + 5*64*64*9 + 32*64)
    # = 270256 conv weights; 784 BN channels; fc 650.
    assert resnet20_counts() == (270256 + 2 * 784 + 650, 2 * 784 + 21, 21)


def test_resnet20_deploy_builds_with_expected_parameters_and_shapes():
    net = caffe.Net(os.path.join(RESNET, "deploy.prototxt"), caffe.TEST)
    learnable = stats_ = 0
    for name, blobs in net.params.items():
        size = sum(b.data.size for b in blobs)
        if net.layer_by_name[name].type == "BatchNorm":
            stats_ += size
        else:
            learnable += size
    want_learnable, want_stats, want_convs = resnet20_counts()
    assert (learnable, stats_) == (want_learnable, want_stats)
    assert sum(layer.type == "Convolution" for layer in net.layers) == want_convs
    assert sum(layer.type == "Eltwise" for layer in net.layers) == 9
    for blob, shape in (("res1_3", (1, 16, 32, 32)), ("res2_1", (1, 32, 16, 16)),
                        ("res3_3", (1, 64, 8, 8)), ("pool", (1, 64, 1, 1)), ("prob", (1, 10))):
        assert net.blobs[blob].data.shape == shape
    # Untrained, its BatchNorm statistics are zero (Caffe then divides by sqrt(eps) at every
    # layer): a zero image keeps every activation zero and leaves the zero fc10 bias.
    net.blobs["data"].data[...] = 0.0
    np.testing.assert_allclose(net.forward()["prob"], np.full((1, 10), 0.1), rtol=1e-6)


def test_resnet20_train_step_batch2():
    solver = make_solver(input_net_param(os.path.join(RESNET, "train_val.prototxt"), 2,
                                         caffe.TRAIN))
    fill_inputs(solver.net)
    w0 = solver.net.params["res2_1_proj"][0].data.copy()
    solver.step(1)
    loss = float(solver.net.blobs["loss"].data)
    assert np.isfinite(loss) and loss > 0
    assert not np.array_equal(solver.net.params["res2_1_proj"][0].data, w0)
    assert solver.net.blobs["fc10"].data.shape == (2, 10)


def test_checked_in_prototxts_are_the_generators():
    spec = importlib.util.spec_from_file_location("make_prototxt",
                                                  os.path.join(RESNET, "make_prototxt.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, text in mod.texts().items():
        with open(os.path.join(RESNET, name)) as f:
            assert f.read() == text, name


# ------------------------------------------------------------------------------- load
def test_busy_seconds_leaves_out_idle_and_iowait():
    line = "cpu  100 20 30 400 50 6 7 8 9 10"     # guest fields (9, 10) are not counted
    assert load.busy_seconds(line, 100) == pytest.approx((100 + 20 + 30 + 6 + 7 + 8) / 100)


def test_other_cores_is_machine_busy_minus_own_cpu_per_wall_second():
    # 2 s wall; the machine was busy 3 CPU seconds, this process 1 of them: others 1 core
    assert load.other_cores((10.0, 50.0, 4.0), (12.0, 53.0, 5.0)) == pytest.approx(1.0)
    # own time read a tick after /proc/stat: never below zero
    assert load.other_cores((0.0, 0.0, 0.0), (1.0, 0.5, 0.6)) == 0.0
    assert load.other_cores((1.0, 0.0, 0.0), (1.0, 5.0, 0.0)) == 0.0


def test_other_load_measures_a_real_block():
    with load.OtherLoad() as ol:
        sum(range(10000))
    assert ol.cores >= 0.0


def test_readme_refusal():
    assert load.readme_refusal([("a", 0.05), ("b", 0.2)]) is None   # "more than 0.2" only
    why = load.readme_refusal([("a", 0.05), ("resnet20/ours in pass 2", 0.31)])
    assert "0.31" in why and "resnet20/ours in pass 2" in why
    assert load.readme_refusal([]) is not None


# ------------------------------------------------------------------------------- ratios
def test_ratio_to_best_reference():
    assert stats.ratio(120.0, (60.0, 40.0)) == pytest.approx(3.0)
    assert stats.ratio(120.0, (None, 80.0)) == pytest.approx(1.5)
    assert stats.ratio(120.0, (None, None)) is None
    assert stats.ratio(None, (1.0,)) is None


def test_ratio_summary_is_median_min_max_of_per_pass_ratios():
    passes = [(100.0, [50.0, 40.0]),       # 2.5
              (90.0, [45.0, None]),        # 2.0
              (None, [10.0]),              # ours missing: no ratio
              (70.0, [None, None]),        # no reference: no ratio
              (30.0, [10.0, 20.0])]        # 3.0
    assert stats.ratio_summary(passes) == pytest.approx((2.5, 2.0, 3.0))
    assert stats.ratio_summary([(None, [1.0])]) is None


def result(train, forward, cores):
    return {"timings": {"train": train, "forward": forward}, "layers": {}, "peak_mib": 1.0,
            "others_cores": cores}


def synthetic_passes(cores):
    """Two passes of resnet20 on three sides, in seconds. Ours over the pass's best: train
    0.3/0.1 = 3.0 then 0.2/0.1 = 2.0, forward 1.0/0.5 = 2.0 both times."""
    return [{("resnet20", "ours"): result([0.3, 0.3, 0.3], [1.0], cores[0]),
             ("resnet20", "torch-cl"): result([0.1, 0.1, 0.1], [0.5], cores[1]),
             ("resnet20", "torch-nchw"): result([0.2, 0.2, 0.2], [0.8], cores[2])},
            {("resnet20", "ours"): result([0.2, 0.2, 0.2], [1.0], cores[3]),
             ("resnet20", "torch-cl"): result([0.15, 0.15, 0.15], [0.9], cores[4]),
             ("resnet20", "torch-nchw"): result([0.1, 0.1, 0.1], [0.5], cores[5])}]


def test_report_rows_pooled_medians_and_per_pass_ratios():
    report = cpu.Report(synthetic_passes([0.0] * 6), torch_cols=True)
    report.fill(("resnet20",))
    train, forward = report.table.text().splitlines()[2:4]
    # pooled medians: ours 250 ms (0.2/0.3 split evenly), NHWC 125 ms, NCHW 150 ms;
    # per-pass ratios 3.0 and 2.0: median 2.5
    assert train.split(" | ")[1:6] == ["250.00 ms", "125.00 ms", "150.00 ms", "2.50×",
                                       "2.00–3.00× |"]
    # forward pooled: ours 1000 ms, NHWC median(0.5, 0.9) = 700, NCHW median(0.8, 0.5) = 650;
    # their quotient (1.54) is not what is shown: both passes give 2.0 side by side
    assert forward.split(" | ")[1:6] == ["1000.00 ms", "700.00 ms", "650.00 ms", "2.00×",
                                         "2.00–2.00× |"]


def test_readme_table_refused_under_load(capsys):
    report = cpu.Report(synthetic_passes([0.0, 0.1, 0.0, 0.0, 0.45, 0.0]), torch_cols=True)
    report.fill(("resnet20",))
    assert cpu.print_readme(report, ["--readme"], 2, 3) == 3
    out = capsys.readouterr().out
    assert "not printed" in out and "0.45" in out and "resnet20/torch-cl in pass 2" in out
    assert "| row |" not in out


def test_readme_table_printed_on_a_quiet_machine(capsys):
    report = cpu.Report(synthetic_passes([0.0, 0.1, 0.0, 0.0, 0.2, 0.0]), torch_cols=True)
    report.fill(("resnet20",))
    assert cpu.print_readme(report, ["--readme"], 2, 3) == 0
    out = capsys.readouterr().out
    assert "at most 0.20 cores" in out
    assert "| resnet20: train iteration, batch 100 (Input layers) | 250.00 ms |" in out


def test_data_layer_row_is_paired_with_the_input_layer_rounds():
    passes = []
    for data, inp in ((0.105, 0.1), (0.11, 0.1)):       # 1.05 and 1.10 of the Input row
        ours = result([0.1], [1.0], 0.0)
        ours["timings"].update(data=[data], data_input=[inp])
        passes.append({("cifar10_bn", "ours"): ours,
                       ("cifar10_bn", "torch-cl"): result([0.05], [0.5], 0.0)})
    report = cpu.Report(passes, torch_cols=True)
    report.fill(("cifar10_bn",))
    row = [t for t, _ in report.table.lines if "Data layer" in t][0]
    assert row.endswith("| 107.50 ms | | | 1.075× | 1.050–1.100× |")

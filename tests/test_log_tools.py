import csv
import os
import subprocess
import sys

import pytest

from minicaffe.training_log import parse_log

HERE = os.path.dirname(__file__)
LOG = os.path.join(HERE, "data", "caffe_train_excerpt.log")
ROOT = os.path.dirname(HERE)


def test_parse_caffe_log_excerpt():
    with open(LOG) as f:
        train, test = parse_log(f)
    assert [r["NumIters"] for r in train] == [0, 100, 200]
    assert [r["loss"] for r in train] == [2.30259, 1.9, 1.7]       # new and old wording
    assert [r["LearningRate"] for r in train] == [0.001, 0.001, 0.0001]
    assert train[1]["Seconds"] == pytest.approx(32.3999, abs=1e-4)
    assert [(r["NumIters"], r["accuracy"], r["loss"]) for r in test] == \
        [(0, 0.1, 87.3365), (200, 0.412, 1.62)]
    assert test[1]["LearningRate"] == 0.001


def test_parse_log_tool_writes_csv(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "parse_log.py"), LOG,
                          str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "caffe_train_excerpt.log.test.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[1]["NumIters"] == "200" and rows[1]["accuracy"] == "0.412"
    missing = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "parse_log.py"),
                              str(tmp_path / "nope.log")], capture_output=True, text=True)
    assert missing.returncode == 1 and "nope.log: no such file" in missing.stderr


def test_plot_training_log_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plot_training_log.py"),
                          LOG, str(png)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

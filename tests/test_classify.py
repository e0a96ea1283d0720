import os
import subprocess
import sys

import numpy as np
import pytest

import minicaffe as caffe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "models", "cifar10_bn", "deploy.prototxt")


def test_classify_prints_top_k_cifar_names(tmp_path):
    from PIL import Image
    net = caffe.Net(DEPLOY, caffe.TEST)
    for layer in net.layers:
        for b in layer.blobs:
            b.data[...] = np.random.RandomState(0).standard_normal(b.data.shape) * 0.1
    # BatchNorm statistics: factor 1, variance 1, so the TEST-phase output is defined.
    for name in ("bn1", "bn2", "bn3"):
        mean, var, factor = net.params[name]
        mean.data[...] = 0
        var.data[...] = 1
        factor.data[...] = 1
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    img = np.random.RandomState(1).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    path = str(tmp_path / "img.png")
    Image.fromarray(img).save(path)
    out = subprocess.run([sys.executable, "-m", "minicaffe", "classify", "--model", DEPLOY,
                          "--weights", weights, "--top_k", "3", path],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == path and len(lines) == 4
    # Independent check: the same forward by hand (RGB, 0..255, CHW, no mean).
    net2 = caffe.Net(DEPLOY, weights, caffe.TEST)
    prob = net2.forward(data=img.transpose(2, 0, 1)[None].astype(np.float32))["prob"][0]
    from minicaffe.data.cifar10 import CLASSES
    best = int(np.argmax(prob))
    assert lines[1].strip() == f'{prob[best]:.4f} - "{CLASSES[best]}"'


def test_classify_missing_image_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "minicaffe", "classify", "--model", DEPLOY,
                          "--weights", str(tmp_path / "none.caffemodel"), "x.png"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1
    assert "none.caffemodel: no such file" in out.stderr and "Traceback" not in out.stderr

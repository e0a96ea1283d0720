#!/usr/bin/env bash
# Train the CIFAR-10 BN example on the CIFAR-10 sample shipped in the repo (2,000 training and
# 500 test images). Run from the repository root. Prepares the LMDBs on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
minicaffe data cifar10 --sample --out data/cifar10_sample
mkdir -p models/cifar10_bn/sample_run
minicaffe train --solver models/cifar10_bn/solver_sample.prototxt "$@"

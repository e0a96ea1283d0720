"""The CIFAR-10 binary batch files: reading them from a tarball or folder, checking their
layout, and the reduced sample the repository ships.

The layout: ``cifar-10-batches-bin/data_batch_1.bin`` ... ``data_batch_5.bin`` and
``test_batch.bin``, each 10000 records of 3073 bytes (1 label byte, then a 32x32 image as 1024
red, 1024 green, 1024 blue bytes: CHW order).

A reduced sample has the same layout with any number of records per file and the training
files ``data_batch_1.bin`` ... ``data_batch_K.bin`` for some K >= 1: the repository ships one
under ``models/cifar10_bn/sample/cifar-10-batches-bin`` (2000 training and 500 test images
taken from the start of data_batch_1 and test_batch).
"""
import os
import tarfile
from pathlib import Path

import numpy as np

from ..errors import MiniCaffeError

BATCHES_DIR = "cifar-10-batches-bin"
CHANNELS, HEIGHT, WIDTH = 3, 32, 32
IMAGE_BYTES = CHANNELS * HEIGHT * WIDTH
RECORD_BYTES = IMAGE_BYTES + 1
BATCH_RECORDS = 10000
NUM_TRAIN_BATCHES = 5
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, NUM_TRAIN_BATCHES + 1))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
SAMPLE_REL = os.path.join("models", "cifar10_bn", "sample", BATCHES_DIR)


def _print(msg):
    print(msg, flush=True)


def bundled_sample_dir():
    """The CIFAR-10 sample shipped with the repository (None when it cannot be found)."""
    here = Path(__file__).resolve().parents[2] / SAMPLE_REL
    for cand in (here, Path.cwd() / SAMPLE_REL):
        if (cand / TEST_FILE).is_file():
            return str(cand)
    return None


def _wanted(name):
    return name in TRAIN_FILES or name in (TEST_FILE, META_FILE) or \
        (name.startswith("data_batch_") and name.endswith(".bin"))


def load_batches(source):
    """{file name: bytes} of the batch files in a tarball or a folder (the batches folder itself
    or one holding ``cifar-10-batches-bin``)."""
    files = {}
    if os.path.isdir(source):
        folder = source
        if not any(os.path.isfile(os.path.join(folder, n)) for n in TRAIN_FILES + (TEST_FILE,)):
            folder = os.path.join(source, BATCHES_DIR)
        if not os.path.isdir(folder):
            raise MiniCaffeError(f"{source}: no CIFAR-10 batch files (data_batch_*.bin, "
                                 f"{TEST_FILE}) in it or in {BATCHES_DIR}/ below it")
        for name in sorted(os.listdir(folder)):
            p = os.path.join(folder, name)
            if _wanted(name) and os.path.isfile(p):
                with open(p, "rb") as f:
                    files[name] = f.read()
        return files
    if not os.path.isfile(source):
        raise MiniCaffeError(f"{source}: no such file or folder")
    try:
        with tarfile.open(source, "r:*") as tar:
            for m in tar:
                name = os.path.basename(m.name)
                if m.isfile() and _wanted(name):
                    if name in files:
                        raise MiniCaffeError(f"{source}: holds {name} twice")
                    files[name] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise MiniCaffeError(f"{source}: not a readable tarball ({e})") from None
    return files


def verify_layout(files, sample=False, where="input"):
    """Check the batch files; return (train file names in order, train count, test count).

    Full data: data_batch_1..5.bin and test_batch.bin, each 10000 records of 3073 bytes.
    Sample (``sample=True``): data_batch_1..K.bin (K >= 1) and test_batch.bin, each a positive
    whole number of records. Labels must be 0..9 in both cases.
    """
    problems = []
    if sample:
        train = []
        for i in range(1, 100):
            n = f"data_batch_{i}.bin"
            if n not in files:
                break
            train.append(n)
        if not train:
            problems.append("data_batch_1.bin is missing")
    else:
        train = list(TRAIN_FILES)
        for n in train:
            if n not in files:
                problems.append(f"{n} is missing")
    if TEST_FILE not in files:
        problems.append(f"{TEST_FILE} is missing")
    counts = {}
    for n in train + [TEST_FILE]:
        if n not in files:
            continue
        size = len(files[n])
        if sample:
            if size == 0 or size % RECORD_BYTES:
                problems.append(f"{n} has {size} bytes, not a whole number of {RECORD_BYTES}-byte "
                                "records")
                continue
        elif size != BATCH_RECORDS * RECORD_BYTES:
            problems.append(f"{n} has {size} bytes, expected {BATCH_RECORDS * RECORD_BYTES} "
                            f"({BATCH_RECORDS} records of {RECORD_BYTES} bytes)")
            continue
        labels = np.frombuffer(files[n], dtype=np.uint8)[::RECORD_BYTES]
        if labels.size and labels.max() > 9:
            problems.append(f"{n} has label {int(labels.max())} (CIFAR-10 labels are 0..9)")
            continue
        counts[n] = size // RECORD_BYTES
    if problems:
        msg = f"{where} is not a valid CIFAR-10 binary dataset: " + "; ".join(problems)
        bins = [files[n] for n in files if n.endswith(".bin")]
        if not sample and TEST_FILE in files and "data_batch_1.bin" in files and \
                all(len(b) and len(b) % RECORD_BYTES == 0 for b in bins):
            msg += " (it looks like a reduced sample: pass --sample to convert it)"
        raise MiniCaffeError(msg)
    return train, sum(counts[n] for n in train), counts[TEST_FILE]


def read_records(path):
    """(images uint8 (N, 3, 32, 32), labels uint8 (N,)) of one binary batch file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD_BYTES:
        raise MiniCaffeError(f"{path}: {raw.size} bytes is not a whole number of records")
    rec = raw.reshape(-1, RECORD_BYTES)
    return rec[:, 1:].reshape(-1, CHANNELS, HEIGHT, WIDTH), rec[:, 0].copy()


def make_sample(source, out_dir, num_train=2000, num_test=500, log=_print):
    """Write a reduced copy of CIFAR-10 (the first records of data_batch_1 and test_batch) in the
    binary layout: how the repository's bundled sample was made."""
    files = load_batches(source)
    verify_layout(files, sample=False, where=source)
    if not 0 < num_train <= BATCH_RECORDS or not 0 < num_test <= BATCH_RECORDS:
        raise MiniCaffeError(f"sample sizes must be 1..{BATCH_RECORDS}")
    os.makedirs(out_dir, exist_ok=True)
    parts = {"data_batch_1.bin": files["data_batch_1.bin"][:num_train * RECORD_BYTES],
             TEST_FILE: files[TEST_FILE][:num_test * RECORD_BYTES]}
    if META_FILE in files:
        parts[META_FILE] = files[META_FILE]
    for name, data in parts.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    log(f"Wrote a CIFAR-10 sample ({num_train} training, {num_test} test images) to {out_dir}")
    return out_dir

"""CIFAR-10: download the official binary tarball (or take a local copy) and convert it to the
LMDBs and mean image Caffe's CIFAR-10 examples use.

The binary layout: ``cifar-10-batches-bin/data_batch_1.bin`` ... ``data_batch_5.bin`` and
``test_batch.bin``, each 10000 records of 3073 bytes (1 label byte, then a 32x32 image as 1024
red, 1024 green, 1024 blue bytes: CHW order). Conversion follows Caffe's convert_cifar_data:
train records from the five batches in file order, keys ``"%05d"`` of the running index, test
records keyed by their index; each value a Datum (channels 3, height 32, width 32, the 3072
image bytes as stored, label). The mean of the training LMDB goes to ``mean.binaryproto`` as
compute_image_mean writes it.

Outputs (under ``--out``): ``cifar10_train_lmdb/``, ``cifar10_test_lmdb/``, ``mean.binaryproto``
and ``cifar10_info.json`` (what was converted, so a second run can skip the work).

``--sample`` converts a reduced copy in the same layout (any number of records per file, the
training files ``data_batch_1.bin`` ... ``data_batch_K.bin`` for some K >= 1): the repository
ships one under ``models/cifar10_bn/sample/cifar-10-batches-bin`` (2000 training and 500 test
images taken from the start of data_batch_1 and test_batch), used by default with ``--sample``.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .db import LMDBWriter, close_env, is_lmdb, num_entries
from .mean import compute_image_mean

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TARBALL_NAME = "cifar-10-binary.tar.gz"
BATCHES_DIR = "cifar-10-batches-bin"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
CHANNELS, HEIGHT, WIDTH = 3, 32, 32
IMAGE_BYTES = CHANNELS * HEIGHT * WIDTH
RECORD_BYTES = IMAGE_BYTES + 1
BATCH_RECORDS = 10000
NUM_TRAIN_BATCHES = 5
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, NUM_TRAIN_BATCHES + 1))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
DEFAULT_OUT = os.path.join("data", "cifar10")
DEFAULT_SAMPLE_OUT = os.path.join("data", "cifar10_sample")
TRAIN_DB, TEST_DB, MEAN_FILE, INFO_FILE = ("cifar10_train_lmdb", "cifar10_test_lmdb",
                                           "mean.binaryproto", "cifar10_info.json")
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


def md5_file(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# -- download -----------------------------------------------------------------------------------
def download(url=URL, dest=TARBALL_NAME, md5=MD5, progress=True, timeout=60, chunk=1 << 20,
             log=_print):
    """Download ``url`` to ``dest`` with a progress bar and an MD5 check.

    The file is written as ``dest + ".part"`` and renamed only when complete and verified: an
    interrupted transfer or a wrong checksum raises MiniCaffeError and leaves no ``dest``.
    """
    from tqdm import tqdm
    part = f"{dest}.part"
    d = os.path.dirname(os.path.abspath(dest))
    os.makedirs(d, exist_ok=True)
    log(f"Downloading {url} to {dest}")
    h = hashlib.md5()
    got = 0
    total = None
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as e:
            raise MiniCaffeError(f"cannot download {url}: {getattr(e, 'reason', e)} (without "
                                 "internet, pass a local copy with --from PATH)") from None
        with resp, open(part, "wb") as f:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=os.path.basename(dest), disable=not progress, file=sys.stderr) as bar:
                while True:
                    try:
                        b = resp.read(chunk)
                    except Exception as e:  # connection reset, IncompleteRead, timeout
                        raise MiniCaffeError(f"download of {url} interrupted after {got} bytes"
                                             f"{f' of {total}' if total else ''}: {e}") from None
                    if not b:
                        break
                    f.write(b)
                    h.update(b)
                    got += len(b)
                    bar.update(len(b))
        if total is not None and got != total:
            raise MiniCaffeError(f"download of {url} interrupted: got {got} of {total} bytes")
        if got == 0:
            raise MiniCaffeError(f"download of {url} returned no data")
        digest = h.hexdigest()
        if md5 and digest != md5.lower():
            raise MiniCaffeError(f"checksum mismatch for {url}: MD5 {digest}, expected {md5}; "
                                 "the file was discarded")
        os.replace(part, dest)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    log(f"Downloaded {got} bytes" + (f", MD5 {digest} verified" if md5 else ""))
    return dest


# -- reading the batches ------------------------------------------------------------------------
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


# -- conversion ---------------------------------------------------------------------------------
def _write_db(path, blobs, progress=False, desc=""):
    """Write the records of ``blobs`` (bytes of whole records) to a fresh LMDB at ``path``."""
    from tqdm import tqdm
    tmp = f"{path}.tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    datum = caffe_pb2.Datum(channels=CHANNELS, height=HEIGHT, width=WIDTH)
    index = 0
    total = sum(len(b) // RECORD_BYTES for b in blobs)
    with LMDBWriter(tmp, commit_every=1000, map_size=max(1 << 24, total * 4096)) as w, \
            tqdm(total=total, unit="img", desc=desc, disable=not progress,
                 file=sys.stderr) as bar:
        for buf in blobs:
            mv = memoryview(buf)
            for off in range(0, len(buf), RECORD_BYTES):
                datum.label = buf[off]
                datum.data = bytes(mv[off + 1:off + RECORD_BYTES])
                w.put(b"%05d" % index, datum.SerializeToString())
                index += 1
            bar.update(len(buf) // RECORD_BYTES)
    close_env(path)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    return index


def convert_batches(files, train_names, out_dir, progress=False, log=_print):
    """Write the train/test LMDBs and the mean image from verified batch files."""
    os.makedirs(out_dir, exist_ok=True)
    train_db = os.path.join(out_dir, TRAIN_DB)
    test_db = os.path.join(out_dir, TEST_DB)
    mean_path = os.path.join(out_dir, MEAN_FILE)
    log("Writing the training data")
    n_train = _write_db(train_db, [files[n] for n in train_names], progress, "train")
    log("Writing the test data")
    n_test = _write_db(test_db, [files[TEST_FILE]], progress, "test")
    log("Computing the mean image of the training data")
    compute_image_mean(train_db, mean_path, log=log)
    return {"train": train_db, "test": test_db, "mean": mean_path,
            "num_train": n_train, "num_test": n_test}


def _prepared(out_dir):
    """The info of a completed earlier conversion in ``out_dir``, or None."""
    info_path = os.path.join(out_dir, INFO_FILE)
    try:
        with open(info_path) as f:
            info = json.load(f)
        ok = (is_lmdb(info["train"]) and is_lmdb(info["test"]) and os.path.isfile(info["mean"])
              and num_entries(info["train"]) == info["num_train"]
              and num_entries(info["test"]) == info["num_test"])
    except (OSError, ValueError, KeyError, MiniCaffeError):
        return None
    return info if ok else None


def prepare_cifar10(out_dir=None, source=None, sample=False, force=False, url=URL, md5=MD5,
                    progress=True, log=_print):
    """Get CIFAR-10 (download, or ``source``: a tarball or folder) and convert it into
    ``out_dir``; skipped when an earlier run completed there (unless ``force``).

    Returns a dict with the paths ``train``, ``test``, ``mean`` and the record counts.
    """
    if out_dir is None:
        out_dir = DEFAULT_SAMPLE_OUT if sample else DEFAULT_OUT
    if not force:
        info = _prepared(out_dir)
        if info is not None and bool(info.get("sample")) == bool(sample):
            log(f"CIFAR-10 already prepared in {out_dir} ({info['num_train']} training, "
                f"{info['num_test']} test images); use --force to redo it")
            return info
    if sample and source is None:
        source = bundled_sample_dir()
        if source is None:
            raise MiniCaffeError(f"--sample without --from needs the bundled sample {SAMPLE_REL}"
                                 " (run from the repository root)")
        log(f"Using the bundled CIFAR-10 sample {source}")
    if source is None:
        tarball = os.path.join(out_dir, TARBALL_NAME)
        if os.path.isfile(tarball) and (not md5 or md5_file(tarball) == md5.lower()):
            log(f"Found {tarball} with the official MD5; not downloading it again")
        else:
            download(url, tarball, md5=md5, progress=progress, log=log)
        source = tarball
    elif os.path.isfile(source):
        digest = md5_file(source)
        if md5 and digest == md5.lower():
            log(f"{source}: MD5 {digest} matches the official CIFAR-10 tarball")
        else:
            log(f"{source}: MD5 {digest} differs from the official tarball's {md5}; "
                "verifying the structure and sizes of the batch files instead")
    elif os.path.isdir(source):
        log(f"{source} is a folder: there is no checksum to compare, verifying the structure "
            "and sizes of the batch files instead")
    else:
        raise MiniCaffeError(f"--from {source}: no such file or folder")
    files = load_batches(source)
    train, n_train, n_test = verify_layout(files, sample=sample, where=source)
    if sample:
        log(f"Structure OK: reduced sample, {len(train)} training file(s) with {n_train} records, "
            f"{TEST_FILE} with {n_test} records of {RECORD_BYTES} bytes")
    else:
        log(f"Structure OK: {len(train)} training batches and {TEST_FILE}, each "
            f"{BATCH_RECORDS} records of {RECORD_BYTES} bytes")
    info = convert_batches(files, train, out_dir, progress=progress, log=log)
    info.update(source=os.path.abspath(source), sample=bool(sample))
    if META_FILE in files:
        with open(os.path.join(out_dir, META_FILE), "wb") as f:
            f.write(files[META_FILE])
    tmp = os.path.join(out_dir, INFO_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, INFO_FILE))
    log(f"Done: {info['num_train']} training images in {info['train']}, {info['num_test']} test "
        f"images in {info['test']}, mean image in {info['mean']}")
    return info


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


def read_records(path):
    """(images uint8 (N, 3, 32, 32), labels uint8 (N,)) of one binary batch file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD_BYTES:
        raise MiniCaffeError(f"{path}: {raw.size} bytes is not a whole number of records")
    rec = raw.reshape(-1, RECORD_BYTES)
    return rec[:, 1:].reshape(-1, CHANNELS, HEIGHT, WIDTH), rec[:, 0].copy()


def main_cifar10(argv=None):
    """``minicaffe data cifar10``: get CIFAR-10 and convert it to LMDBs + mean image."""
    ap = argparse.ArgumentParser(
        prog="minicaffe data cifar10",
        description="Download CIFAR-10 (binary version) or take a local copy, and convert it to "
                    "train/test LMDBs and a mean image as Caffe's CIFAR-10 example does.")
    ap.add_argument("--from", dest="source", metavar="PATH",
                    help="local cifar-10-binary.tar.gz or extracted folder instead of downloading")
    ap.add_argument("--out", metavar="DIR",
                    help=f"output folder (default {DEFAULT_OUT}, or {DEFAULT_SAMPLE_OUT} with "
                         "--sample)")
    ap.add_argument("--sample", action="store_true",
                    help="convert a reduced sample in the binary layout (default source: the "
                         f"bundled {SAMPLE_REL})")
    ap.add_argument("--force", action="store_true", help="convert again even if already done")
    ap.add_argument("--url", default=URL, help=argparse.SUPPRESS)
    ap.add_argument("--md5", default=MD5, help=argparse.SUPPRESS)
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--make-sample", metavar="DIR",
                    help="instead: write a sample (first --num-train / --num-test images) of the "
                         "--from data to DIR")
    ap.add_argument("--num-train", type=int, default=2000, help=argparse.SUPPRESS)
    ap.add_argument("--num-test", type=int, default=500, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        if args.make_sample:
            if not args.source:
                raise MiniCaffeError("--make-sample needs --from (the full data)")
            make_sample(args.source, args.make_sample, args.num_train, args.num_test)
        else:
            prepare_cifar10(args.out, args.source, sample=args.sample, force=args.force,
                            url=args.url, md5=args.md5, progress=not args.no_progress)
    except MiniCaffeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0

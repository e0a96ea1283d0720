"""CIFAR-10 batch files into LMDBs and a mean image, as Caffe's convert_cifar_data.

Train records from the training files in file order, keys ``"%05d"`` of the running index,
test records keyed by their index; each value a Datum (channels 3, height 32, width 32, the
3072 image bytes as stored, label). The mean of the training LMDB goes to ``mean.binaryproto``
as compute_image_mean writes it. ``cifar10_info.json`` records what was converted, so a
second run can skip the work.
"""
import json
import os
import shutil
import sys

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .cifar10_batches import CHANNELS, HEIGHT, RECORD_BYTES, TEST_FILE, WIDTH
from .db import LMDBWriter, close_env, is_lmdb, num_entries
from .mean import compute_image_mean

TRAIN_DB, TEST_DB, MEAN_FILE, INFO_FILE = ("cifar10_train_lmdb", "cifar10_test_lmdb",
                                           "mean.binaryproto", "cifar10_info.json")


def _print(msg):
    print(msg, flush=True)


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


def prepared(out_dir):
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

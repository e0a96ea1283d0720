"""CIFAR-10: download the official binary tarball (or take a local copy) and convert it to the
LMDBs and mean image Caffe's CIFAR-10 examples use (``minicaffe data cifar10``).

The pieces: ``download`` (the tarball, MD5-checked), ``cifar10_batches`` (reading and checking
the batch files, the bundled sample), ``cifar10_lmdb`` (the conversion).

Outputs (under ``--out``): ``cifar10_train_lmdb/``, ``cifar10_test_lmdb/``, ``mean.binaryproto``
and ``cifar10_info.json``. ``--sample`` converts a reduced copy in the same layout, by default
the one the repository ships.
"""
import argparse
import json
import os
import sys

from ..errors import MiniCaffeError
from .cifar10_batches import (BATCH_RECORDS, META_FILE, RECORD_BYTES, SAMPLE_REL, TEST_FILE,
                              bundled_sample_dir, load_batches, make_sample, verify_layout)
from .cifar10_lmdb import INFO_FILE, convert_batches, prepared
from .download import download, md5_file

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
TARBALL_NAME = "cifar-10-binary.tar.gz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
DEFAULT_OUT = os.path.join("data", "cifar10")
DEFAULT_SAMPLE_OUT = os.path.join("data", "cifar10_sample")


def _print(msg):
    print(msg, flush=True)


def prepare_cifar10(out_dir=None, source=None, sample=False, force=False, url=URL, md5=MD5,
                    progress=True, log=_print):
    """Get CIFAR-10 (download, or ``source``: a tarball or folder) and convert it into
    ``out_dir``; skipped when an earlier run completed there (unless ``force``).

    Returns a dict with the paths ``train``, ``test``, ``mean`` and the record counts.
    """
    if out_dir is None:
        out_dir = DEFAULT_SAMPLE_OUT if sample else DEFAULT_OUT
    if not force:
        info = prepared(out_dir)
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

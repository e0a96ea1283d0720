"""convert_imageset: images (a list file of "path label" lines, or a folder) into an LMDB of Datums.

Follows Caffe's tool: keys ``"%08d_<path>"`` of the line index, a commit every 1000 records,
``--shuffle`` to shuffle the lines first, ``--gray`` for one channel, ``--resize_height`` /
``--resize_width``, ``--check_size`` and ``--encoded`` / ``--encode_type``. Raw Datums hold the
image bytes in CHW order with BGR channels (as OpenCV decodes them); encoded ones hold the
original file when it needs no change (same format, no resize, matching colour mode) and a
re-encoded image otherwise.

Without a list file, the images are found in the folder: one sub-folder per class (labels 0, 1,
... in sorted name order), or image files directly in it (label 0).
"""
import os
import sys

import numpy as np

from .. import backend
from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .db import LMDBWriter, array_to_datum, close_env
from .image import encode_image, native_channels, read_image
from .tool_cli import run_tool, tool_parser

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def _norm_ext(e):
    e = e.lower().lstrip(".")
    return "jpg" if e == "jpeg" else e


def _ext(name):
    return _norm_ext(os.path.splitext(name)[1])


def _shown(text, limit=60):
    """``text`` quoted for a message, its undecodable bytes as escapes, cut at ``limit``."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return "'" + os.fsencode(cut).decode("utf-8", "backslashreplace") + "'"


def read_image_list(source, with_lines=False):
    """Lines "path label" of an ImageData / convert_imageset list file (the label follows the
    last space, so paths may contain spaces); ``with_lines`` adds each entry's line number."""
    if os.path.isdir(source):
        raise MiniCaffeError(f"image list {source}: is a directory, expected a text file of "
                             "'path label' lines")
    if not os.path.isfile(source):
        raise MiniCaffeError(f"image list {source}: no such file")
    lines = []
    # Paths are bytes to the OS, as in Caffe's ifstream: undecodable ones pass through intact.
    with open(source, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if "\0" in line:  # no path holds NUL: this is a binary file
                raise MiniCaffeError(f"{source}:{lineno}: binary data, expected a text file of "
                                     "'path label' lines")
            pos = line.rfind(" ")
            if pos < 0:
                raise MiniCaffeError(f"{source}:{lineno}: expected 'path label', got "
                                     f"{_shown(line)}")
            try:
                label = int(line[pos + 1:])
            except ValueError:
                raise MiniCaffeError(f"{source}:{lineno}: label {_shown(line[pos + 1:])} is not "
                                     "an integer") from None
            lines.append((line[:pos], label, lineno) if with_lines else (line[:pos], label))
    return lines


def scan_folder(root):
    """[(relative path, label)] of the images under ``root`` and the class names.

    Sub-folders are classes (sorted names -> labels 0..K-1); with no sub-folders, every image
    directly in ``root`` gets label 0.
    """
    if not os.path.isdir(root):
        raise MiniCaffeError(f"{root}: no such folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    lines = []
    if classes:
        for label, cls in enumerate(classes):
            for dirpath, _, names in sorted(os.walk(os.path.join(root, cls))):
                for n in sorted(names):
                    if n.lower().endswith(IMAGE_EXTS):
                        rel = os.path.relpath(os.path.join(dirpath, n), root)
                        lines.append((rel, label))
    else:
        for n in sorted(os.listdir(root)):
            if n.lower().endswith(IMAGE_EXTS):
                lines.append((n, 0))
    if not lines:
        raise MiniCaffeError(f"{root}: no images found")
    return lines, classes


def _join(root, name):
    path = root + name  # Caffe concatenates; also accept a root without its slash
    if root and not os.path.exists(path) and os.path.exists(os.path.join(root, name)):
        path = os.path.join(root, name)
    return path


def convert_imageset(root_folder, list_file, db_path, gray=False, shuffle=False,
                     resize_height=0, resize_width=0, check_size=False, encoded=False,
                     encode_type="", rng=None, log=None, progress=False):
    """Write the images of ``list_file`` (or of the folder, when ``list_file`` is None) into a
    new LMDB at ``db_path``. Returns the number of records written."""
    from tqdm import tqdm
    if (resize_height == 0) != (resize_width == 0):
        raise MiniCaffeError("resize_height and resize_width must be given together")
    if list_file:
        lines = read_image_list(list_file)
    else:
        lines, classes = scan_folder(root_folder)
        if log and classes:
            log("Labels: " + ", ".join(f"{i} {c}" for i, c in enumerate(classes)))
        if root_folder and not root_folder.endswith(os.sep):
            root_folder += os.sep
    if shuffle:
        (rng if rng is not None else backend.rng()).shuffle(lines)
    if log:
        log(f"A total of {len(lines)} images.")
    is_color = not gray
    size = None
    count = 0
    close_env(db_path)
    with LMDBWriter(db_path, commit_every=1000) as w:
        for line_id, (name, label) in enumerate(tqdm(lines, disable=not progress,
                                                     unit="img", file=sys.stderr)):
            path = _join(root_folder, name)
            enc = encode_type.lower() if encode_type else (_ext(name) if encoded else "")
            if encoded and not enc:
                raise MiniCaffeError(f"cannot guess the encoding of '{name}'; give encode_type")
            img = read_image(path, resize_height, resize_width, is_color)
            if encoded:
                same_mode = (native_channels(path) == 3) == is_color
                if not resize_height and _ext(name) == _norm_ext(enc) and same_mode:
                    with open(path, "rb") as f:
                        data = f.read()
                else:
                    data = encode_image(img, enc)
                datum = caffe_pb2.Datum(data=data, label=int(label), encoded=True)
            else:
                datum = array_to_datum(img, label)
            if check_size:
                if size is None:
                    size = img.shape
                elif img.shape != size:
                    raise MiniCaffeError(f"{name}: image of shape {img.shape} differs from the "
                                         f"first image's {size} (check_size)")
            w.put(b"%08d_%s" % (line_id, name.encode()), datum.SerializeToString())
            count += 1
            if log and count % 1000 == 0:
                log(f"Processed {count} files.")
    if log:
        log(f"Processed {count} files into {db_path}.")
    return count


def main_convert_imageset(argv=None):
    ap = tool_parser(
        "convert_imageset",
        "Convert images to an LMDB of Datums (as Caffe's convert_imageset). "
        "Usage: convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME, or "
        "convert_imageset [FLAGS] FOLDER DB_NAME (one sub-folder per class).")
    ap.add_argument("paths", nargs="+", metavar="ROOTFOLDER [LISTFILE] DB_NAME")
    ap.add_argument("--gray", action="store_true", help="convert to one grey channel")
    ap.add_argument("--shuffle", action="store_true", help="shuffle the images first")
    ap.add_argument("--resize_width", type=int, default=0)
    ap.add_argument("--resize_height", type=int, default=0)
    ap.add_argument("--check_size", action="store_true")
    ap.add_argument("--encoded", action="store_true", help="store encoded images (PNG/JPEG)")
    ap.add_argument("--encode_type", default="", help="png, jpg, ... (default: the file's own)")
    ap.add_argument("--seed", type=int, default=None, help="random seed for --shuffle")
    args = ap.parse_args(argv)

    def work():
        if len(args.paths) == 3:
            root, listfile, db = args.paths
        elif len(args.paths) == 2:
            (root, db), listfile = args.paths, None
        else:
            ap.error("give ROOTFOLDER LISTFILE DB_NAME, or FOLDER DB_NAME")
        rng = np.random.default_rng(args.seed) if args.seed is not None else None
        convert_imageset(root, listfile, db, gray=args.gray, shuffle=args.shuffle,
                         resize_height=args.resize_height, resize_width=args.resize_width,
                         check_size=args.check_size, encoded=args.encoded,
                         encode_type=args.encode_type, rng=rng, log=print)

    return run_tool(args, work)

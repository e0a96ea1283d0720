"""LMDB databases of Caffe ``Datum`` records (the format Caffe's Data layer and tools use).

A Caffe LMDB is a directory holding ``data.mdb`` and ``lock.mdb``; keys are byte strings (the
tools use zero-padded indices) and values are serialized ``Datum`` messages. Cursors visit keys
in sorted byte order, which is the order the Data layer delivers records in.

py-lmdb refuses to open one environment twice in a process, while a train and a test net (or a
converter and a reader) may well ask for the same path; read-only environments are therefore
shared through a small cache keyed by the real path.

Resident memory. LMDB reads through a memory map, so every record read stays in the process's
resident set: Caffe's RSS grows to the size of the database over an epoch (BVLC/caffe#1377,
#2121, #4279: jobs killed by cluster memory limits). On Linux the readers here hand the pages
they have passed back every ``DROP_PAGES_BYTES`` of records (``madvise(MADV_DONTNEED)`` on the
read-only file map: the data stays in the OS page cache, a later read maps it again, and
nothing read changes), so the resident set stays flat.
"""
import ctypes
import logging
import os
import sys
import threading

import numpy as np

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .image import decode_image

log = logging.getLogger("minicaffe")

LEVELDB_HINT = ("LevelDB is not supported; convert the database to LMDB (run Caffe's "
                "convert_imageset / convert_cifar_data with --backend=lmdb, or minicaffe's "
                "tools/convert_imageset.py / `minicaffe data cifar10`) and set `backend: LMDB`")


def _lmdb():
    try:
        import lmdb
    except ImportError:  # pragma: no cover - lmdb is a dependency
        raise MiniCaffeError("reading LMDB databases needs the lmdb package: pip install lmdb") \
            from None
    return lmdb


def is_lmdb(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "data.mdb"))


def is_leveldb(path):
    """A LevelDB directory: its CURRENT file names the live manifest."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "CURRENT"))


def check_lmdb(path):
    """Fail, saying what ``path`` is instead, unless it is an LMDB directory."""
    if is_lmdb(path):
        return
    if not os.path.exists(path):
        raise MiniCaffeError(f"LMDB {path}: no such directory")
    if is_leveldb(path):
        raise MiniCaffeError(f"{path} is a LevelDB database: {LEVELDB_HINT}")
    what = "a file" if not os.path.isdir(path) else "a directory without data.mdb"
    raise MiniCaffeError(f"{path} is not an LMDB database: it is {what} (an LMDB is a "
                         "directory holding data.mdb and lock.mdb)")


def key_text(key):
    """An LMDB key for a message: Caffe's tools write text keys ("%08d_<path>")."""
    return repr(key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key)


# -- read-only environments, shared per path ----------------------------------------------------
_envs = {}
_envs_lock = threading.Lock()


def _identity(path):
    st = os.stat(os.path.join(path, "data.mdb"))
    return (st.st_dev, st.st_ino)


def open_env(path):
    """A read-only lmdb Environment for the Caffe LMDB directory ``path`` (shared per path)."""
    lmdb = _lmdb()
    check_lmdb(path)
    real = os.path.realpath(path)
    with _envs_lock:
        ident = _identity(real)
        cached = _envs.get(real)
        if cached is not None:
            if cached[1] == ident:
                return cached[0]
            # The database was replaced on disk since we opened it: reopen.
            _envs.pop(real)
            try:
                cached[0].close()
            except Exception:  # pragma: no cover
                pass
        try:
            env = lmdb.open(real, readonly=True, lock=False, readahead=False,
                            max_readers=512, subdir=True)
        except lmdb.Error as e:
            raise MiniCaffeError(f"cannot open LMDB {path}: {e}") from None
        _envs[real] = (env, ident)
        return env


def close_env(path):
    """Forget (and close) the shared read-only environment of ``path``, if any."""
    real = os.path.realpath(path)
    with _envs_lock:
        cached = _envs.pop(real, None)
    if cached is not None:
        cached[0].close()


# -- dropping read pages from the resident set (Linux) ---------------------------------------------
DROP_PAGES_BYTES = 8 << 20
_MADV_DONTNEED = 4
_madvise = None


def _madvise_fn():
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
            except (OSError, AttributeError):  # pragma: no cover - no libc symbol
                pass
    return _madvise


def mapped_ranges(file_path):
    """(start, end) address ranges where this process maps ``file_path`` (Linux), else []."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.readlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].rstrip("\n") == file_path:
            lo, hi = parts[0].split("-")
            out.append((int(lo, 16), int(hi, 16)))
    return out


def drop_read_pages(path):
    """Unmap the pages of LMDB ``path``'s data file from this process's resident set (they
    stay in the page cache). Returns False where that is not possible (not Linux)."""
    madvise = _madvise_fn()
    if not madvise:
        return False
    data_file = os.path.join(os.path.realpath(path), "data.mdb")
    for lo, hi in mapped_ranges(data_file):
        madvise(lo, hi - lo, _MADV_DONTNEED)
    return True


class _PageDropper:
    """Counts bytes read from ``path``; every DROP_PAGES_BYTES drops the read pages."""

    def __init__(self, path):
        self.path, self.count = path, 0

    def add(self, nbytes):
        self.count += nbytes
        if self.count >= DROP_PAGES_BYTES:
            self.count = 0
            drop_read_pages(self.path)


def num_entries(path):
    return int(open_env(path).stat()["entries"])


def iter_items(path, start=None):
    """(key, value) byte pairs of the database in key order (one pass)."""
    env = open_env(path)
    dropper = _PageDropper(path)
    with env.begin(buffers=False) as txn:
        cur = txn.cursor()
        ok = cur.set_range(start) if start is not None else cur.first()
        while ok:
            value = cur.value()
            dropper.add(len(value))
            yield cur.key(), value
            ok = cur.next()


def iter_datums(path):
    """(key, Datum) pairs of the database in key order."""
    for k, v in iter_items(path):
        yield k, parse_datum(v, path, k)


class LoopingCursor:
    """Endless iteration over the values of an LMDB, restarting at the first key after the last.

    Open it in the thread that will use it (a read transaction stays open for its lifetime).
    """

    def __init__(self, path, skip=0, name="data"):
        self.path = path
        self.name = name
        self._txn = open_env(path).begin(buffers=False)
        self._cur = self._txn.cursor()
        self._dropper = _PageDropper(path)
        if not self._cur.first():
            raise MiniCaffeError(f"LMDB {path} is empty")
        for _ in range(int(skip)):
            self.next()

    def next(self):
        """Value at the cursor, then advance (wrapping to the first record at the end)."""
        return self.next_item()[1]

    def next_item(self):
        """(key, value) at the cursor, then advance (wrapping to the first record at the end)."""
        key, value = self._cur.key(), self._cur.value()
        self._dropper.add(len(value))
        if not self._cur.next():
            log.info("%s: restarting data prefetching from start of %s", self.name, self.path)
            self._cur.first()
        return key, value

    def close(self):
        try:
            self._txn.abort()
        except Exception:  # pragma: no cover - environment already closed
            pass


class LMDBWriter:
    """Write (key, value) pairs into a new or existing LMDB, committing every ``commit_every`` puts.

    The memory map grows on demand (doubling), so no size has to be guessed up front. Use as a
    context manager, or call ``close()``; pending puts are committed on close.
    """

    def __init__(self, path, commit_every=1000, map_size=1 << 28):
        lmdb = _lmdb()
        self._lmdb = lmdb
        close_env(path)
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.commit_every = int(commit_every)
        self._env = lmdb.open(path, map_size=int(map_size), subdir=True, meminit=False,
                              map_async=True, max_dbs=0)
        self._pending = []
        self.count = 0

    def put(self, key, value):
        if isinstance(key, str):
            key = key.encode()
        self._pending.append((key, value))
        if len(self._pending) >= self.commit_every:
            self.commit()

    def commit(self):
        if not self._pending:
            return
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for k, v in self._pending:
                        txn.put(k, v)
                break
            except self._lmdb.MapFullError:
                new = self._env.info()["map_size"] * 2
                self._env.set_mapsize(new)
        self.count += len(self._pending)
        self._pending = []

    def close(self):
        if self._env is not None:
            self.commit()
            self._env.sync(True)
            self._env.close()
            self._env = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._pending = []
            self._env.close()
            self._env = None


# -- Datum <-> arrays ---------------------------------------------------------------------------
def array_to_datum(arr, label=None):
    """A Datum from a (C, H, W) array: uint8 goes to ``data`` bytes, anything else to float_data."""
    a = np.asarray(arr)
    if a.ndim != 3:
        raise MiniCaffeError(f"a Datum holds a (C, H, W) array, got shape {a.shape}")
    d = caffe_pb2.Datum(channels=a.shape[0], height=a.shape[1], width=a.shape[2])
    if a.dtype == np.uint8:
        d.data = np.ascontiguousarray(a).tobytes()
    else:
        d.float_data.extend(a.astype(np.float32).ravel().tolist())
    if label is not None:
        d.label = int(label)
    return d


def datum_to_array(datum, color=None, what="datum"):
    """The (C, H, W) array of a Datum: uint8 for byte data, float32 for float_data.

    Encoded Datums (PNG/JPEG bytes) are decoded as Caffe does: ``color`` None keeps the image's
    own channels (DecodeDatumToCVMatNative), True forces 3-channel BGR, False forces grey.
    """
    if datum.encoded:
        return decode_image(datum.data, color=color, what=what)
    c, h, w = datum.channels, datum.height, datum.width
    n = c * h * w
    if c <= 0 or h <= 0 or w <= 0:
        raise MiniCaffeError(f"{what} has shape {c}x{h}x{w}; a raw Datum needs positive "
                             "channels, height and width")
    if len(datum.data):
        if len(datum.data) != n:
            raise MiniCaffeError(f"{what} holds {len(datum.data)} data bytes but its shape "
                                 f"{c}x{h}x{w} needs {n}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w)
    if len(datum.float_data) != n:
        raise MiniCaffeError(f"{what} holds {len(datum.float_data)} float_data values but its "
                             f"shape {c}x{h}x{w} needs {n}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(c, h, w)


def parse_datum(value, source="LMDB", key=None):
    """The Datum in a record's ``value``; anything else fails naming ``source`` and ``key``."""
    d = caffe_pb2.Datum()
    try:
        d.ParseFromString(value)
        problem = None if d.ListFields() or not len(value) else "none of its fields is a Datum's"
    except Exception as e:  # DecodeError: not a protobuf message at all
        problem = str(e).split(": ")[-1]
    if problem:
        where = f"record {key_text(key)}" if key is not None else "a record"
        head = bytes(value[:16]).hex(" ")
        raise MiniCaffeError(f"{source}: {where} is not a caffe.Datum ({problem}; "
                             f"{len(value)} bytes starting {head})")
    return d

"""Layers that read data from files: Data (LMDB of Datums), ImageData (list of image files) and
HDF5Data (HDF5 files).

Data and ImageData prepare batches in a background thread, ``prefetch`` batches ahead (Caffe's
BasePrefetchingDataLayer), so reading, decoding and transforming overlap the net's compute.
Their randomness (crops, mirrors, shuffles) comes from a NumPy generator seeded from
``backend.rng()`` when the layer is set up: only the prefetch thread draws from it, in batch
order, so a run is reproducible with ``set_random_seed`` whatever the thread timing.
"""
import logging
import os
import queue
import threading
import weakref

import numpy as np

from .. import backend
from ..data.db import LEVELDB_HINT, LoopingCursor, is_lmdb, iter_items, parse_datum
from ..data.image import read_image
from ..data.imageset import read_image_list
from ..data.data_transformer import DataTransformer
from ..errors import LayerError, MiniCaffeError
from ..layer import Layer, register
from ..proto import caffe_pb2

log = logging.getLogger("minicaffe")

_STOP = object()


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def _prefetch_loop(produce, free, full):
    while True:
        token = free.get()
        if token is _STOP:
            return
        try:
            batch = produce(token)
        except BaseException as e:  # handed to the consumer, which raises it in forward
            full.put(_Failure(e))
            return
        full.put(batch)


class Prefetcher:
    """Runs ``produce(recycled)`` in a daemon thread, keeping up to ``count`` batches ready.

    ``produce`` gets back a batch the consumer has finished with (or None) so it can reuse the
    buffers. It must not reference the layer, so that an unused layer can be collected (the
    layer stops the thread when it goes away).
    """

    def __init__(self, produce, count, name="data"):
        self._free = queue.Queue()
        self._full = queue.Queue()
        self._failure = None
        for _ in range(max(int(count), 1)):
            self._free.put(None)
        self._thread = threading.Thread(target=_prefetch_loop,
                                        args=(produce, self._free, self._full),
                                        name=f"minicaffe-prefetch-{name}", daemon=True)
        self._thread.start()

    def get(self):
        if self._failure is not None:
            raise self._failure
        item = self._full.get()
        if isinstance(item, _Failure):
            self._failure = item.exc
            raise item.exc
        return item

    def recycle(self, batch):
        self._free.put(batch)

    def stop(self):
        self._free.put(_STOP)


def _stop_prefetcher(prefetcher):
    prefetcher.stop()


def _merged_transform_param(layer_param, legacy):
    """transform_param, with the deprecated scale/mean_file/crop_size/mirror fields of the data
    parameter filled in where transform_param does not set them (Caffe's data upgrade)."""
    tp = caffe_pb2.TransformationParameter()
    tp.CopyFrom(layer_param.transform_param)
    if legacy is not None:
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if legacy.HasField(field) and not tp.HasField(field):
                setattr(tp, field, getattr(legacy, field))
    return tp


class _PrefetchingDataLayer(Layer):
    """Shared plumbing: a batch producer run by a Prefetcher (or inline with prefetch 0)."""
    exact_num_bottom = 0
    min_num_top = 1
    max_num_top = 2

    def _dedicated_rng(self):
        seed = int(backend.rng().integers(0, 2 ** 63 - 1))
        return np.random.default_rng(seed)

    def _start(self, producer, prefetch):
        self._producer = producer
        self._prefetcher = None
        if prefetch > 0:
            self._prefetcher = Prefetcher(producer, prefetch, self.name)
            weakref.finalize(self, _stop_prefetcher, self._prefetcher)

    def close(self):
        """Stop the prefetch thread (it also stops when the layer is garbage collected)."""
        if getattr(self, "_prefetcher", None) is not None:
            self._prefetcher.stop()
            self._prefetcher = None

    def reshape(self, bottom, top):
        pass  # the tops take each batch's shape in forward, as in Caffe

    def next_batch(self):
        try:
            if self._prefetcher is None:
                return self._producer(None), False
            return self._prefetcher.get(), True
        except MiniCaffeError as e:
            if str(e).startswith(f"{self.type} layer '{self.name}'"):
                raise
            self.fail(str(e))
        except Exception as e:
            self.fail(f"loading a batch failed: {type(e).__name__}: {e}")

    def forward(self, bottom, top):
        (data, labels), recycle = self.next_batch()
        top[0].reshape(data.shape)
        top[0].xdata[...] = top[0].xp.asarray(data)
        if len(top) > 1:
            top[1].reshape(labels.shape)
            top[1].xdata[...] = top[1].xp.asarray(labels)
        if recycle:
            self._prefetcher.recycle((data, labels))

    def backward(self, top, propagate_down, bottom):
        pass


# -- Data ---------------------------------------------------------------------------------------
class _DatumBatches:
    """Produces (data, labels) batches from an LMDB, opening its cursor in the calling thread."""

    def __init__(self, source, batch_size, transformer, skip, name):
        self.source = source
        self.batch_size = batch_size
        self.transformer = transformer
        self.skip = skip
        self.name = name
        self.cursor = None

    def __call__(self, recycled):
        if self.cursor is None:
            self.cursor = LoopingCursor(self.source, self.skip, self.name)
        datums = [parse_datum(self.cursor.next()) for _ in range(self.batch_size)]
        out = recycled[0] if recycled is not None else None
        if out is not None and out.shape != self._output_shape(datums[0]):
            out = None
        return self.transform(datums, out)

    def _output_shape(self, first):
        if first.encoded:
            return None  # decoded below; the buffer is reused only for raw data
        return (self.batch_size,) + self.transformer.infer_shape(
            (first.channels, first.height, first.width))

    def transform(self, datums, out):
        t = self.transformer
        d0 = datums[0]
        shape0 = (d0.channels, d0.height, d0.width)
        raw_uint8 = all(not d.encoded and len(d.data) and
                        (d.channels, d.height, d.width) == shape0 for d in datums)
        if raw_uint8 and not (t.param.force_color or t.param.force_gray):
            n = int(np.prod(shape0))
            buf = b"".join(d.data for d in datums)
            if len(buf) != n * len(datums):
                bad = next(i for i, d in enumerate(datums) if len(d.data) != n)
                t.fail(f"a datum of {self.source} holds {len(datums[bad].data)} data bytes but "
                       f"its shape {shape0[0]}x{shape0[1]}x{shape0[2]} needs {n}")
            batch = np.frombuffer(buf, dtype=np.uint8).reshape((len(datums),) + shape0)
            labels = np.array([d.label for d in datums], dtype=np.float32)
            return t.transform(batch, out=out), labels
        return t.transform_datums(datums, out=out)


@register("Data")
class DataLayer(_PrefetchingDataLayer):
    """Batches of Datums from an LMDB (Caffe's Data layer), wrapping around at the end."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.data_param
        if not p.source:
            self.fail("data_param.source (the LMDB directory) is not set")
        if p.batch_size <= 0:
            self.fail("data_param.batch_size must be positive")
        if p.backend == caffe_pb2.DataParameter.LEVELDB:
            # LEVELDB is the proto default: accept an unset backend when the source is an LMDB.
            if p.HasField("backend") or not is_lmdb(p.source):
                hint = " (the source is an LMDB: set `backend: LMDB`)" if is_lmdb(p.source) else ""
                self.fail(f"source {p.source}: {LEVELDB_HINT}{hint}")
        if not is_lmdb(p.source):
            what = "no such directory" if not os.path.exists(p.source) else \
                "not an LMDB directory (no data.mdb inside)"
            self.fail(f"cannot open source {p.source}: {what}")
        rng = self._dedicated_rng()
        self.transformer = DataTransformer(
            _merged_transform_param(self.layer_param, p), self.phase, rng=rng,
            name=f"{self.type} layer '{self.name}': ")
        skip = 0
        if p.rand_skip:
            skip = int(backend.rng().integers(0, p.rand_skip))
            log.info("%s: skipping first %d data points", self.name, skip)
        first = next(iter_items(p.source), None)
        if first is None:
            self.fail(f"source {p.source} is an empty LMDB")
        datum = parse_datum(first[1])
        chw = self.transformer.datum_array(datum, what=f"first datum of {p.source}").shape
        shape = (int(p.batch_size),) + self.transformer.infer_shape(chw)
        top[0].reshape(shape)
        if len(top) > 1:
            top[1].reshape((int(p.batch_size),))
        log.info("%s: output data size: %s", self.name, ",".join(str(s) for s in shape))
        self._start(_DatumBatches(p.source, int(p.batch_size), self.transformer, skip, self.name),
                    int(p.prefetch))


# -- ImageData ----------------------------------------------------------------------------------
def _image_path(root_folder, name):
    path = root_folder + name  # Caffe concatenates; also accept a root without its slash
    if root_folder and not os.path.exists(path) and os.path.exists(os.path.join(root_folder, name)):
        path = os.path.join(root_folder, name)
    return path


class _ImageBatches:
    def __init__(self, lines, pos, root, batch_size, new_h, new_w, is_color, shuffle, rng,
                 transformer, name):
        self.lines = lines
        self.pos = pos
        self.root = root
        self.batch_size = batch_size
        self.size = (new_h, new_w)
        self.is_color = is_color
        self.shuffle = shuffle
        self.rng = rng
        self.transformer = transformer
        self.name = name

    def __call__(self, recycled):
        images, labels = [], []
        for _ in range(self.batch_size):
            name, label = self.lines[self.pos]
            images.append(read_image(_image_path(self.root, name), self.size[0], self.size[1],
                                     self.is_color))
            labels.append(label)
            self.pos += 1
            if self.pos >= len(self.lines):
                log.info("%s: restarting data prefetching from start", self.name)
                self.pos = 0
                if self.shuffle:
                    self.rng.shuffle(self.lines)
        out = recycled[0] if recycled is not None else None
        shapes = {a.shape for a in images}
        batch = np.stack(images) if len(shapes) == 1 else images
        if out is not None:
            want = (self.batch_size,) + self.transformer.infer_shape(images[0].shape)
            if out.shape != want:
                out = None
        return self.transformer.transform(batch, out=out), np.asarray(labels, np.float32)


@register("ImageData")
class ImageDataLayer(_PrefetchingDataLayer):
    """Images listed in a text file ("path label" lines), decoded BGR as Caffe does."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.image_data_param
        if not p.source:
            self.fail("image_data_param.source (the list file) is not set")
        if (p.new_height == 0) != (p.new_width == 0):
            self.fail("new_height and new_width must be set together (or both left 0), got "
                      f"new_height {p.new_height}, new_width {p.new_width}")
        if p.batch_size <= 0:
            self.fail("image_data_param.batch_size must be positive")
        try:
            lines = read_image_list(p.source)
        except MiniCaffeError as e:
            self.fail(str(e))
        if not lines:
            self.fail(f"image list {p.source} lists no images")
        rng = self._dedicated_rng()
        self.transformer = DataTransformer(
            _merged_transform_param(self.layer_param, p), self.phase, rng=rng,
            name=f"{self.type} layer '{self.name}': ")
        if p.shuffle:
            rng.shuffle(lines)
        pos = 0
        if p.rand_skip:
            pos = int(backend.rng().integers(0, p.rand_skip))
            if pos >= len(lines):
                self.fail(f"not enough images ({len(lines)}) to skip {pos}")
        root = p.root_folder
        try:
            img = read_image(_image_path(root, lines[pos][0]), p.new_height, p.new_width,
                             p.is_color)
        except MiniCaffeError as e:
            self.fail(str(e))
        shape = (int(p.batch_size),) + self.transformer.infer_shape(img.shape)
        top[0].reshape(shape)
        if len(top) > 1:
            top[1].reshape((int(p.batch_size),))
        self._start(_ImageBatches(lines, pos, root, int(p.batch_size), int(p.new_height),
                                  int(p.new_width), bool(p.is_color), bool(p.shuffle), rng,
                                  self.transformer, self.name),
                    int(self.layer_param.data_param.prefetch))


# -- HDF5Data -----------------------------------------------------------------------------------
@register("HDF5Data")
class HDF5DataLayer(Layer):
    """Rows of the datasets named by the tops, from the HDF5 files listed in ``source``."""
    exact_num_bottom = 0
    min_num_top = 1

    def layer_setup(self, bottom, top):
        if self.layer_param.HasField("transform_param"):
            self.fail("HDF5Data does not transform data; remove transform_param")
        p = self.layer_param.hdf5_data_param
        if not p.source:
            self.fail("hdf5_data_param.source (a text file listing .h5 files) is not set")
        if p.batch_size <= 0:
            self.fail("hdf5_data_param.batch_size must be positive")
        try:
            import h5py  # noqa: F401  (optional dependency, only this layer needs it)
        except ImportError:
            self.fail("HDF5Data needs the h5py package: pip install h5py")
        if not os.path.isfile(p.source):
            self.fail(f"cannot open source {p.source}: no such file")
        with open(p.source) as f:
            self.filenames = f.read().split()
        if not self.filenames:
            self.fail(f"must have at least one HDF5 filename listed in {p.source}")
        self.top_names = list(self.layer_param.top)
        self.dtypes = [t.dtype for t in top]
        self.shuffle = bool(p.shuffle)
        self.file_perm = np.arange(len(self.filenames))
        if self.shuffle:
            backend.rng().shuffle(self.file_perm)
        self.current_file = 0
        self._load(self.filenames[self.file_perm[0]])
        self.current_row = 0
        bs = int(p.batch_size)
        self.batch_size = bs
        for t, d in zip(top, self.arrays):
            t.reshape((bs,) + d.shape[1:])

    def _load(self, filename):
        import h5py
        if not os.path.isfile(filename):
            self.fail(f"failed opening HDF5 file {filename}: no such file")
        arrays = []
        try:
            with h5py.File(filename, "r") as f:
                for name, dt in zip(self.top_names, self.dtypes):
                    if name not in f:
                        self.fail(f"HDF5 file {filename} has no dataset '{name}' (datasets: "
                                  f"{', '.join(sorted(f.keys())) or 'none'}); the tops name "
                                  "the datasets to read")
                    ds = f[name]
                    if not isinstance(ds, h5py.Dataset) or ds.ndim < 1 or \
                            ds.dtype.kind not in "fiub":
                        self.fail(f"'{name}' in {filename} must be a numeric dataset with at "
                                  "least one axis")
                    arrays.append(np.asarray(ds[...], dtype=dt))
        except LayerError:
            raise
        except OSError as e:
            self.fail(f"failed opening HDF5 file {filename}: {e}")
        num = arrays[0].shape[0]
        for name, a, prev in zip(self.top_names, arrays, getattr(self, "arrays", arrays)):
            if a.shape[1:] != prev.shape[1:]:
                self.fail(f"dataset '{name}' of {filename} has rows of shape {a.shape[1:]}, "
                          f"but the first file's rows have shape {prev.shape[1:]}")
            if a.shape[0] != num:
                self.fail(f"datasets of {filename} differ in their number of rows: "
                          f"'{self.top_names[0]}' has {num}, '{name}' has {a.shape[0]}")
        if num == 0:
            self.fail(f"HDF5 file {filename} holds no rows")
        self.arrays = arrays
        self.data_perm = np.arange(num)
        if self.shuffle:
            backend.rng().shuffle(self.data_perm)

    def _end_of_file(self):
        """After the last row of the current file (Caffe's HDF5DataLayer::Next)."""
        if len(self.filenames) > 1:
            self.current_file += 1
            if self.current_file == len(self.filenames):
                self.current_file = 0
                if self.shuffle:
                    backend.rng().shuffle(self.file_perm)
            self._load(self.filenames[self.file_perm[self.current_file]])
        self.current_row = 0
        if self.shuffle:
            backend.rng().shuffle(self.data_perm)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        bs = self.batch_size
        outs = [np.empty((bs,) + a.shape[1:], dtype=a.dtype) for a in self.arrays]
        filled = 0
        while filled < bs:
            num = self.arrays[0].shape[0]
            take = min(bs - filled, num - self.current_row)
            idx = self.data_perm[self.current_row:self.current_row + take]
            for o, a in zip(outs, self.arrays):
                o[filled:filled + take] = a[idx]
            filled += take
            self.current_row += take
            if self.current_row == num:
                self._end_of_file()
        for t, o in zip(top, outs):
            t.reshape(o.shape)
            t.xdata[...] = t.xp.asarray(o)

    def backward(self, top, propagate_down, bottom):
        pass

"""Layers that read data from files through a prefetch thread: Data (LMDB of Datums) and
ImageData (list of image files).

Both prepare batches ``prefetch`` ahead (``prefetch.PrefetchingDataLayer``). Their randomness
(crops, mirrors, shuffles) comes from a NumPy generator seeded from ``backend.rng()`` when the
layer is set up: only the prefetch thread draws from it, in batch order, so a run is
reproducible with ``set_random_seed`` whatever the thread timing.
"""
import logging
import os

import numpy as np

from .. import backend
from ..data.db import (LEVELDB_HINT, LoopingCursor, check_lmdb, is_lmdb, iter_items, key_text,
                       parse_datum)
from ..data.image import read_image
from ..data.imageset import read_image_list
from ..data.data_transformer import DataTransformer
from ..errors import MiniCaffeError
from ..layer import register, shape_text
from ..parallel.sharding import record_stride
from ..proto import caffe_pb2
from .prefetch import PrefetchingDataLayer

log = logging.getLogger("minicaffe")


def merged_transform_param(layer_param, legacy):
    """transform_param, with the deprecated scale/mean_file/crop_size/mirror fields of the data
    parameter filled in where transform_param does not set them (Caffe's data upgrade)."""
    tp = caffe_pb2.TransformationParameter()
    tp.CopyFrom(layer_param.transform_param)
    if legacy is not None:
        for field in ("scale", "mean_file", "crop_size", "mirror"):
            if legacy.HasField(field) and not tp.HasField(field):
                setattr(tp, field, getattr(legacy, field))
    return tp



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
        self.stride = record_stride()   # this rank's shard in a data-parallel run

    def __call__(self, recycled):
        if self.cursor is None:
            self.cursor = LoopingCursor(self.source, self.skip, self.name)
        items = [self.stride.next(self.cursor.next_item) for _ in range(self.batch_size)]
        datums = [parse_datum(v, f"LMDB {self.source}", k) for k, v in items]
        out = recycled[0] if recycled is not None else None
        if out is not None and out.shape != self._output_shape(datums[0]):
            out = None
        return self.transform(items, datums, out)

    def _output_shape(self, first):
        if first.encoded:
            return None  # decoded below; the buffer is reused only for raw data
        return (self.batch_size,) + self.transformer.infer_shape(
            (first.channels, first.height, first.width))

    def transform(self, items, datums, out):
        t = self.transformer
        # Unpacked here rather than by the transformer, so that errors can name the keys.
        arrays = [t.datum_array(d, what=f"record {key_text(k)} of LMDB {self.source}")
                  for (k, _), d in zip(items, datums)]
        want = t.infer_shape(arrays[0].shape)
        for (key, _), a in zip(items, arrays):
            if t.infer_shape(a.shape) != want:
                t.fail(f"records of LMDB {self.source} differ in size within a batch: "
                       f"{key_text(items[0][0])} is {shape_text(arrays[0].shape)}, "
                       f"{key_text(key)} is {shape_text(a.shape)} (channels x height x width); "
                       "set crop_size (no larger than the smallest) or write records of one size")
        batch = np.stack(arrays) if len({a.shape for a in arrays}) == 1 else arrays
        labels = np.array([d.label for d in datums], dtype=np.float32)
        return t.transform(batch, out=out), labels


@register("Data")
class DataLayer(PrefetchingDataLayer):
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
        try:
            check_lmdb(p.source)
        except MiniCaffeError as e:
            self.fail(f"cannot open source: {e}")
        rng = self._dedicated_rng()
        self.transformer = DataTransformer(
            merged_transform_param(self.layer_param, p), self.phase, rng=rng,
            name=f"{self.type} layer '{self.name}': ")
        skip = 0
        if p.rand_skip:
            skip = int(backend.rng().integers(0, p.rand_skip))
            log.info("%s: skipping first %d data points", self.name, skip)
        first = next(iter_items(p.source), None)
        if first is None:
            self.fail(f"source {p.source} is an empty LMDB")
        try:
            datum = parse_datum(first[1], f"LMDB {p.source}", first[0])
        except MiniCaffeError as e:
            self.fail(str(e))
        chw = self.transformer.datum_array(
            datum, what=f"first record {key_text(first[0])} of {p.source}").shape
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


def read_listed_image(source, lineno, path, height, width, is_color):
    """read_image, whose failure also names the list file and line that listed the image."""
    try:
        return read_image(path, height, width, is_color)
    except MiniCaffeError as e:
        raise MiniCaffeError(f"{source}:{lineno}: {e}") from None


class _ImageBatches:
    def __init__(self, source, lines, pos, root, batch_size, new_h, new_w, is_color, shuffle,
                 rng, transformer, name):
        self.source = source
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
        self.stride = record_stride()   # this rank's shard in a data-parallel run

    def _next_line(self):
        line = self.lines[self.pos]
        self.pos += 1
        if self.pos >= len(self.lines):
            log.info("%s: restarting data prefetching from start", self.name)
            self.pos = 0
            if self.shuffle:
                self.rng.shuffle(self.lines)
        return line

    def __call__(self, recycled):
        images, labels = [], []
        for _ in range(self.batch_size):
            name, label, lineno = self.stride.next(self._next_line)
            images.append(read_listed_image(self.source, lineno, _image_path(self.root, name),
                                            self.size[0], self.size[1], self.is_color))
            labels.append(label)
        out = recycled[0] if recycled is not None else None
        shapes = {a.shape for a in images}
        batch = np.stack(images) if len(shapes) == 1 else images
        if out is not None:
            want = (self.batch_size,) + self.transformer.infer_shape(images[0].shape)
            if out.shape != want:
                out = None
        return self.transformer.transform(batch, out=out), np.asarray(labels, np.float32)


@register("ImageData")
class ImageDataLayer(PrefetchingDataLayer):
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
            lines = read_image_list(p.source, with_lines=True)
        except MiniCaffeError as e:
            self.fail(str(e))
        if not lines:
            self.fail(f"image list {p.source} lists no images")
        rng = self._dedicated_rng()
        self.transformer = DataTransformer(
            merged_transform_param(self.layer_param, p), self.phase, rng=rng,
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
            img = read_listed_image(p.source, lines[pos][2], _image_path(root, lines[pos][0]),
                                    p.new_height, p.new_width, p.is_color)
        except MiniCaffeError as e:
            self.fail(str(e))
        shape = (int(p.batch_size),) + self.transformer.infer_shape(img.shape)
        top[0].reshape(shape)
        if len(top) > 1:
            top[1].reshape((int(p.batch_size),))
        self._start(_ImageBatches(p.source, lines, pos, root, int(p.batch_size),
                                  int(p.new_height), int(p.new_width), bool(p.is_color),
                                  bool(p.shuffle), rng, self.transformer, self.name),
                    int(self.layer_param.data_param.prefetch))


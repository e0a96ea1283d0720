"""HDF5 files in and out: HDF5Data reads rows of the datasets named by its tops, HDF5Output
writes its two bottoms. Both need h5py.

HDF5Output (hdf5_output_param.file_name): the file is created (truncated) at setup; every
forward writes the data and label bottoms, as 4-D (num, channels, height, width) arrays, to
the datasets "data" and "label". Caffe can write only once (a second write of the same
dataset name fails there); here a later forward replaces both datasets. No tops, no backward.
"""
import logging
import os

import numpy as np

from .. import backend
from ..errors import LayerError, ShapeError
from ..layer import Layer, register, shape_text
from ..parallel.sharding import record_stride
from .sources import DataSourceLayer

log = logging.getLogger("minicaffe")


@register("HDF5Data")
class HDF5DataLayer(DataSourceLayer):
    """Rows of the datasets named by the tops, from the HDF5 files listed in ``source``."""
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
            what = "is a directory" if os.path.isdir(p.source) else "no such file"
            self.fail(f"cannot open source {p.source}: {what} (expected a text file listing "
                      ".h5 files)")
        self.source = p.source
        with open(p.source, encoding="utf-8", errors="surrogateescape") as f:
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
            what = "is a directory" if os.path.isdir(filename) else "no such file"
            self.fail(f"failed opening HDF5 file {filename} (listed in {self.source}): {what}")
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
            self.fail(f"failed opening HDF5 file {filename} (listed in {self.source}): {e}")
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

    def forward(self, bottom, top):
        # In a data-parallel run each rank reads K batches' rows and keeps every K-th.
        stride = record_stride()
        bs = self.batch_size * stride.count
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
        outs = [o[stride.rank::stride.count] for o in outs]
        for t, o in zip(top, outs):
            t.reshape(o.shape)
            t.xdata[...] = t.xp.asarray(o)


@register("HDF5Output")
class HDF5OutputLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 0

    def layer_setup(self, bottom, top):
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            self.fail("hdf5_output_param.file_name is required")
        try:
            import h5py
        except ImportError:
            self.fail("HDF5Output needs the h5py package: pip install h5py")
        try:
            with h5py.File(self.file_name, "w"):
                pass
        except OSError as e:
            self.fail(f"cannot create HDF5 file '{self.file_name}': {e}")

    def reshape(self, bottom, top):
        d = self.legacy_dims(bottom[0], "the data bottom")
        lab = self.legacy_dims(bottom[1], "the label bottom")
        if d[0] != lab[0]:
            self.fail(f"data and label bottoms must have the same batch size (num): data "
                      f"{shape_text(bottom[0].shape)}, label {shape_text(bottom[1].shape)}",
                      ShapeError)
        self._shapes = (d, lab)

    def forward(self, bottom, top):
        import h5py
        arrays = [np.ascontiguousarray(b.cpu_data()).reshape(s)
                  for b, s in zip(bottom, self._shapes)]
        log.info("Saving HDF5 file %s", self.file_name)
        try:
            with h5py.File(self.file_name, "a") as f:
                for name, a in zip(("data", "label"), arrays):
                    if name in f:
                        del f[name]
                    f.create_dataset(name, data=a)
        except OSError as e:
            self.fail(f"cannot write HDF5 file '{self.file_name}': {e}")
        log.info("Successfully saved %d rows", arrays[0].shape[0])

    def backward(self, top, propagate_down, bottom):
        pass


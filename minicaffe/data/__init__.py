"""Data pipeline: LMDB databases of Datums, Caffe's DataTransformer, image I/O, and the tools
that make datasets (CIFAR-10 download/conversion, convert_imageset, compute_image_mean).

The layers that read these live in ``minicaffe.layers.data`` (Data, ImageData) and
``minicaffe.layers.hdf5`` (HDF5Data).
"""
from .db import (LMDBWriter, array_to_datum, datum_to_array, iter_datums,  # noqa: F401
                 iter_items, num_entries)
from .image import decode_image, encode_image, read_image, resize_bilinear  # noqa: F401
from .mean import compute_image_mean, mean_to_blobproto  # noqa: F401
from .data_transformer import DataTransformer  # noqa: F401

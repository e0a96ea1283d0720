"""File formats (prototxt, caffemodel, solverstate, binaryproto) and pycaffe's caffe.io helpers."""
from .prototxt import parse_text, read_prototxt, write_prototxt  # noqa: F401
from .protobinary import read_binary, read_blobproto, read_mean, write_binary  # noqa: F401
from .transformer import (Transformer, array_to_blobproto, array_to_datum,  # noqa: F401
                          blobproto_to_array, datum_to_array, load_image, oversample,
                          resize_image)

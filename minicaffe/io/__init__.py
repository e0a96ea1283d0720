"""File formats (prototxt, caffemodel, solverstate, binaryproto) and pycaffe's caffe.io helpers."""
from .prototxt import parse_text, read_prototxt, write_prototxt  # noqa: F401
from .protobinary import (array_to_blobproto, blobproto_to_array, read_binary,  # noqa: F401
                          read_blobproto, read_mean, write_binary)

"""File formats (prototxt, caffemodel, solverstate, binaryproto) and pycaffe's caffe.io helpers."""
from .prototxt import parse_text, read_prototxt, write_prototxt  # noqa: F401
from .protobinary import read_binary, read_blobproto, read_mean, write_binary  # noqa: F401
from .proto_arrays import (array_to_blobproto, array_to_datum, blobproto_to_array,  # noqa: F401
                           datum_to_array)
from .images import load_image, oversample, resize_image  # noqa: F401
from .preprocessing import Transformer  # noqa: F401

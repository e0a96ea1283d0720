"""Exceptions for user mistakes: each names the file, line, layer or shapes involved."""


class MiniCaffeError(Exception):
    """Base class of every error caused by user input (prototxt, weights, shapes, flags)."""


class PrototxtError(MiniCaffeError):
    """A text proto file could not be parsed; the message names file, line and column."""


class LayerError(MiniCaffeError):
    """A layer was configured or wired wrongly; the message names the layer."""


class ShapeError(LayerError):
    """Blob shapes do not fit; the message names the layer and both shapes."""


class BlobSizeError(MiniCaffeError):
    """A blob shape is larger than Caffe allows (count > INT_MAX) or than memory can hold."""

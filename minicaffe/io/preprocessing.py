"""pycaffe's ``caffe.io.Transformer``: deploy-time preprocessing of images for a net's inputs.

Not the prototxt's ``transform_param``: that is minicaffe.data.data_transformer.

Images are float32 H x W x K arrays in [0, 1] (``load_image``), as in pycaffe; a Transformer
turns them into the K x H x W (usually BGR, mean-subtracted) arrays a net takes:

    t = Transformer({"data": net.blobs["data"].data.shape})
    t.set_transpose("data", (2, 0, 1))       # H x W x K -> K x H x W
    t.set_channel_swap("data", (2, 1, 0))    # RGB -> BGR
    t.set_raw_scale("data", 255)             # [0, 1] -> [0, 255]
    t.set_mean("data", mean_bgr)             # K values or a K x H x W image
    net.blobs["data"].data[0] = t.preprocess("data", load_image("cat.jpg"))

preprocess order: convert to float32, resize to the input's H x W, transpose, channel swap,
``* raw_scale``, ``- mean``, ``* input_scale``; deprocess undoes them in reverse.
"""
import numpy as np

from .images import resize_image


class Transformer:
    """Per-input preprocessing; ``inputs`` maps input names to their N x K x H x W shapes."""

    def __init__(self, inputs):
        self.inputs = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise KeyError(f"'{in_}' is not one of the net inputs: {list(self.inputs)}")

    def _steps(self, in_):
        """The settings of input ``in_``, in preprocess order (None where unset)."""
        self._check_input(in_)
        return (self.transpose.get(in_), self.channel_swap.get(in_), self.raw_scale.get(in_),
                self.mean.get(in_), self.input_scale.get(in_))

    def preprocess(self, in_, data):
        """H' x W' x K image → K x H x W float32 array for input ``in_`` (a new array)."""
        transpose, channel_swap, raw_scale, mean, input_scale = self._steps(in_)
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if tuple(caffe_in.shape[:2]) != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in = caffe_in * raw_scale
        if mean is not None:
            caffe_in = caffe_in - mean
        if input_scale is not None:
            caffe_in = caffe_in * input_scale
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_, data):
        """Undo preprocess (except resizing): K x H x W → H x W x K in the original scale."""
        transpose, channel_swap, raw_scale, mean, input_scale = self._steps(in_)
        decaf_in = np.array(data, dtype=np.float32).squeeze()
        if input_scale is not None:
            decaf_in = decaf_in / input_scale
        if mean is not None:
            decaf_in = decaf_in + mean
        if raw_scale is not None:
            decaf_in = decaf_in / raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[list(np.argsort(channel_swap)), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Axis order taking the image to K x H x W, e.g. (2, 0, 1) for H x W x K."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError(f"transpose order {tuple(order)} needs "
                             f"{len(self.inputs[in_]) - 1} axes, as the input '{in_}'")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order after transpose, e.g. (2, 1, 0) for RGB → BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError(f"channel swap {tuple(order)} needs {self.inputs[in_][1]} "
                             f"entries, one per channel of input '{in_}'")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiply the raw image by ``scale`` before mean subtraction (255 for [0, 255] nets)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: K values (per channel) or a K x H x W (or H x W) array."""
        self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 1:
            if mean.shape[0] != self.inputs[in_][1]:
                raise ValueError(f"mean has {mean.shape[0]} channels, input '{in_}' has "
                                 f"{self.inputs[in_][1]}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            ms = mean.shape
            if len(ms) == 2:
                ms = (1,) + ms
                mean = mean.reshape(ms)
            if len(ms) != 3:
                raise ValueError(f"mean shape {mean.shape} invalid: give K values or a "
                                 "K x H x W array")
            if tuple(ms) != tuple(self.inputs[in_][1:]):
                raise ValueError(f"mean shape {tuple(ms)} incompatible with input shape "
                                 f"{self.inputs[in_][1:]}")
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed input by ``scale`` (after mean subtraction)."""
        self._check_input(in_)
        self.input_scale[in_] = scale

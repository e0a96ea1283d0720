"""The oneDNN engine behind a Convolution or Deconvolution layer (NumPy float32 blobs).

One engine ``Convolution`` per input shape, made again when the layer is reshaped to another
shape. The engine overwrites its outputs; Caffe accumulates parameter gradients into the
blobs' diffs (shared weights, ``iter_size``), so weight and bias gradients go through scratch
arrays and are added. Deconvolution is the same convolution with its image on the top side:
its forward is the convolution's backward_data, its image gradient the convolution's forward.

A large batch runs in chunks of images (``CHUNK_BYTES`` of image and response per chunk):
oneDNN's blocked copies of a chunk then fit the shared workspace instead of the whole batch
(a TEST net at batch 1000 held ~130 MB of them for conv1 alone), at no cost in speed; the
training batches of the examples are one chunk.
"""
import logging

import numpy as np

from .convolution import Convolution
from .library import OneDNNError

log = logging.getLogger("minicaffe")

CHUNK_BYTES = 32 << 20


def chunk_sizes(num, image_bytes):
    """Images per chunk for a batch of ``num``: as equal as possible, each at most
    CHUNK_BYTES of image and response (at least one image)."""
    if num <= 0:
        return [num]   # an empty batch: one (empty) engine call, as without chunks
    most = max(1, CHUNK_BYTES // max(1, image_bytes))
    count = -(-num // most)
    size = -(-num // count)
    return [size] * (num // size) + ([num % size] if num % size else [])


class ConvLayerEngine:
    """Forward and backward of ``layer`` (a ``_ConvolutionBase``) on oneDNN."""

    def __init__(self, layer):
        self.layer = layer
        self.conv = None      # the engine convolution of the first chunk
        self._convs = {}      # images per chunk -> engine convolution
        self._chunks = []     # [(first image, images)] covering the batch
        self._key = None
        self._dw = self._db = None

    def reshape(self):
        """Make the engine convolutions for the layer's current shape (kept while unchanged);
        False when oneDNN refuses the configuration (the layer then runs its own code)."""
        ly = self.layer
        key = (ly.num, ly.conv_in, tuple(ly.img_hw), ly.conv_out, ly.kernel, ly.stride,
               ly.pad, ly.dilation, ly.group)
        if key == self._key:
            return True
        self.close()
        per_image = 4 * (ly.conv_in * ly.img_hw[0] * ly.img_hw[1] +
                         ly.conv_out * ly.res_hw[0] * ly.res_hw[1])
        sizes = chunk_sizes(ly.num, per_image)
        try:
            for n in sizes:
                if n not in self._convs:
                    # Deconvolution's bias is added on its own: the engine's sits on the response.
                    self._convs[n] = Convolution(
                        (n, ly.conv_in) + tuple(ly.img_hw), ly.conv_out, ly.kernel, ly.stride,
                        ly.pad, ly.dilation, ly.group, bias=ly.bias_term and not ly.reverse)
        except (OneDNNError, ValueError) as e:
            log.info("%s layer '%s': oneDNN declines input %s (%s); the reference path "
                     "serves it", ly.type, ly.name, (ly.num, ly.conv_in) + tuple(ly.img_hw), e)
            self.close()
            return False
        starts = np.cumsum([0] + sizes[:-1])
        self._chunks = [(int(lo), n) for lo, n in zip(starts, sizes)]
        self.conv = self._convs[sizes[0]]
        self._key = key
        self._dw = np.empty(self.conv.weight_shape, np.float32)
        self._db = np.empty((ly.num_output,), np.float32)
        return True

    def close(self):
        for conv in self._convs.values():
            conv.close()
        self.conv, self._convs, self._chunks, self._key = None, {}, [], None

    # -- arrays in the engine's NCHW shapes, chunk by chunk -----------------------------------
    def _parts(self, *arrays):
        """(engine convolution, the chunk's slice of each array) per chunk; an array is a
        blob's flat or shaped data, its first axis the batch."""
        num = self.layer.num
        rows = [a.reshape(num, a.size // num if num else 0) for a in arrays]
        for lo, n in self._chunks:
            yield (self._convs[n],) + tuple(r[lo:lo + n] for r in rows)

    @staticmethod
    def _image(conv, arr):
        return arr.reshape(conv.input_shape)

    @staticmethod
    def _response(conv, arr):
        return arr.reshape(conv.output_shape)

    def _weights(self):
        return self.layer.blobs[0].xdata.reshape(self.conv.weight_shape)

    # -- the layer's verbs --------------------------------------------------------------------
    def forward(self, bottom, top):
        ly, w = self.layer, self._weights()
        bias = ly.blobs[1].xdata if ly.bias_term else None
        for b, t in zip(bottom, top):
            for conv, x, y in self._parts(b.xdata, t.xdata):
                if not ly.reverse:
                    conv.forward(self._image(conv, x), w, bias, out=self._response(conv, y))
                    continue
                out = conv.backward_data(self._response(conv, x), w, out=self._image(conv, y))
                if bias is not None:
                    out += bias.reshape(1, -1, 1, 1)

    def backward(self, top, propagate_down, bottom):
        ly, w = self.layer, self._weights()
        want_w = bool(ly.param_propagate_down[0])
        want_b = ly.bias_term and bool(ly.param_propagate_down[1])
        for i in reversed(range(len(top))):
            if want_b and (not want_w or ly.reverse):
                ly.blobs[1].xdiff[...] += top[i].xdiff.reshape(
                    ly.num, ly.num_output, -1).sum(axis=(0, 2), dtype=np.float32)
            # The bottom's diff only where it is wanted: asking a blob for it allocates it.
            arrays = (top[i].xdiff, bottom[i].xdata) + ((bottom[i].xdiff,) if propagate_down[i]
                                                        else ())
            for conv, dy, x, *dx in self._parts(*arrays):
                if ly.reverse:
                    image, response = self._image(conv, dy), self._response(conv, x)
                else:
                    image, response = self._image(conv, x), self._response(conv, dy)
                if want_w:
                    dw, db = conv.backward_weights(image, response, self._dw,
                                                   self._db if conv.bias_shape else None)
                    ly.blobs[0].xdiff.reshape(dw.shape)[...] += dw
                    if want_b and db is not None:
                        ly.blobs[1].xdiff[...] += db
                if propagate_down[i]:
                    if ly.reverse:
                        conv.forward(image, w, None, out=self._response(conv, dx[0]))
                    else:
                        conv.backward_data(response, w, out=self._image(conv, dx[0]))

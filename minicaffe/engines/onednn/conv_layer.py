"""The oneDNN engine behind a Convolution or Deconvolution layer (NumPy float32 blobs).

One engine ``Convolution`` per input shape, made again when the layer is reshaped to another
shape. The engine overwrites its outputs; Caffe accumulates parameter gradients into the
blobs' diffs (shared weights, ``iter_size``), so weight and bias gradients go through scratch
arrays and are added. Deconvolution is the same convolution with its image on the top side:
its forward is the convolution's backward_data, its image gradient the convolution's forward.
"""
import logging

import numpy as np

from .convolution import Convolution
from .library import OneDNNError

log = logging.getLogger("minicaffe")


class ConvLayerEngine:
    """Forward and backward of ``layer`` (a ``_ConvolutionBase``) on oneDNN."""

    def __init__(self, layer):
        self.layer = layer
        self.conv = None
        self._key = None
        self._dw = self._db = None

    def reshape(self):
        """Make the engine convolution for the layer's current shape (kept while unchanged);
        False when oneDNN refuses the configuration (the layer then runs its own code)."""
        ly = self.layer
        img_shape = (ly.num, ly.conv_in) + tuple(ly.img_hw)
        key = (img_shape, ly.conv_out, ly.kernel, ly.stride, ly.pad, ly.dilation, ly.group)
        if key == self._key:
            return True
        self.close()
        try:
            # Deconvolution's bias is added on its own: the engine's sits on the response.
            self.conv = Convolution(img_shape, ly.conv_out, ly.kernel, ly.stride, ly.pad,
                                    ly.dilation, ly.group, bias=ly.bias_term and not ly.reverse)
        except (OneDNNError, ValueError) as e:
            log.info("%s layer '%s': oneDNN declines input %s (%s); the reference path "
                     "serves it", ly.type, ly.name, img_shape, e)
            return False
        self._key = key
        self._dw = np.empty(self.conv.weight_shape, np.float32)
        self._db = np.empty((ly.num_output,), np.float32)
        return True

    def close(self):
        if self.conv is not None:
            self.conv.close()
        self.conv, self._key = None, None

    # -- arrays in the engine's NCHW shapes ---------------------------------------------------
    def _image(self, arr):
        return arr.reshape(self.conv.input_shape)

    def _response(self, arr):
        return arr.reshape(self.conv.output_shape)

    def _weights(self):
        return self.layer.blobs[0].xdata.reshape(self.conv.weight_shape)

    # -- the layer's verbs --------------------------------------------------------------------
    def forward(self, bottom, top):
        ly, conv, w = self.layer, self.conv, self._weights()
        bias = ly.blobs[1].xdata if ly.bias_term else None
        for b, t in zip(bottom, top):
            if not ly.reverse:
                conv.forward(self._image(b.xdata), w, bias, out=self._response(t.xdata))
                continue
            y = conv.backward_data(self._response(b.xdata), w, out=self._image(t.xdata))
            if bias is not None:
                y += bias.reshape(1, -1, 1, 1)

    def backward(self, top, propagate_down, bottom):
        ly, conv, w = self.layer, self.conv, self._weights()
        want_w = bool(ly.param_propagate_down[0])
        want_b = ly.bias_term and bool(ly.param_propagate_down[1])
        for i in reversed(range(len(top))):
            dy, x = top[i].xdiff, bottom[i].xdata
            if ly.reverse:
                image, response = self._image(dy), self._response(x)
            else:
                image, response = self._image(x), self._response(dy)
            if want_w:
                dw, db = conv.backward_weights(image, response, self._dw,
                                               self._db if conv.bias_shape else None)
                ly.blobs[0].xdiff.reshape(dw.shape)[...] += dw
                if want_b and db is not None:
                    ly.blobs[1].xdiff[...] += db
            if want_b and (not want_w or ly.reverse):
                ly.blobs[1].xdiff[...] += top[i].xdiff.reshape(
                    ly.num, ly.num_output, -1).sum(axis=(0, 2), dtype=np.float32)
            if propagate_down[i]:
                if ly.reverse:
                    conv.forward(image, w, None, out=self._response(bottom[i].xdiff))
                else:
                    conv.backward_data(response, w, out=self._image(bottom[i].xdiff))

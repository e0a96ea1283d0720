"""pycaffe's ``caffe.Classifier``: a TEST-phase Net that takes images and returns predictions.

    net = minicaffe.Classifier("deploy.prototxt", "weights.caffemodel",
                               image_dims=(256, 256), mean=np.array([104, 117, 123]),
                               raw_scale=255, channel_swap=(2, 1, 0))
    probs = net.predict([minicaffe.io.load_image("cat.jpg")])   # N x classes

Each image (H x W x K in [0, 1], as ``load_image`` gives) is resized to ``image_dims``;
with ``oversample=True`` (default) ten crops of the net's input size are taken (four corners,
centre, and their mirrors) and their predictions averaged, otherwise the centre crop is used.
"""
import numpy as np

from . import backend
from . import io as _io
from .net import TEST, Net


class Classifier(Net):
    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, pretrained_file, TEST)
        if not self.inputs:
            raise ValueError(f"{model_file}: a Classifier needs a net with an input blob "
                             "(an Input layer or input/input_shape fields)")
        in_ = self.inputs[0]
        shape = tuple(self.blobs[in_].shape)
        if len(shape) != 4:
            raise ValueError(f"input '{in_}' has shape {shape}; a Classifier needs "
                             "N x K x H x W")
        self.transformer = _io.Transformer({in_: shape})
        self.transformer.set_transpose(in_, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(in_, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(in_, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(in_, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(in_, channel_swap)
        self.crop_dims = np.array(shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)
        self._batch = max(1, shape[0])

    def predict(self, inputs, oversample=True):
        """Predictions (the net's first output) for a list of H x W x K images: N x ..."""
        if len(inputs) == 0:
            raise ValueError("predict needs at least one image")
        h, w = (int(d) for d in self.image_dims)
        k = inputs[0].shape[2]
        images = np.zeros((len(inputs), h, w, k), dtype=np.float32)
        for ix, im in enumerate(inputs):
            images[ix] = _io.resize_image(im, (h, w))
        if oversample:
            crops = _io.oversample(images, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            box = np.concatenate([center - self.crop_dims / 2.0,
                                  center + self.crop_dims / 2.0]).astype(int)
            crops = images[:, box[0]:box[2], box[1]:box[3], :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, c) for c in crops])
        predictions = self._forward_all(caffe_in)
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions

    def _forward_all(self, caffe_in):
        """Run the net over ``caffe_in`` in batches of the deploy batch size."""
        in_, out = self.inputs[0], self.outputs[0]
        blob = self.blobs[in_]
        old_shape = tuple(blob.shape)
        results = []
        try:
            for start in range(0, len(caffe_in), self._batch):
                chunk = caffe_in[start:start + self._batch]
                if tuple(blob.shape) != chunk.shape:
                    blob.reshape(chunk.shape)
                    self.reshape()
                blob.data[...] = chunk
                self.forward_from_to()
                results.append(np.array(backend.to_numpy(self.blobs[out].data), copy=True))
        finally:
            if tuple(blob.shape) != old_shape:
                blob.reshape(old_shape)
                self.reshape()
        return np.concatenate(results)

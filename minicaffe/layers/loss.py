"""The base of the loss layers, and the checks of class labels that they and Accuracy share.

A loss layer's top 0 is a 0-axis blob (count 1). The net stores the loss weight in its diff,
so backward scales every gradient by ``top[0].xdiff`` (Caffe's convention). Labels are read
as integers by truncation (Caffe's static_cast<int>); labels out of range raise an error
naming the layer.
"""
import numpy as np

from ..layer import Layer
from ..proto import caffe_pb2

LP = caffe_pb2.LossParameter


class LossLayer(Layer):
    """Two bottoms (predictions, targets), one scalar top; loss weight 1 by default."""
    is_loss = True
    exact_num_bottom = 2
    exact_num_top = 1
    # Old nets often give a loss layer no top; Caffe then makes one (not a net output).
    auto_top_blobs = True

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.has_ignore_label = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        if lp.HasField("normalization"):
            self.normalization = lp.normalization
        elif lp.HasField("normalize"):
            self.normalization = LP.VALID if lp.normalize else LP.BATCH_SIZE
        else:
            self.normalization = self.default_normalization

    default_normalization = LP.VALID

    def reshape(self, bottom, top):
        b0, b1 = bottom[0], bottom[1]
        if b0.num_axes < 1 or b1.num_axes < 1 or b0.shape[0] != b1.shape[0]:
            self.fail(f"the data and label should have the same first dimension: "
                      f"bottom shapes {tuple(b0.shape)} and {tuple(b1.shape)}")
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def normalizer(self, outer, inner, valid_count):
        """Caffe's get_normalizer, clamped to at least 1."""
        mode = self.normalization
        if mode == LP.FULL:
            n = outer * inner
        elif mode == LP.VALID:
            n = outer * inner if valid_count < 0 else valid_count
        elif mode == LP.BATCH_SIZE:
            n = outer
        elif mode == LP.NONE:
            n = 1
        else:
            self.fail(f"unknown loss_param.normalization {mode}")
        return max(1.0, float(n))

    def _no_label_backward(self, propagate_down):
        if len(propagate_down) > 1 and propagate_down[1]:
            self.fail("cannot backpropagate to label inputs")


def class_dims(layer, bottom, axis_value):
    """(axis, outer, C, inner) for class scores along ``axis_value``; checks the label count."""
    b0, b1 = bottom[0], bottom[1]
    try:
        axis = b0.canonical_axis_index(axis_value)
    except IndexError:
        layer.fail(f"axis {axis_value} is out of range for bottom shape {tuple(b0.shape)}")
    outer, inner = b0.count_range(0, axis), b0.count_range(axis + 1)
    if outer * inner != b1.count:
        layer.fail(f"number of labels must match number of predictions; e.g., if the axis is 1 "
                   f"and the prediction shape is (N, C, H, W), the label count must be N*H*W, "
                   f"with integer values in {{0, 1, ..., C-1}}; got prediction shape "
                   f"{tuple(b0.shape)} (axis {axis}) and label shape {tuple(b1.shape)}")
    return axis, outer, b0.shape[axis], inner


def class_labels(layer, xp, label_blob, outer, inner, num_classes):
    """Integer labels (outer, inner), the valid mask, labels safe to index with, valid count."""
    lab = label_blob.xdata.reshape(outer, inner).astype(np.int64)   # truncation, as static_cast
    if layer.has_ignore_label:
        valid = lab != layer.ignore_label
        safe = xp.where(valid, lab, 0)
    else:
        valid = None
        safe = lab
    bad = (safe < 0) | (safe >= num_classes)
    if bool(bad.any()):
        first = int(lab.ravel()[int(xp.argmax(bad.ravel()))])
        layer.fail(f"label {first} is out of range: labels must be in [0, {num_classes - 1}]"
                   + (f" or equal ignore_label {layer.ignore_label}" if layer.has_ignore_label
                      else ""))
    return lab, valid, safe

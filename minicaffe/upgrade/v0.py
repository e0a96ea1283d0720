"""V0 nets (``layers { layer { name: "conv1" type: "conv" kernelsize: 11 ... } bottom: ... }``,
Caffe before mid-2014) turned into V1 nets as Caffe's UpgradeV0Net does.

"padding" layers are folded into the pad of the conv/pool layer that reads them, and the flat
V0 fields (num_output, kernelsize, pool, local_size, source, batchsize, ...) move into the
typed parameter messages of the layer's type. A V0 field that does not belong to the layer's
type is dropped with a warning, as Caffe logs it and carries on.
"""
import logging

from ..errors import MiniCaffeError
from ..proto import caffe_pb2
from .v1 import V1

log = logging.getLogger("minicaffe")

V0_TYPE_NAMES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# V0 field -> {V0 layer type: (parameter message of the V1 layer, field in it)}. A repeated
# target field (convolution pad/kernel_size/stride) gets the value appended.
_CONV, _IP, _POOL = "convolution_param", "inner_product_param", "pooling_param"
_V0_FIELD_MAP = {
    "num_output": {"conv": (_CONV, "num_output"), "innerproduct": (_IP, "num_output")},
    "biasterm": {"conv": (_CONV, "bias_term"), "innerproduct": (_IP, "bias_term")},
    "weight_filler": {"conv": (_CONV, "weight_filler"), "innerproduct": (_IP, "weight_filler")},
    "bias_filler": {"conv": (_CONV, "bias_filler"), "innerproduct": (_IP, "bias_filler")},
    "pad": {"conv": (_CONV, "pad"), "pool": (_POOL, "pad")},
    "kernelsize": {"conv": (_CONV, "kernel_size"), "pool": (_POOL, "kernel_size")},
    "group": {"conv": (_CONV, "group")},
    "stride": {"conv": (_CONV, "stride"), "pool": (_POOL, "stride")},
    "pool": {"pool": (_POOL, "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "rand_skip": {"data": ("data_param", "rand_skip"),
                  "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}
# V0 data-transform fields: to transform_param whatever the layer type.
_V0_TRANSFORM = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size",
                 "mirror": "mirror"}


def _set_field(msg, field, value):
    fd = msg.DESCRIPTOR.fields_by_name[field]
    if fd.message_type is not None:
        getattr(msg, field).CopyFrom(value)
    elif hasattr(getattr(msg, field), "append"):      # a repeated field
        getattr(msg, field).append(value)
    else:
        setattr(msg, field, value)


def net_is_v0(param):
    """Caffe's NetNeedsV0ToV1Upgrade: some ``layers`` entry holds a V0 ``layer``."""
    return any(lc.HasField("layer") for lc in param.layers)


def upgrade_v0_padding_layers(param):
    """A copy of the V0 ``param`` without "padding" layers: each one's pad moves into the
    conv or pool layer that reads its output, which then reads the padding layer's input."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layers")
    last_top = {name: -1 for name in param.input}   # blob -> index of its latest producer
    for i, lc in enumerate(param.layers):
        v0 = lc.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(lc)
        for j, blob in enumerate(lc.bottom):
            if blob not in last_top:
                raise MiniCaffeError(f"V0 layer '{v0.name}': unknown bottom blob '{blob}' "
                                     f"(bottom index {j}); no earlier layer produces it")
            src_idx = last_top[blob]
            if src_idx < 0:
                continue
            src = param.layers[src_idx]
            if src.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise MiniCaffeError(f"V0 layer '{v0.name}' (type '{v0.type}') reads the output "
                                     f"of padding layer '{src.layer.name}'; only conv and pool "
                                     "layers can take a padding layer's output")
            if len(lc.bottom) != 1:
                raise MiniCaffeError(f"V0 layer '{v0.name}' reads padding layer "
                                     f"'{src.layer.name}' and takes {len(lc.bottom)} bottoms; "
                                     "a padded conv/pool layer takes exactly one")
            if len(src.bottom) != 1 or len(src.top) != 1:
                raise MiniCaffeError(f"V0 padding layer '{src.layer.name}' must have exactly one "
                                     f"bottom and one top, has {len(src.bottom)} and "
                                     f"{len(src.top)}")
            folded = out.layers[len(out.layers) - 1]
            folded.layer.pad = src.layer.pad
            folded.bottom[j] = src.bottom[0]
        for blob in lc.top:
            last_top[blob] = i
    return out


def upgrade_v0_layer(lc):
    """One V0 ``layers { layer { ... } bottom/top }`` entry as a V1LayerParameter."""
    out = V1()
    out.bottom.extend(lc.bottom)
    out.top.extend(lc.top)
    if not lc.HasField("layer"):
        return out
    v0 = lc.layer
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in V0_TYPE_NAMES:
            raise MiniCaffeError(f"V0 layer '{v0.name}': unknown V0 layer type '{kind}' (known: "
                                 f"{', '.join(sorted(V0_TYPE_NAMES))}, padding)")
        out.type = V0_TYPE_NAMES[kind]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELD_MAP.items():
        if not v0.HasField(field):
            continue
        if kind not in targets:
            log.warning("V0 layer '%s': parameter %s does not apply to layer type '%s'; "
                        "dropped", v0.name, field, kind)
            continue
        msg_name, target = targets[kind]
        if target is None:
            getattr(out, msg_name).CopyFrom(getattr(v0, field))
        else:
            _set_field(getattr(out, msg_name), target, getattr(v0, field))
    for field, target in _V0_TRANSFORM.items():
        if v0.HasField(field):
            setattr(out.transform_param, target, getattr(v0, field))
    return out


def upgrade_v0_net(param):
    """Caffe's UpgradeV0Net, in place: V0 layers become V1 layers (still in ``layers``).

    As in Caffe, only the name, the layers, the legacy inputs and force_backward carry over,
    plus the NetState: Caffe upgrades while reading the file, before a solver merges its
    train_state/test_state into the net, so a state set on the message must survive.
    """
    padded = upgrade_v0_padding_layers(param)
    name = padded.name if padded.HasField("name") else None
    force = padded.force_backward if padded.HasField("force_backward") else None
    state = caffe_pb2.NetState()
    state.CopyFrom(padded.state)
    keep_state = padded.HasField("state")
    param.Clear()
    if keep_state:
        param.state.CopyFrom(state)
    if name is not None:
        param.name = name
    for lc in padded.layers:
        param.layers.add().CopyFrom(upgrade_v0_layer(lc))
    param.input.extend(padded.input)
    param.input_dim.extend(padded.input_dim)
    if force is not None:
        param.force_backward = force
    return param

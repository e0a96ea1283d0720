"""V1 nets (``layers { type: CONVOLUTION ... }``) → ``layer { type: "Convolution" ... }``.

Field by field as Caffe's UpgradeV1LayerParameter: blobs_lr → param.lr_mult, weight_decay →
param.decay_mult, param (names) → param.name, blob_share_mode → param.share_mode, and the old
data-layer transform fields (scale, mean_file, crop_size, mirror) → transform_param.
"""
from ..errors import MiniCaffeError
from ..proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

V1_TYPE_NAMES = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

# Sub-messages whose field name is the same in V1LayerParameter and LayerParameter.
_SAME_NAME_PARAMS = [
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
    "image_data_param", "infogain_loss_param", "inner_product_param", "lrn_param",
    "memory_data_param", "mvn_param", "pooling_param", "power_param", "relu_param",
    "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
]


def upgrade_v1_layer(v1):
    if v1.HasField("layer"):
        raise MiniCaffeError(f"layer '{v1.layer.name or v1.name}': a V0 layer definition "
                             "(layers { layer { ... } }) left after the V0 upgrade")
    out = caffe_pb2.LayerParameter()
    out.name = v1.name
    out.type = V1_TYPE_NAMES.get(v1.type, "")
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    out.blobs.extend(v1.blobs)
    out.loss_weight.extend(v1.loss_weight)
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    n_specs = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(n_specs):
        spec = out.param.add()
        if i < len(v1.param) and v1.param[i]:
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    for field in _SAME_NAME_PARAMS:
        if v1.HasField(field):
            getattr(out, field).CopyFrom(getattr(v1, field))
    _move_data_transform(out)
    return out


def _move_data_transform(lp):
    """Old data layers kept scale/mean_file/crop_size/mirror in their own parameter."""
    for pname in ("data_param", "image_data_param", "window_data_param"):
        if not lp.HasField(pname):
            continue
        p = getattr(lp, pname)
        for f in ("scale", "mean_file", "crop_size", "mirror"):
            if p.HasField(f):
                setattr(lp.transform_param, f, getattr(p, f))
                p.ClearField(f)


def upgrade_v1_net(param):
    if len(param.layer):
        raise MiniCaffeError("net mixes 'layer' and V1 'layers' definitions; use one kind")
    for v1 in param.layers:
        param.layer.add().CopyFrom(upgrade_v1_layer(v1))
    param.ClearField("layers")
    return param

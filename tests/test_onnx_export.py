"""ONNX export: every mapped layer type (and the cifar10_bn example net) run in onnxruntime
against minicaffe's own TEST forward; clear errors for layers without an equivalent."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import minicaffe as caffe  # noqa: E402
from minicaffe.errors import MiniCaffeError  # noqa: E402
from minicaffe.export import export_onnx  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
F = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 }'


def inputs(*shapes):
    tops = " ".join(f'top: "{n}"' for n in "abc"[:len(shapes)])
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
    return f'layer {{ name: "in" type: "Input" {tops} input_param {{ {dims} }} }}\n'


def layer(kind, params="", bottoms="a", top="out", name="l"):
    bots = " ".join(f'bottom: "{b}"' for b in bottoms.split())
    tops = " ".join(f'top: "{t}"' for t in top.split())
    return f'layer {{ name: "{name}" type: "{kind}" {bots} {tops} {params} }}\n'


IMG = (2, 3, 7, 8)


def pool(settings):
    return inputs(IMG), layer("Pooling", f"pooling_param {{ pool: {settings} }}")


CASES = {
    "conv": (inputs(IMG), layer("Convolution", f"convolution_param {{ num_output: 4 "
                                               f"kernel_size: 3 pad: 1 stride: 2 dilation: 2 {F} }}")),
    "conv_group_rect": (inputs(IMG), layer("Convolution", "convolution_param { num_output: 6 "
                                           "kernel_h: 3 kernel_w: 2 group: 3 bias_term: false "
                                           f"{F} }}")),
    "deconv": (inputs(IMG), layer("Deconvolution", "convolution_param { num_output: 6 "
                                  f"kernel_size: 3 stride: 2 pad: 1 group: 3 {F} }}")),
    "ip": (inputs(IMG), layer("InnerProduct", f"inner_product_param {{ num_output: 5 {F} }}")),
    "ip_axis2_transpose": (inputs(IMG), layer("InnerProduct", "inner_product_param { "
                                              f"num_output: 4 axis: 2 transpose: true {F} }}")),
    "max_pool_ceil_pad": pool("MAX kernel_size: 3 stride: 2 pad: 1"),
    "ave_pool_ceil_overhang": pool("AVE kernel_size: 3 stride: 2"),
    "ave_pool_pad": pool("AVE kernel_h: 3 kernel_w: 2 stride: 2 pad_h: 1 pad_w: 1"),
    "ave_pool_floor": pool("AVE kernel_size: 3 stride: 2 round_mode: FLOOR"),
    "global_max": pool("MAX global_pooling: true"),
    "global_ave": pool("AVE global_pooling: true"),
    "relu": (inputs(IMG), layer("ReLU")),
    "leaky_relu_in_place": (inputs(IMG), layer("ReLU", "relu_param { negative_slope: 0.1 }",
                                               top="a")),
    "sigmoid": (inputs(IMG), layer("Sigmoid")),
    "tanh": (inputs(IMG), layer("TanH")),
    "elu": (inputs(IMG), layer("ELU", "elu_param { alpha: 0.7 }")),
    "absval": (inputs(IMG), layer("AbsVal")),
    "power": (inputs(IMG), layer("Power", "power_param { power: 2 scale: 0.5 shift: 3 }")),
    "power_affine": (inputs(IMG), layer("Power", "power_param { scale: -2 shift: 0.5 }")),
    "exp": (inputs(IMG), layer("Exp")),
    "exp_base2": (inputs(IMG), layer("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }")),
    "log": (inputs(IMG), layer("Log", "log_param { scale: 0.5 shift: 10 }")),
    "log_base10": (inputs(IMG), layer("Log", "log_param { base: 10 shift: 5 }")),
    "bnll": (inputs(IMG), layer("BNLL")),
    "dropout": (inputs(IMG), layer("Dropout", "dropout_param { dropout_ratio: 0.3 }")),
    "batchnorm": (inputs(IMG), layer("BatchNorm", "batch_norm_param { eps: 0.001 }")),
    "batchnorm_scale_folded": (inputs(IMG), layer("BatchNorm", top="a", name="bn") +
                               layer("Scale", "scale_param { bias_term: true }", top="a",
                                     name="sc")),
    "scale_two_axes": (inputs(IMG), layer("Scale", "scale_param { axis: 1 num_axes: 2 }")),
    "scale_bottom": (inputs(IMG, (3,)), layer("Scale", "scale_param { bias_term: true }",
                                              bottoms="a b")),
    "bias": (inputs(IMG), layer("Bias", "bias_param { axis: 2 num_axes: 1 }")),
    "eltwise_sum_coeffs": (inputs(IMG, IMG), layer("Eltwise", "eltwise_param { operation: SUM "
                                                   "coeff: 0.5 coeff: -2 }", bottoms="a b")),
    "eltwise_prod": (inputs(IMG, IMG), layer("Eltwise", "eltwise_param { operation: PROD }",
                                             bottoms="a b")),
    "eltwise_max": (inputs(IMG, IMG, IMG), layer("Eltwise", "eltwise_param { operation: MAX }",
                                                 bottoms="a b c")),
    "concat": (inputs(IMG, (2, 2, 7, 8)), layer("Concat", bottoms="a b")),
    "slice": (inputs(IMG), layer("Slice", "slice_param { axis: 3 slice_point: 2 slice_point: 5 }",
                                 top="s1 s2 s3")),
    "flatten": (inputs(IMG), layer("Flatten", "flatten_param { axis: 2 }")),
    "reshape": (inputs(IMG), layer("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 4 } }")),
    "softmax": (inputs(IMG), layer("Softmax")),
    "softmax_axis2": (inputs(IMG), layer("Softmax", "softmax_param { axis: 2 }")),
    "lrn": (inputs(IMG), layer("LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 k: 2 }")),
    "lrn_within": (inputs(IMG), layer("LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 "
                                      "norm_region: WITHIN_CHANNEL }")),
    "split": (inputs(IMG), layer("TanH", top="t", name="t") + layer("Sigmoid", bottoms="t",
                                                                      top="u", name="u") +
              layer("AbsVal", bottoms="t", top="v", name="v")),
    "crop": (inputs(IMG, (2, 3, 4, 5)), layer("Crop", "crop_param { axis: 2 offset: 1 offset: 2 }",
                                              bottoms="a b")),
}


def random_weights(net, rs):
    for name, params in net.params.items():
        for p in params:
            p.data[...] = rs.standard_normal(p.data.shape) * 0.3
        if net.layer_by_name[name].type == "BatchNorm":
            params[0].data[...] *= 0.8
            params[1].data[...] = rs.uniform(0.5, 2.0, params[1].data.shape) * 0.8
            params[2].data[...] = 0.8      # Caffe's moving-average normaliser


def check_export(tmp_path, model_path, seed=0):
    rs = np.random.RandomState(seed)
    net = caffe.Net(str(model_path), caffe.TEST)
    random_weights(net, rs)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    out = tmp_path / "m.onnx"
    export_onnx(str(model_path), str(weights), str(out))
    feeds = {}
    for name in net.inputs:
        feeds[name] = rs.standard_normal(net.blobs[name].data.shape).astype(np.float32)
        net.blobs[name].data[...] = feeds[name]
    want = {k: v.copy() for k, v in net.forward().items()}
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    # an input rewritten in place keeps its name as the input; its output is "blob__layer"
    assert [n.split("__")[0] for n in names] == list(want)
    for k, got in zip(want, sess.run(None, feeds)):
        scale = max(1.0, float(np.abs(want[k]).max()))
        np.testing.assert_allclose(got, want[k], rtol=1e-4, atol=1e-5 * scale, err_msg=k)


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_onnxruntime(tmp_path, case):
    model = tmp_path / "net.prototxt"
    model.write_text("".join(CASES[case]))
    check_export(tmp_path, model)


def test_cifar10_bn_deploy_matches_onnxruntime(tmp_path):
    check_export(tmp_path, os.path.join(ROOT, "models", "cifar10_bn", "deploy.prototxt"))


def test_batchnorm_scale_pair_becomes_one_node(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text("".join(CASES["batchnorm_scale_folded"]))
    m = export_onnx(str(model), None, str(tmp_path / "m.onnx"))
    assert [n.op_type for n in m.graph.node] == ["BatchNormalization"]


def test_unsupported_layer_is_named(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(inputs(IMG) + layer("ReLU", name="r") + layer("PReLU", bottoms="out",
                                                                   top="p", name="prelu1"))
    with pytest.raises(MiniCaffeError, match="'prelu1' \\(type PReLU\\)"):
        export_onnx(str(model), None, str(tmp_path / "m.onnx"))


def test_export_command_writes_a_model_onnxruntime_runs(tmp_path):
    from minicaffe.cli import main
    model = tmp_path / "deploy.prototxt"
    model.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        'input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param '
        '{ num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n')
    net = caffe.Net(str(model), caffe.TEST)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    out = tmp_path / "m.onnx"
    assert main(["export", "onnx", "--model", str(model), "--weights", str(weights),
                 "--out", str(out)]) == 0
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    net.blobs["data"].data[...] = x
    expected = net.forward()["conv"].copy()
    got = ort.InferenceSession(str(out)).run(None, {"data": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_export_command_names_the_missing_model(tmp_path, capsys):
    from minicaffe.cli import main
    assert main(["export", "onnx", "--model", str(tmp_path / "nope.prototxt"),
                 "--out", str(tmp_path / "m.onnx")]) == 1
    assert "nope.prototxt" in capsys.readouterr().err

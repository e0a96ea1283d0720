"""minicaffe fold-bn: BatchNorm (+ Scale/Bias) folded into the Convolution/InnerProduct before
it gives the same TEST outputs; chains stop where folding would change the net."""
import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.fold_bn import compare_nets, fold_batchnorm, fold_bn_files, main_fold_bn
from minicaffe.io.prototxt import read_prototxt
from minicaffe.proto import caffe_pb2

NET = '''
name: "t"
layer { name: "data" type: "Input" top: "data" include { phase: TEST }
        input_param { shape { dim: 4 dim: 3 dim: 10 dim: 10 } } }
layer { name: "train_data" type: "DummyData" top: "data" include { phase: TRAIN }
        dummy_data_param { shape { dim: 4 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
        scale_param { axis: 1 num_axes: 1 } }
layer { name: "bias1" type: "Bias" bottom: "conv1" top: "conv1"
        bias_param { axis: 1 num_axes: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 6 kernel_size: 3 group: 2
                            weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "gaussian" std: 1 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" batch_norm_param { eps: 0.001 } }
layer { name: "sc2" type: "Scale" bottom: "bn2" top: "sc2" scale_param { bias_term: true } }
layer { name: "pool" type: "Pooling" bottom: "sc2" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 5 transpose: true
                              weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn3" type: "BatchNorm" bottom: "ip" top: "ip" }
'''


def randomise_bn_scale_bias(net, rs):
    """Non-trivial BatchNorm statistics (with a factor != 1) and Scale/Bias parameters."""
    for name, blobs in net.params.items():
        kind = net.layer_by_name[name].type
        if kind == "BatchNorm":
            c = blobs[0].count
            factor = 0.7
            blobs[0].data[...] = rs.standard_normal(c) * factor
            blobs[1].data[...] = (rs.rand(c) + 0.2) * factor
            blobs[2].data[...] = factor
        elif kind in ("Scale", "Bias"):
            for b in blobs:
                b.data[...] = rs.standard_normal(b.shape)


def make_model(tmp_path, text=NET, seed=0):
    model = tmp_path / "net.prototxt"
    model.write_text(text)
    net = caffe.Net(str(model), caffe.TEST)
    randomise_bn_scale_bias(net, np.random.RandomState(seed))
    weights = tmp_path / "net.caffemodel"
    net.save(str(weights))
    return str(model), str(weights)


def test_folded_net_matches_in_test_phase(tmp_path):
    model, weights = make_model(tmp_path)
    out_model, out_weights = str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel")
    report = fold_bn_files(model, weights, out_model, out_weights)
    assert report == [("conv1", ["bn1", "scale1", "bias1"]), ("conv2", ["bn2", "sc2"]),
                      ("ip", ["bn3"])]
    folded = read_prototxt(out_model, caffe_pb2.NetParameter())
    types = [l.type for l in folded.layer]
    assert not {"BatchNorm", "Scale", "Bias"} & set(types)
    by_name = {l.name: l for l in folded.layer}
    assert by_name["conv1"].convolution_param.bias_term
    assert list(by_name["conv2"].top) == ["sc2"]          # the chain was not in place
    assert by_name["ip"].inner_product_param.bias_term
    assert "train_data" in by_name                        # TRAIN-only layer kept

    a = caffe.Net(model, weights, caffe.TEST)
    b = caffe.Net(out_model, out_weights, caffe.TEST)
    assert len(b.layers) == len(a.layers) - 6
    x = np.random.RandomState(1).standard_normal((4, 3, 10, 10)).astype(np.float32)
    for blob in ("ip", "pool"):
        ya = a.forward(data=x, blobs=[blob])[blob].copy()
        yb = b.forward(data=x, blobs=[blob])[blob].copy()
        assert np.abs(ya).max() > 0.1
        np.testing.assert_allclose(yb, ya, rtol=1e-4, atol=1e-4 * np.abs(ya).max())
    diffs, ta, tb = compare_nets(model, weights, out_model, out_weights)
    assert set(diffs) == {"ip"} and ta is None


def test_fold_formula_on_a_single_1x1_convolution(tmp_path):
    """W' = W g / sqrt(v + eps), b' = (b - m) g / sqrt(v + eps) + beta, by hand."""
    text = '''
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 2 kernel_size: 1 } }
    layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { eps: 0.5 } }
    layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
    '''
    model = tmp_path / "one.prototxt"
    model.write_text(text)
    net = caffe.Net(str(model), caffe.TEST)
    W, b = np.array([2.0, -1.0]), np.array([0.5, 3.0])
    net.params["conv"][0].data[...] = W.reshape(2, 1, 1, 1)
    net.params["conv"][1].data[...] = b
    mean, var, factor = np.array([1.0, -2.0]), np.array([1.5, 3.5]), 4.0
    net.params["bn"][0].data[...] = mean * factor
    net.params["bn"][1].data[...] = var * factor
    net.params["bn"][2].data[...] = factor
    g, beta = np.array([3.0, 0.5]), np.array([-1.0, 2.0])
    net.params["sc"][0].data[...] = g
    net.params["sc"][1].data[...] = beta
    weights = tmp_path / "one.caffemodel"
    net.save(str(weights))
    _, wparam, report = fold_batchnorm(str(model), str(weights))
    assert report == [("conv", ["bn", "sc"])]
    conv = [l for l in wparam.layer if l.name == "conv"][0]
    a = g / np.sqrt(var + 0.5)
    np.testing.assert_allclose(np.array(conv.blobs[0].data), W * a, rtol=1e-6)
    np.testing.assert_allclose(np.array(conv.blobs[1].data), (b - mean) * a + beta, rtol=1e-6)
    assert [l.name for l in wparam.layer] == ["data", "conv"]


def test_chains_stop_where_folding_would_change_the_net(tmp_path):
    text = '''
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
    layer { name: "convA" type: "Convolution" bottom: "data" top: "a"
            convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "bnA" type: "BatchNorm" bottom: "a" top: "bnA" }
    layer { name: "peek" type: "Power" bottom: "a" top: "peek" }
    layer { name: "convB" type: "Convolution" bottom: "data" top: "b"
            convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "bnB" type: "BatchNorm" bottom: "b" top: "bnB" }
    layer { name: "scB" type: "Scale" bottom: "bnB" top: "scB" }
    layer { name: "useB" type: "Power" bottom: "bnB" top: "useB" }
    layer { name: "convC" type: "Convolution" bottom: "data" top: "c"
            convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "bnC" type: "BatchNorm" bottom: "c" top: "c" batch_norm_param { use_global_stats: false } }
    layer { name: "convD" type: "Convolution" bottom: "data" top: "d"
            convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "scD" type: "Scale" bottom: "d" top: "d" scale_param { axis: 2 num_axes: 1 } }
    '''
    model, weights = make_model(tmp_path, text)
    param, _, report = fold_batchnorm(model, weights)
    # convA: its output is read by "peek" too; bnB folds but scB does not (bnB is
    # also read by useB); bnC normalises with batch statistics; scD is not per channel.
    assert report == [("convB", ["bnB"])]
    names = [l.name for l in param.layer]
    assert "bnA" in names and "bnB" not in names and "scB" in names and "bnC" in names
    a = caffe.Net(model, weights, caffe.TEST)
    out_model, out_weights = str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel")
    fold_bn_files(model, weights, out_model, out_weights)
    diffs, _, _ = compare_nets(model, weights, out_model, out_weights)
    assert set(diffs) == set(a.outputs)
    assert max(diffs.values()) < 1e-4


def test_cli_reports_check_and_speed_up(tmp_path, capsys):
    model, weights = make_model(tmp_path)
    out_model, out_weights = str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel")
    assert main_fold_bn([model, weights, out_model, out_weights, "--check", "--time", "2"]) == 0
    out = capsys.readouterr().out
    assert "folded bn1 + scale1 + bias1 into conv1" in out
    assert "output 'ip': max |original - folded|" in out
    assert "speed-up" in out
    assert main_fold_bn([str(tmp_path / "missing.prototxt"), weights, out_model,
                         out_weights]) == 1
    assert "no such file" in capsys.readouterr().err


def test_nothing_to_fold(tmp_path, capsys):
    text = '''
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
    '''
    model, weights = make_model(tmp_path, text)
    assert main_fold_bn([model, weights, str(tmp_path / "o.prototxt"),
                         str(tmp_path / "o.caffemodel")]) == 0
    assert "nothing folded" in capsys.readouterr().out
    assert caffe.Net(str(tmp_path / "o.prototxt"), str(tmp_path / "o.caffemodel"), caffe.TEST)

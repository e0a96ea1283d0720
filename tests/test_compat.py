"""Compatibility with old Caffe net formats, found by loading real-world prototxts.

Every net here is a small one written for the test. Covered: V0 nets (``layers { layer {
type: "conv" kernelsize: 3 } }``, Caffe before mid-2014) with their "padding" layers folded
into the next conv/pool, V0 fields routed to the typed parameter messages, V0 weights files;
net inputs given without dims (old .caffemodel files), all as Caffe's upgrade_proto does; and
BatchNorm with three learned param specs, which minicaffe rejects where Caffe froze them.
"""
import logging

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import caffe_pb2
from minicaffe.errors import MiniCaffeError
from minicaffe.io.protobinary import write_binary
from minicaffe.io.prototxt import parse_text
from minicaffe.upgrade import upgrade_net


def _v0(text):
    return parse_text(text, caffe_pb2.NetParameter())


def _upgraded(text):
    return upgrade_net(_v0(text))


def _by_name(param):
    return {lp.name: lp for lp in param.layer}


# A V0 net as Caffe wrote them in early 2014: padding layers in front of conv and pool.
V0_NET = '''
name: "tiny_v0"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 7 input_dim: 7
layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 group: 1
          weight_filler { type: "gaussian" std: 0.3 }
          bias_filler { type: "constant" value: 0.1 }
          blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0. }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
         bottom: "pad2" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.01 beta: 0.5 k: 2 }
         bottom: "pool1" top: "norm1" }
layers { layer { name: "ip1" type: "innerproduct" num_output: 5 biasterm: false
                 weight_filler { type: "gaussian" std: 0.3 } }
         bottom: "norm1" top: "ip1" }
layers { layer { name: "drop1" type: "dropout" dropout_ratio: 0.25 } bottom: "ip1" top: "ip1" }
layers { layer { name: "prob" type: "softmax" } bottom: "ip1" top: "prob" }
'''

# The same net written by hand in today's format.
MODERN_NET = '''
name: "tiny_v0"
layer { name: "input" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 7 dim: 7 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.01 beta: 0.5 k: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "norm1" top: "ip1"
        inner_product_param { num_output: 5 bias_term: false } }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1"
        dropout_param { dropout_ratio: 0.25 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
'''


def test_v0_padding_layers_fold_into_conv_and_pool():
    param = _upgraded(V0_NET)
    assert not len(param.layers) and not len(param.input) and not len(param.input_dim)
    assert [lp.name for lp in param.layer] == ["input", "conv1", "relu1", "pool1", "norm1",
                                               "ip1", "drop1", "prob"]
    layers = _by_name(param)
    conv = layers["conv1"]
    assert conv.type == "Convolution"
    assert list(conv.bottom) == ["data"]                  # reads the padding layer's input
    cp = conv.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.pad), list(cp.stride), cp.group) == \
        (4, [3], [1], [1], 1)
    assert (cp.weight_filler.type, cp.weight_filler.std) == ("gaussian", pytest.approx(0.3))
    assert cp.bias_filler.value == pytest.approx(0.1)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    pool = layers["pool1"]
    assert list(pool.bottom) == ["conv1"]
    pp = pool.pooling_param
    assert (pp.pool, pp.kernel_size, pp.stride, pp.pad) == \
        (caffe_pb2.PoolingParameter.AVE, 3, 2, 1)
    lrn = layers["norm1"].lrn_param
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == \
        (3, pytest.approx(0.01), pytest.approx(0.5), pytest.approx(2))
    ip = layers["ip1"].inner_product_param
    assert (ip.num_output, ip.bias_term) == (5, False)
    assert layers["drop1"].dropout_param.dropout_ratio == pytest.approx(0.25)
    assert [lp.type for lp in param.layer] == ["Input", "Convolution", "ReLU", "Pooling", "LRN",
                                               "InnerProduct", "Dropout", "Softmax"]


def test_v0_net_runs_like_the_same_net_written_today(tmp_path, caplog):
    old = tmp_path / "v0.prototxt"
    old.write_text(V0_NET)
    new = tmp_path / "modern.prototxt"
    new.write_text(MODERN_NET)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        net_old = caffe.Net(str(old), caffe.TEST)
    assert "upgraded V0" in caplog.text
    net_new = caffe.Net(str(new), caffe.TEST)
    for name, blobs in net_old.params.items():
        assert [tuple(b.shape) for b in blobs] == \
            [tuple(b.shape) for b in net_new.params[name]]
        for a, b in zip(blobs, net_new.params[name]):
            b.data[...] = a.data
    x = np.random.RandomState(3).standard_normal((2, 3, 7, 7)).astype(np.float32)
    a = net_old.forward(data=x)["prob"].copy()
    b = net_new.forward(data=x)["prob"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 5)
    # pad 1 + kernel 3: conv keeps 7x7; AVE pool k3 s2 p1: ceil((7 + 2 - 3) / 2) + 1 = 4.
    assert tuple(net_old.blobs["conv1"].shape) == (2, 4, 7, 7)
    assert tuple(net_old.blobs["pool1"].shape) == (2, 4, 4, 4)
    # The weights were drawn from the V0 fillers: conv bias is the constant 0.1.
    np.testing.assert_allclose(net_old.params["conv1"][1].data, 0.1)


def test_v0_data_layer_fields_route_to_typed_parameters():
    param = _upgraded('''
    layers { layer { name: "d" type: "data" source: "train_db" batchsize: 16 rand_skip: 5
                     meanfile: "mean.binaryproto" cropsize: 27 mirror: true scale: 0.5 }
             top: "data" top: "label" }
    layers { layer { name: "img" type: "images" source: "list.txt" batchsize: 4
                     shuffle_images: true new_height: 40 new_width: 30 rand_skip: 2 }
             top: "img" top: "img_label" }
    layers { layer { name: "win" type: "window_data" source: "win.txt" batchsize: 8
                     det_fg_threshold: 0.6 det_bg_threshold: 0.4 det_fg_fraction: 0.3
                     det_context_pad: 16 det_crop_mode: "square" }
             top: "win" top: "win_label" }
    layers { layer { name: "cat" type: "concat" concat_dim: 0 }
             bottom: "data" bottom: "img" top: "cat" }
    layers { layer { name: "loss" type: "softmax_loss" } bottom: "cat" bottom: "label" }
    layers { layer { name: "acc" type: "accuracy" } bottom: "cat" bottom: "label" top: "acc" }
    ''')
    layers = _by_name(param)
    d = layers["d"]
    assert d.type == "Data"
    assert (d.data_param.source, d.data_param.batch_size, d.data_param.rand_skip) == \
        ("train_db", 16, 5)
    t = d.transform_param
    assert (t.mean_file, t.crop_size, t.mirror, t.scale) == \
        ("mean.binaryproto", 27, True, pytest.approx(0.5))
    img = layers["img"]
    ip = img.image_data_param
    assert img.type == "ImageData"
    assert (ip.source, ip.batch_size, ip.shuffle, ip.new_height, ip.new_width, ip.rand_skip) == \
        ("list.txt", 4, True, 40, 30, 2)
    win = layers["win"]
    wp = win.window_data_param
    assert win.type == "WindowData"
    assert (wp.source, wp.batch_size, wp.context_pad, wp.crop_mode) == \
        ("win.txt", 8, 16, "square")
    assert (wp.fg_threshold, wp.bg_threshold, wp.fg_fraction) == \
        (pytest.approx(0.6), pytest.approx(0.4), pytest.approx(0.3))
    cat = layers["cat"]
    assert cat.type == "Concat" and cat.concat_param.HasField("concat_dim")
    assert cat.concat_param.concat_dim == 0
    assert layers["loss"].type == "SoftmaxWithLoss" and not len(layers["loss"].top)
    assert layers["acc"].type == "Accuracy"


def test_v0_field_of_another_layer_type_is_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="minicaffe"):
        param = _upgraded('''
        input: "x" input_dim: 1 input_dim: 2 input_dim: 1 input_dim: 1
        layers { layer { name: "r" type: "relu" num_output: 3 kernelsize: 2 } bottom: "x" top: "x" }
        ''')
    relu = _by_name(param)["r"]
    assert relu.type == "ReLU"
    assert not relu.HasField("convolution_param") and not relu.HasField("inner_product_param")
    assert "num_output" in caplog.text and "kernelsize" in caplog.text and "'r'" in caplog.text


@pytest.mark.parametrize("text,words", [
    ('layers { layer { name: "m" type: "magic" } bottom: "x" top: "y" }',
     ["'m'", "unknown V0 layer type 'magic'"]),
    ('layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }\n'
     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }',
     ["'r'", "relu", "padding layer 'p'"]),
    ('layers { layer { name: "c" type: "conv" num_output: 1 kernelsize: 1 } '
     'bottom: "nowhere" top: "c" }',
     ["'c'", "unknown bottom blob 'nowhere'"]),
])
def test_v0_mistakes_are_named(text, words):
    with pytest.raises(MiniCaffeError) as e:
        upgrade_net(_v0('input: "x" input_dim: 1 input_dim: 1 input_dim: 3 input_dim: 3\n' + text))
    for w in words:
        assert w in str(e.value)


def test_v0_weights_file_loads_into_a_modern_net(tmp_path):
    """Old .caffemodel files are V0 NetParameters: weights inside each V0 layer, blobs with
    legacy num/channels/height/width, a bare ``input`` without dims."""
    new = tmp_path / "modern.prototxt"
    new.write_text(MODERN_NET)
    net = caffe.Net(str(new), caffe.TEST)
    rng = np.random.RandomState(7)
    weights = _v0(V0_NET)
    weights.ClearField("input_dim")
    for lc in weights.layers:
        name = lc.layer.name
        for blob in net.params.get(name, []):
            values = rng.standard_normal(blob.shape).astype(np.float32)
            blob.data[...] = values
            legacy = [1] * (4 - len(blob.shape)) + list(blob.shape)
            bp = lc.layer.blobs.add(num=legacy[0], channels=legacy[1], height=legacy[2],
                                    width=legacy[3])
            bp.data.extend(values.ravel().tolist())
    path = tmp_path / "old.caffemodel"
    write_binary(weights, str(path))
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    want = net.forward(data=x)["prob"].copy()
    loaded = caffe.Net(str(new), str(path), caffe.TEST)
    np.testing.assert_array_equal(loaded.params["conv1"][0].data, net.params["conv1"][0].data)
    np.testing.assert_array_equal(loaded.forward(data=x)["prob"], want)


def test_v0_upgrade_keeps_the_net_state():
    """A solver puts its train_state/test_state on the message before the net is built;
    Caffe upgrades while reading the file, so the state must come through the V0 upgrade."""
    param = _v0(V0_NET)
    param.state.phase = caffe_pb2.TRAIN
    param.state.stage.append("finetune")
    param.force_backward = True
    upgrade_net(param)
    assert param.state.phase == caffe_pb2.TRAIN and list(param.state.stage) == ["finetune"]
    assert param.force_backward and param.name == "tiny_v0"


def test_inputs_without_dims_are_dropped_as_in_caffe():
    # The form old .caffemodel files carry: nothing to build an Input layer from.
    param = upgrade_net(_v0('input: "data"\nlayer { name: "r" type: "ReLU" bottom: "data" '
                            'top: "r" }'))
    assert not len(param.input)
    assert [lp.type for lp in param.layer] == ["ReLU"]
    with pytest.raises(MiniCaffeError, match="unknown bottom blob 'data'"):
        caffe.Net(param, caffe.TEST)


def test_input_dim_count_mismatch_is_a_named_error():
    with pytest.raises(MiniCaffeError, match="input_dim needs 8 values .*got 5"):
        upgrade_net(_v0('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 '
                        'input_dim: 4 input_dim: 5'))


BN_NET = '''
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 1 }
        param { lr_mult: 1 decay_mult: 1 name: "keep_me" } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "x" top: "loss" }
'''


def test_batchnorm_with_three_learned_param_specs_is_rejected_not_silently_frozen():
    with pytest.raises(MiniCaffeError, match=r"'bn'.*lr_mult"):
        caffe.Net(parse_text(BN_NET, caffe_pb2.NetParameter()), caffe.TRAIN)
    frozen = BN_NET.replace("lr_mult: 1 decay_mult: 1", "lr_mult: 0")
    net = caffe.Net(parse_text(frozen, caffe_pb2.NetParameter()), caffe.TRAIN)
    assert net.layer_by_name["bn"].param_propagate_down == [False, False, False]
    x = np.random.RandomState(0).standard_normal((4, 2, 3)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.layer_by_name["bn"].blobs[0].data, x.mean(axis=(0, 2)),
                               rtol=1e-5, atol=1e-6)


def test_batchnorm_with_one_learned_param_spec_still_fails_as_in_caffe():
    text = BN_NET.replace('param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 1 }'
                          '\n        param { lr_mult: 1 decay_mult: 1 name: "keep_me" }',
                          'param { lr_mult: 1 }')
    assert text.count("param { lr_mult") == 1
    with pytest.raises(MiniCaffeError, match="lr_mult"):
        caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN)

"""NetSpec / layers (L) / params (P): keyword routing, names, round trips, the batch_norm
helper from the BatchNorm PR discussion, and the cifar10_bn train_val generator."""
import importlib.util
import os
import sys

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe import net_spec
from minicaffe.net_spec import NetSpec, NetSpecError, layers as L, params as P, to_proto
from minicaffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def roundtrip(net):
    back = text_format.Parse(str(net), caffe_pb2.NetParameter())
    assert back == net
    return back


def test_param_name_dict_from_layer_parameter_fields():
    d = net_spec.param_name_dict()
    assert d["Convolution"] == "convolution"
    assert d["InnerProduct"] == "inner_product"
    assert d["ReLU"] == "relu"
    assert d["HDF5Data"] == "hdf5_data"
    assert d["BatchNorm"] == "batch_norm"
    assert d["Scale"] == "scale" and d["Bias"] == "bias"
    assert d["Python"] == "python"
    assert "SoftmaxWithLoss" not in d


def test_keywords_route_to_layer_or_type_param():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=[3, 5], pad=1, group=1,
                           param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)],
                           weight_filler=dict(type="xavier"),
                           bias_filler=dict(type="constant", value=0.1),
                           propagate_down=False)
    n.sc = L.Scale(n.conv, axis=1, num_axes=1, bias_term=True, loss_weight=0.5)
    net = n.to_proto()
    data, conv, sc = net.layer
    assert list(data.input_param.shape[0].dim) == [2, 3, 8, 8]
    cp = conv.convolution_param
    assert cp.num_output == 4 and list(cp.kernel_size) == [3, 5] and list(cp.pad) == [1]
    assert cp.group == 1 and cp.HasField("group")
    assert cp.weight_filler.type == "xavier"
    assert cp.bias_filler.value == pytest.approx(0.1)
    assert [p.lr_mult for p in conv.param] == [1, 2]
    assert conv.param[1].decay_mult == 0 and conv.param[1].HasField("decay_mult")
    assert list(conv.propagate_down) == [False]   # scalar for a repeated field: one element
    assert sc.scale_param.axis == 1 and sc.scale_param.num_axes == 1
    assert sc.scale_param.bias_term
    assert list(sc.loss_weight) == [0.5]
    roundtrip(net)


def test_names_tops_and_layer_order():
    n = NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[4, 3]), dict(dim=[4])], ntop=2)
    hidden = L.InnerProduct(n.data, num_output=5)        # never assigned: automatic name
    n.relu = L.ReLU(hidden, in_place=True)
    n.loss = L.SoftmaxWithLoss(L.InnerProduct(n.relu, num_output=3), n.label)
    net = n.to_proto()
    assert [l.name for l in net.layer] == ["data", "InnerProduct1", "relu", "InnerProduct2",
                                          "loss"]
    assert [l.type for l in net.layer] == ["DummyData", "InnerProduct", "ReLU",
                                          "InnerProduct", "SoftmaxWithLoss"]
    assert list(net.layer[0].top) == ["data", "label"]
    assert list(net.layer[2].bottom) == ["InnerProduct1"] == list(net.layer[2].top)
    assert list(net.layer[3].bottom) == ["InnerProduct1"]
    assert list(net.layer[4].bottom) == ["InnerProduct2", "label"]
    roundtrip(net)
    # The net builds and runs.
    cnet = caffe.Net(net, caffe.TRAIN)
    assert np.isfinite(cnet.forward()["loss"])


def test_items_name_kwarg_ntop0_and_to_proto_function():
    n = NetSpec()
    n["data"] = L.Input(shape=dict(dim=[1, 2]))
    n["ip"] = L.InnerProduct(n["data"], num_output=2, name="fc")
    n.silence = L.Silence(n.ip, ntop=0)
    net = n.to_proto()
    assert [l.name for l in net.layer] == ["data", "fc", "silence"]
    assert list(net.layer[1].top) == ["ip"] and not len(net.layer[2].top)
    assert n.keys() == ["data", "ip", "silence"] and "ip" in n
    del n["silence"]
    assert len(n.to_proto().layer) == 2
    # Free function: every name automatic.
    top = L.ReLU(L.Input(shape=dict(dim=[3])))
    auto = to_proto(top)
    assert [l.name for l in auto.layer] == ["Input1", "ReLU1"]
    assert list(auto.layer[1].bottom) == ["Input1"]
    assert top.to_proto() == auto


def test_params_enums_and_enum_names():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert P.Data.LMDB == caffe_pb2.DataParameter.LMDB
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    x = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    a = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=2).to_proto().layer[1]
    b = L.Pooling(x, pool="AVE", kernel_size=2).to_proto().layer[1]
    assert a.pooling_param.pool == b.pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    with pytest.raises(AttributeError):
        P.NoSuchThing.X
    with pytest.raises(AttributeError):
        P.Pooling.MAXIMUM


def test_bad_keywords_name_the_problem():
    x = L.Input(shape=dict(dim=[1, 2]))
    with pytest.raises(NetSpecError, match="num_outputs.*convolution_param"):
        L.Convolution(x, num_outputs=3).to_proto()
    with pytest.raises(AttributeError):   # NetSpecError is an AttributeError, as in pycaffe
        L.ReLU(x, negative_slop=0.1).to_proto()
    with pytest.raises(NetSpecError, match="weight_filler"):
        L.InnerProduct(x, num_output=2, weight_filler="xavier").to_proto()
    with pytest.raises(NetSpecError, match="pool"):
        L.Pooling(x, pool="MAXX").to_proto()
    with pytest.raises(NetSpecError, match="not a Top"):
        L.ReLU("data")
    with pytest.raises(AttributeError):
        NetSpec().missing


def test_deconvolution_keywords_go_to_convolution_param():
    x = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    lp = L.Deconvolution(x, num_output=3, kernel_size=2, stride=2).to_proto().layer[1]
    assert lp.convolution_param.num_output == 3 and list(lp.convolution_param.stride) == [2]


def test_layers_object_keeps_the_layer_package_reachable(monkeypatch):
    pkg = sys.modules["minicaffe.layers"]
    assert L.data is sys.modules["minicaffe.layers.data"]
    with pytest.raises(AttributeError):
        L.__wrapped__
    # What `from .net_spec import layers` in minicaffe/__init__ does: the name minicaffe.layers
    # becomes L, and the layer package must keep working behind it.
    monkeypatch.setattr(caffe, "layers", L)
    import minicaffe.layers.data as data_mod
    assert data_mod is sys.modules["minicaffe.layers.data"]
    assert sys.modules["minicaffe.layers"] is pkg
    assert "Convolution" in caffe.layer_types()
    from minicaffe import layers as L2
    assert L2.Convolution(L2.Input(shape=dict(dim=[1, 1, 3, 3])), num_output=1,
                          kernel_size=1).to_proto().layer[1].type == "Convolution"


# -- the helper from the BatchNorm PR discussion (L.Scalar there is today's L.Scale) ---------
def batch_norm(x, with_params=True, lr_mult=1, in_place=True):
    param = [dict(lr_mult=0)] * 3
    out = L.BatchNorm(x, param=param, in_place=in_place)
    if with_params:
        param = [dict(lr_mult=lr_mult, decay_mult=0)]
        kwargs = dict(axis=1, num_axes=1, param=param, in_place=in_place)
        out = L.Scale(out, **kwargs)
        out = L.Bias(out, **kwargs)
    return out


def test_batch_norm_helper_proto():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 4, 4]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, bias_term=False)
    n.bn = batch_norm(n.conv)
    n.plain = batch_norm(n.bn, with_params=False, in_place=False)
    net = roundtrip(n.to_proto())
    types = [l.type for l in net.layer]
    assert types == ["Input", "Convolution", "BatchNorm", "Scale", "Bias", "BatchNorm"]
    bn, sc, bias, bn2 = net.layer[2:]
    assert [p.lr_mult for p in bn.param] == [0, 0, 0]
    assert all(p.HasField("lr_mult") for p in bn.param)
    for lp, pname in ((sc, "scale_param"), (bias, "bias_param")):
        assert getattr(lp, pname).axis == 1 and getattr(lp, pname).num_axes == 1
        assert [(p.lr_mult, p.decay_mult) for p in lp.param] == [(1, 0)]
    # In place: every layer of the helper reads and writes the conv blob.
    for lp in (bn, sc, bias):
        assert list(lp.bottom) == ["conv"] == list(lp.top)
    assert [bn.name, sc.name, bias.name] == ["BatchNorm1", "Scale1", "bn"]
    assert list(bn2.bottom) == ["conv"] and list(bn2.top) == ["plain"]


def test_batch_norm_helper_net_trains():
    """conv → batch_norm → ReLU → ip → softmax loss learns a separable 3-class problem."""
    rs = np.random.RandomState(0)
    N, C, H = 24, 2, 5
    labels = np.arange(N) % 3
    X = rs.standard_normal((N, C, H, H)).astype(np.float32) * 0.3
    X[:, 0] += (labels - 1)[:, None, None] * 1.5      # class shows in channel 0's level
    X[:, 1] += (labels == 2)[:, None, None] * 1.0

    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[N, C, H, H]))
    n.label = L.Input(shape=dict(dim=[N]))
    n.conv = L.Convolution(n.data, num_output=6, kernel_size=3, bias_term=False,
                           weight_filler=dict(type="gaussian", std=0.3))
    n.bn = batch_norm(n.conv)
    n.relu = L.ReLU(n.bn, in_place=True)
    n.ip = L.InnerProduct(n.relu, num_output=3, weight_filler=dict(type="gaussian", std=0.1))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    net = caffe.Net(n.to_proto(), caffe.TRAIN)
    net.blobs["data"].data[...] = X
    net.blobs["label"].data[...] = labels
    bn_layer = net.layer_by_name["BatchNorm1"]
    scale_before = np.array(net.params["Scale1"][0].data, copy=True)

    lr = 0.2
    losses = []
    for _ in range(60):
        net.clear_param_diffs()
        losses.append(net.forward_backward())
        for blob, spec in net.learnable_params:
            if spec.lr_mult:
                blob.data[...] -= lr * spec.lr_mult * blob.diff
    assert losses[-1] < 0.25 * losses[0], losses[::10]
    assert float(bn_layer.blobs[2].data[0]) > 0                 # running stats accumulated
    assert not np.allclose(net.params["Scale1"][0].data, scale_before)   # gamma learned
    # BatchNorm's statistics are not learned (lr_mult 0): no update path touches them.
    specs = [s for b, s in net.learnable_params if any(b is x for x in bn_layer.blobs)]
    assert specs and all(s.lr_mult == 0 for s in specs)


# -- models/cifar10_bn/train_val.prototxt from its NetSpec script --------------------------
def _load_script():
    path = os.path.join(ROOT, "models", "cifar10_bn", "make_train_val.py")
    spec = importlib.util.spec_from_file_location("make_cifar10_bn_train_val", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cifar10_bn_script_reproduces_committed_train_val():
    mod = _load_script()
    path = os.path.join(ROOT, "models", "cifar10_bn", "train_val.prototxt")
    with open(path) as f:
        committed_text = f.read()
    committed = text_format.Parse(committed_text, caffe_pb2.NetParameter())
    generated = mod.make_net()
    assert generated == committed
    # Text: identical up to the order of fields inside a message (protobuf prints by field
    # number; the committed file puts bias_term after stride in convolution_param).
    assert mod.make_text() == str(committed)
    key = [(l.name, l.type) for l in generated.layer]
    assert key[:2] == [("cifar", "Data"), ("cifar", "Data")]
    assert [l.include[0].phase for l in generated.layer[:2]] == [caffe.TRAIN, caffe.TEST]
    assert all(l.data_param.backend == caffe_pb2.DataParameter.LMDB
               for l in generated.layer[:2])
    convs = [l for l in generated.layer if l.type == "Convolution"]
    assert len(convs) == 3 and not any(c.convolution_param.bias_term for c in convs)
    for l in generated.layer:
        if l.type in ("BatchNorm", "Scale", "Bias", "ReLU"):
            assert list(l.bottom) == list(l.top)

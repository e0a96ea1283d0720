"""Net wiring: phase rules, in place, automatic splits, loss weights, propagate_down,
parameter sharing, weights I/O and error messages. Uses tiny layers defined here so the
expected gradients are closed forms."""
import logging

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.layer import Layer, register
from minicaffe.proto import caffe_pb2
from doubling_layer import Doubling


@register("TestMul")
class _Mul(Layer):
    """y = x * w, w of shape x.shape[1:] (filled with 2)."""
    exact_num_bottom = exact_num_top = 1

    def layer_setup(self, bottom, top):
        if not self.blobs:
            self.blobs = [self.make_param_blob(bottom[0].shape[1:],
                                               caffe_pb2.FillerParameter(type="constant", value=2))]

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].xdata[...] = bottom[0].xdata * self.blobs[0].xdata

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].xdiff[...] += (top[0].xdiff * bottom[0].xdata).sum(0)
        if propagate_down[0]:
            bottom[0].xdiff[...] = top[0].xdiff * self.blobs[0].xdata
        self.calls = getattr(self, "calls", 0) + 1


@register("TestDouble")
class _Double(Doubling):
    exact_num_bottom = exact_num_top = 1


@register("TestSumSqLoss")
class _SumSqLoss(Layer):
    """loss = 0.5 * sum(x^2)."""
    exact_num_bottom = exact_num_top = 1
    is_loss = True

    def reshape(self, bottom, top):
        top[0].reshape(())

    def forward(self, bottom, top):
        top[0].xdata[...] = 0.5 * (bottom[0].xdata ** 2).sum()

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].xdiff[...] = top[0].xdiff * bottom[0].xdata


def net_from(text, phase=caffe.TRAIN, **kw):
    from google.protobuf import text_format
    p = text_format.Parse(text, caffe_pb2.NetParameter())
    return caffe.Net(p, phase, **kw)


INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
X = np.arange(6, dtype=np.float32).reshape(2, 3) - 2


def test_phase_stage_and_level_rules():
    text = INPUT + """
    layer { name: "a" type: "TestDouble" bottom: "x" top: "a" include { phase: TRAIN } }
    layer { name: "b" type: "TestDouble" bottom: "x" top: "b" include { phase: TEST } }
    layer { name: "c" type: "TestDouble" bottom: "x" top: "c" include { stage: "deploy" } }
    layer { name: "d" type: "TestDouble" bottom: "x" top: "d" exclude { min_level: 2 } }
    layer { name: "e" type: "TestDouble" bottom: "x" top: "e" include { not_stage: "deploy" } }
    """
    n = net_from(text, caffe.TRAIN)
    names = [l for l in n._layer_names if not l.endswith("_split")]
    assert names == ["in", "a", "d", "e"]
    names = [l for l in net_from(text, caffe.TEST, stages=["deploy"], level=3)._layer_names
             if not l.endswith("_split")]
    assert names == ["in", "b", "c"]


@pytest.mark.parametrize("layer, message", [
    ('layer { name: "a" type: "TestDouble" bottom: "x" top: "a" '
     'include { phase: TRAIN } exclude { phase: TEST } }', "either include rules or exclude"),
    ('layer { name: "m" type: "TestMul" bottom: "x" top: "y" '
     'param { lr_mult: 1 } param { lr_mult: 2 } }',
     "m: 2 param specs given, layer has 1 parameter blob"),
], ids=["include_and_exclude_together", "too_many_param_specs"])
def test_bad_layer_definition_is_rejected(layer, message):
    with pytest.raises(caffe.LayerError, match=message):
        net_from(INPUT + layer)


def test_in_place_shares_the_blob_and_gradients_flow():
    n = net_from(INPUT + """
    layer { name: "m" type: "TestMul" bottom: "x" top: "y" }
    layer { name: "d" type: "TestDouble" bottom: "y" top: "y" }
    layer { name: "loss" type: "TestSumSqLoss" bottom: "y" top: "loss" }""")
    assert n.layers[2].__class__.__name__ == "_Double"
    n.blobs["x"].data[...] = X
    loss = n.forward()["loss"]
    y = 4 * X  # 2 * (x * 2)
    assert np.isclose(float(loss), 0.5 * (y ** 2).sum())
    n.backward()
    # dL/dw = sum_n dL/dy_final * 2 * x
    np.testing.assert_allclose(n.params["m"][0].diff, (y * 2 * X).sum(0), rtol=1e-6)


def test_fan_out_inserts_caffe_named_splits_and_sums_gradients():
    n = net_from(INPUT + """
    layer { name: "m" type: "TestMul" bottom: "x" top: "y" }
    layer { name: "l1" type: "TestSumSqLoss" bottom: "y" top: "l1" }
    layer { name: "l2" type: "TestSumSqLoss" bottom: "y" top: "l2" loss_weight: 3 }""")
    assert "y_m_0_split" in n._layer_names
    assert n.top_names["y_m_0_split"] == ["y_m_0_split_0", "y_m_0_split_1"]
    n.blobs["x"].data[...] = X
    out = n.forward()
    y = 2 * X
    assert np.isclose(float(out["l1"]), 0.5 * (y ** 2).sum())
    assert n.blob_loss_weights["l2"] == 3
    assert np.isclose(n._last_loss, 4 * 0.5 * (y ** 2).sum(), rtol=1e-6)
    n.backward()
    # dL/dy = (1 + 3) y, so dL/dw = sum_n 4 y x.
    np.testing.assert_allclose(n.params["m"][0].diff, (4 * y * X).sum(0), rtol=1e-6)


def test_propagate_down_false_skips_bottom_gradient():
    n = net_from(INPUT + """
    layer { name: "m1" type: "TestMul" bottom: "x" top: "y" }
    layer { name: "m2" type: "TestMul" bottom: "y" top: "z" propagate_down: false }
    layer { name: "loss" type: "TestSumSqLoss" bottom: "z" top: "loss" }""")
    assert n._bottom_need_backward[2] == [False]
    # m1 does not contribute through m2 any more, so it needs no backward at all.
    assert not n.layer_need_backward(1)
    n.blobs["x"].data[...] = X
    n.forward()
    n.params["m1"][0].diff[...] = 0
    n.backward()
    assert np.all(n.params["m1"][0].diff == 0)
    assert np.any(n.params["m2"][0].diff != 0)


def test_lr_mult_zero_means_no_gradient_and_no_backward():
    n = net_from(INPUT + """
    layer { name: "m1" type: "TestMul" bottom: "x" top: "y" param { lr_mult: 0 } }
    layer { name: "m2" type: "TestMul" bottom: "y" top: "z" }
    layer { name: "loss" type: "TestSumSqLoss" bottom: "z" top: "loss" }""")
    assert not n.layer_need_backward(1)
    assert n._bottom_need_backward[2] == [False]
    assert n.layers[1].param_propagate_down == [False]
    assert len(n.learnable_params) == 2


def test_parameter_sharing_by_name_accumulates_gradients():
    n = net_from(INPUT + """
    layer { name: "m1" type: "TestMul" bottom: "x" top: "y" param { name: "w" } }
    layer { name: "m2" type: "TestMul" bottom: "y" top: "z" param { name: "w" } }
    layer { name: "loss" type: "TestSumSqLoss" bottom: "z" top: "loss" }""")
    assert n.params["m1"][0] is n.params["m2"][0]
    assert len(n.learnable_params) == 1
    n.blobs["x"].data[...] = X
    n.forward()
    n.clear_param_diffs()
    n.backward()
    # z = w^2 x, L = 0.5 sum z^2, dL/dw = sum_n z * 2 w x = sum 8 x * 4 x
    np.testing.assert_allclose(n.params["m1"][0].diff, (2 * 2 * X * (4 * X)).sum(0), rtol=1e-6)


def test_force_backward_uses_user_diffs():
    n = net_from("force_backward: true\n" + INPUT +
                 'layer { name: "d" type: "TestDouble" bottom: "x" top: "y" }')
    n.forward(x=X)
    diffs = n.backward(y=np.ones((2, 3)))
    np.testing.assert_array_equal(diffs["x"], 2 * np.ones((2, 3)))


def test_no_loss_means_no_backward_without_force():
    n = net_from(INPUT + 'layer { name: "d" type: "TestDouble" bottom: "x" top: "y" }')
    assert not any(n.layer_need_backward(i) for i in range(len(n.layers)))


def test_legacy_input_dim_becomes_input_layer():
    n = net_from('input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5\n'
                 'layer { name: "d" type: "TestDouble" bottom: "data" top: "y" }', caffe.TEST)
    assert n.inputs == ["data"] and n.blobs["data"].shape == (1, 3, 4, 5)
    assert n.outputs == ["y"]
    n2 = net_from('input: "a" input_shape { dim: 2 dim: 7 }\n', caffe.TEST)
    assert n2.blobs["a"].shape == (2, 7)


def test_reshape_input_then_net_reshape():
    n = net_from(INPUT + 'layer { name: "d" type: "TestDouble" bottom: "x" top: "y" }')
    n.blobs["x"].reshape(5, 3)
    n.reshape()
    assert n.blobs["y"].shape == (5, 3)
    out = n.forward(x=np.ones((5, 3)))
    assert out["y"].shape == (5, 3) and np.all(out["y"] == 2)


def test_forward_with_wrong_input_shape_names_both_shapes():
    n = net_from(INPUT + 'layer { name: "d" type: "TestDouble" bottom: "x" top: "y" }')
    with pytest.raises(caffe.ShapeError, match=r"\(4, 3\).*\(2, 3\)"):
        n.forward(x=np.ones((4, 3)))


def test_caffemodel_round_trip_and_pycaffe_constructors(tmp_path):
    text = INPUT + 'layer { name: "m" type: "TestMul" bottom: "x" top: "y" }'
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    n = caffe.Net(str(proto), caffe.TRAIN)
    n.params["m"][0].data[...] = [1.5, -2, 7]
    path = tmp_path / "w.caffemodel"
    n.save(str(path))
    m = caffe_pb2.NetParameter()
    m.ParseFromString(path.read_bytes())
    assert [l.name for l in m.layer] == ["in", "m"]
    assert list(m.layer[1].blobs[0].shape.dim) == [3]
    for n2 in (caffe.Net(str(proto), str(path), caffe.TEST),
               caffe.Net(str(proto), caffe.TEST, weights=str(path))):
        np.testing.assert_array_equal(n2.params["m"][0].data, [1.5, -2, 7])
    # Writing again gives identical bytes.
    n2.save(str(tmp_path / "w2.caffemodel"))
    m2 = caffe_pb2.NetParameter()
    m2.ParseFromString((tmp_path / "w2.caffemodel").read_bytes())
    assert m2.layer[1].blobs[0] == m.layer[1].blobs[0]


def test_copy_from_shape_mismatch_and_ignored_layers(tmp_path, caplog):
    src = net_from('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }'
                   'layer { name: "m" type: "TestMul" bottom: "x" top: "y" }'
                   'layer { name: "extra" type: "TestMul" bottom: "y" top: "z" }')
    path = str(tmp_path / "src.caffemodel")
    src.save(path)
    dst = net_from(INPUT + 'layer { name: "m" type: "TestMul" bottom: "x" top: "y" }')
    with pytest.raises(caffe.ShapeError, match=r"layer 'm'.*\(4,\).*\(3,\)"):
        dst.copy_from(path)
    ok = net_from('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }'
                  'layer { name: "m" type: "TestMul" bottom: "x" top: "y" }')
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        ok.copy_from(path)
    assert "Ignoring source layer extra" in caplog.text


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(caffe.LayerError, match="layer 'd': unknown bottom blob 'nope'"):
        net_from(INPUT + 'layer { name: "d" type: "TestDouble" bottom: "nope" top: "y" }')
    with pytest.raises(caffe.LayerError, match="layer 'q': unknown layer type 'Quux'"):
        net_from(INPUT + 'layer { name: "q" type: "Quux" bottom: "x" top: "y" }')
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  typo: "b"\n}\n')
    with pytest.raises(caffe.PrototxtError, match=r"bad\.prototxt:4:3: .*typo"):
        caffe.Net(str(bad), caffe.TRAIN)
    with pytest.raises(caffe.MiniCaffeError, match="missing.prototxt: no such file"):
        caffe.Net(str(tmp_path / "missing.prototxt"), caffe.TRAIN)
    with pytest.raises(caffe.MiniCaffeError, match="nothere.caffemodel: no such file"):
        net_from(INPUT).copy_from(str(tmp_path / "nothere.caffemodel"))


def test_loss_layer_without_top_gets_an_automatic_one():
    n = net_from('layer { name: "in" type: "Input" top: "x" top: "y" input_param { '
                 'shape { dim: 2 dim: 3 } shape { dim: 2 } } }\n'
                 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" }')
    n.blobs["x"].data[...] = [[1, 2, 3], [0, 0, 0]]
    n.blobs["y"].data[...] = [2, 1]
    n.forward()
    want = (-np.log(np.exp(3) / np.exp([1, 2, 3]).sum()) + np.log(3)) / 2
    assert np.isclose(n._last_loss, want, rtol=1e-5)
    assert n.outputs == []

"""type: "Python" layers: a user module (written to a temporary directory, as a user's file
would be) loaded from a prototxt, forward and backward, parameters, param_str and phase."""
import logging
import textwrap

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import LayerError
from gradcheck import check_gradients

USER_MODULE = '''
import json

import numpy as np
import minicaffe as caffe
from doubling_layer import Doubling


class EuclideanLossLayer(caffe.Layer):
    """pycaffe's examples/pycaffe/layers/pyloss.py, in the user's own words (scaled by the
    top diff, so it is right for any loss_weight)."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = sign * top[0].diff[0] * self.diff / bottom[i].num


class ChannelScaleLayer(caffe.Layer):
    """y[n, c, ...] = w[c] * x[n, c, ...] with a learned w, initial value from param_str."""

    def setup(self, bottom, top):
        params = json.loads(self.param_str or "{}")
        self.seen_phase = self.phase
        if len(self.blobs) == 0:
            self.blobs.add_blob(bottom[0].shape[1])
            self.blobs[0].data[...] = params.get("init", 1.0)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def _w(self, x):
        return self.blobs[0].data.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self._w(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        x, dy = bottom[0].data, top[0].diff
        axes = (0,) + tuple(range(2, x.ndim))
        self.blobs[0].diff[...] += (dy * x).sum(axis=axes)
        if propagate_down[0]:
            bottom[0].diff[...] = dy * self._w(x)


class NativeStyleDouble(Doubling):
    """Written in minicaffe's own verbs (layer_setup, not setup; xdata/xdiff in Doubling)."""

    def layer_setup(self, bottom, top):
        self.was_set_up = True


class ForwardOnly(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
'''

NET = '''
name: "pynet"
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 dim: 4 } } }
layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 3 dim: 2 dim: 4 } } }
layer {
  name: "scale" type: "Python" bottom: "x" top: "y"
  python_param { module: "user_pylayers" layer: "ChannelScaleLayer"
                 param_str: "{\\"init\\": 1.5}" share_in_parallel: true }
}
layer {
  name: "loss" type: "Python" bottom: "y" bottom: "t" top: "loss"
  python_param { module: "user_pylayers" layer: "EuclideanLossLayer" }
  loss_weight: 1
}
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_pylayers.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(NET)
    return net_file


def python_layer_text(cls, param_str=""):
    quoted = '"' + param_str.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (f'type: "Python" python_param {{ module: "user_pylayers" layer: "{cls}" '
            f'param_str: {quoted} }}')


def test_forward_backward_from_prototxt(user_module):
    net = caffe.Net(str(user_module), caffe.TRAIN)
    rs = np.random.RandomState(3)
    x = rs.standard_normal((3, 2, 4)).astype(np.float32)
    t = rs.standard_normal((3, 2, 4)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.blobs["t"].data[...] = t
    w = np.array([1.5, 1.5])
    out = net.forward()
    y = x * w[None, :, None]
    expected_loss = ((y - t) ** 2).sum() / 3 / 2
    assert out["loss"].shape == (1,)
    assert out["loss"][0] == pytest.approx(expected_loss, rel=1e-5)
    assert float(net.forward_from_to()) == pytest.approx(expected_loss, rel=1e-5)  # weight 1

    net.clear_param_diffs()
    net.forward_backward()
    dy = (y - t) / 3
    np.testing.assert_allclose(net.layer_by_name["scale"].blobs[0].diff,
                               (dy * x).sum(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    assert net.params["scale"][0].shape == (2,)
    assert net.layer_by_name["scale"].impl.seen_phase == caffe.TRAIN
    assert net.layer_by_name["scale"].impl.param_str == '{"init": 1.5}'
    # The gradient reaches the input when asked for.
    grads = net.backward(diffs=["x"])
    np.testing.assert_allclose(grads["x"], dy * w[None, :, None], rtol=1e-5, atol=1e-6)


def test_phase_and_weights_round_trip(user_module, tmp_path):
    net = caffe.Net(str(user_module), caffe.TEST)
    assert net.layer_by_name["scale"].impl.seen_phase == caffe.TEST
    net.params["scale"][0].data[...] = [0.25, -4.0]
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    again = caffe.Net(str(user_module), str(weights), caffe.TEST)
    np.testing.assert_array_equal(again.params["scale"][0].data, [0.25, -4.0])


def test_gradients_of_python_layers(user_module):
    rs = np.random.RandomState(0)
    x = rs.standard_normal((2, 3, 5))
    check_gradients(python_layer_text("ChannelScaleLayer", '{"init": 0.7}'), [x])
    check_gradients(python_layer_text("EuclideanLossLayer"),
                    [x, rs.standard_normal((2, 3, 5))])
    check_gradients(python_layer_text("NativeStyleDouble"), [x])


def test_in_place_python_layer(user_module):
    rs = np.random.RandomState(1)
    x = rs.standard_normal((2, 3, 2))
    layer = check_gradients(python_layer_text("ChannelScaleLayer", '{"init": -2}'), [x],
                            in_place=True, check_params=False)
    assert layer.blobs[0].data.tolist() == [-2.0, -2.0, -2.0]


def test_native_style_class_and_missing_backward(user_module):
    from gradcheck import setup_layer, layer_param
    layer, bottom, top = setup_layer(layer_param(python_layer_text("NativeStyleDouble")),
                                     [np.ones((2, 2))])
    assert layer.impl.was_set_up
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, 2 * np.ones((2, 2)))
    layer, bottom, top = setup_layer(layer_param(python_layer_text("ForwardOnly")),
                                     [np.ones((2, 2))])
    layer.forward(bottom, top)
    with pytest.raises(LayerError, match="ForwardOnly defines no backward"):
        layer.backward(top, [True], bottom)


def test_user_errors(user_module):
    from gradcheck import layer_param
    from minicaffe.layer import create_layer
    with pytest.raises(LayerError, match="no_such_module"):
        create_layer(layer_param('type: "Python" python_param { module: "no_such_module" '
                                 'layer: "X" }'))
    with pytest.raises(LayerError, match="has no class 'Nope'"):
        create_layer(layer_param(python_layer_text("Nope")))
    from gradcheck import setup_layer
    with pytest.raises(LayerError, match="EuclideanLossLayer.setup failed: Exception: Need two"):
        setup_layer(layer_param(python_layer_text("EuclideanLossLayer")), [np.ones(3)])
    with pytest.raises(LayerError, match="needs both 'module' and 'layer'"):
        create_layer(layer_param('type: "Python" python_param { module: "user_pylayers" }'))


def test_module_found_in_current_directory(tmp_path, monkeypatch, caplog):
    d = tmp_path / "work"
    d.mkdir()
    (d / "cwd_pylayers.py").write_text(textwrap.dedent('''
        import minicaffe as caffe
        class Neg(caffe.Layer):
            def setup(self, bottom, top): pass
            def reshape(self, bottom, top): top[0].reshape(*bottom[0].shape)
            def forward(self, bottom, top): top[0].data[...] = -bottom[0].data
            def backward(self, top, pd, bottom): bottom[0].diff[...] = -top[0].diff
    '''))
    monkeypatch.chdir(d)
    import sys
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(d))])
    from gradcheck import setup_layer, layer_param
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        layer, bottom, top = setup_layer(layer_param(
            'type: "Python" python_param { module: "cwd_pylayers" layer: "Neg" }'),
            [np.arange(3.0)])
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, -np.arange(3.0))
    assert "current directory" in caplog.text


def test_python_layer_from_net_spec(user_module):
    from minicaffe.net_spec import NetSpec, layers as L
    n = NetSpec()
    n.x = L.Input(shape=dict(dim=[2, 3]))
    n.y = L.Python(n.x, module="user_pylayers", layer="ChannelScaleLayer",
                   param_str='{"init": 3.0}')
    proto = n.to_proto()
    assert proto.layer[1].python_param.layer == "ChannelScaleLayer"
    net = caffe.Net(proto, caffe.TEST)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(net.forward(x=x)["y"], 3 * x)

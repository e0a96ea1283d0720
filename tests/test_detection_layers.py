"""SSD's Normalize, Permute, PriorBox and DetectionOutput against hand-computed values."""
import math

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import LayerError
from minicaffe.proto import caffe_pb2
from tests.gradcheck import check_gradients, layer_param, setup_layer

rs = np.random.RandomState(3)


def run(text, arrays, dtype=np.float64):
    layer, bottom, top = setup_layer(layer_param(text), arrays, dtype=dtype)
    layer.forward(bottom, top)
    return layer, top[0].data.copy()


# -- Normalize ---------------------------------------------------------------------------------
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_normalize_forward_matches_loops(across, shared):
    x = rs.standard_normal((2, 3, 2, 3))
    text = (f'type: "Normalize" norm_param {{ across_spatial: {str(across).lower()} '
            f'channel_shared: {str(shared).lower()} eps: 0.001 }}')
    layer, bottom, tops = setup_layer(layer_param(text), [x])
    scale = np.array(2.5) if shared else np.array([0.5, 2.0, -1.0])
    layer.blobs[0].data[...] = scale
    layer.forward(bottom, tops)
    want = np.empty_like(x)
    eps = float(np.float32(0.001))
    for n in range(2):
        for c in range(3):
            for h in range(2):
                for w in range(3):
                    if across:
                        sq = sum(x[n, k, i, j] ** 2 for k in range(3) for i in range(2)
                                 for j in range(3))
                    else:
                        sq = sum(x[n, k, h, w] ** 2 for k in range(3))
                    s = scale if shared else scale[c]
                    want[n, c, h, w] = s * x[n, c, h, w] / math.sqrt(sq + eps)
    np.testing.assert_allclose(tops[0].data, want, rtol=1e-12)


def test_normalize_default_scale_and_blob_shapes():
    x = rs.standard_normal((1, 4, 2, 2))
    layer, _ = run('type: "Normalize"', [x])
    assert layer.blobs[0].shape == () and float(layer.blobs[0].data) == 1.0
    layer, _ = run('type: "Normalize" norm_param { channel_shared: false '
                   'scale_filler { type: "constant" value: 20 } }', [x])
    assert layer.blobs[0].shape == (4,)
    np.testing.assert_array_equal(layer.blobs[0].data, 20.0)


@pytest.mark.parametrize("across", ["true", "false"])
@pytest.mark.parametrize("shared", ["true", "false"])
def test_normalize_gradients(across, shared):
    x = rs.standard_normal((2, 3, 3, 2))
    check_gradients(f'type: "Normalize" norm_param {{ across_spatial: {across} '
                    f'channel_shared: {shared} scale_filler {{ type: "gaussian" std: 1 }} }}',
                    [x])


# -- Permute -----------------------------------------------------------------------------------
def test_permute_completes_the_order_and_transposes():
    x = rs.standard_normal((2, 3, 4, 5))
    layer, top = run('type: "Permute" permute_param { order: 0 order: 2 }', [x])
    assert layer.order == (0, 2, 1, 3)
    for idx in np.ndindex(*top.shape):
        n, h, c, w = idx
        assert top[idx] == x[n, c, h, w]
    _, top = run('type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }', [x])
    assert top.shape == (2, 4, 5, 3) and top[1, 2, 3, 0] == x[1, 0, 2, 3]


def test_permute_gradients_and_errors():
    x = rs.standard_normal((2, 3, 2, 4))
    check_gradients('type: "Permute" permute_param { order: 3 order: 0 order: 2 }', [x])
    with pytest.raises(LayerError, match="duplicate"):
        run('type: "Permute" permute_param { order: 1 order: 1 }', [x])
    with pytest.raises(LayerError, match="less than"):
        run('type: "Permute" permute_param { order: 4 }', [x])


# -- PriorBox ----------------------------------------------------------------------------------
def _box(cx, cy, w, h, img=8.0):
    return [(cx - w / 2) / img, (cy - h / 2) / img, (cx + w / 2) / img, (cy + h / 2) / img]


def test_priorbox_2x2_map_by_hand():
    feat, img = np.zeros((1, 1, 2, 2)), np.zeros((1, 3, 8, 8))
    _, top = run('type: "PriorBox" prior_box_param { min_size: 4 max_size: 9 aspect_ratio: 2 '
                 'flip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }',
                 [feat, img])
    r2 = math.sqrt(2.0)
    want = []
    for cy in (2.0, 6.0):            # step 8 / 2 = 4, offset 0.5
        for cx in (2.0, 6.0):
            want += _box(cx, cy, 4, 4)               # min_size
            want += _box(cx, cy, 6, 6)               # sqrt(4 * 9)
            want += _box(cx, cy, 4 * r2, 4 / r2)     # aspect ratio 2
            want += _box(cx, cy, 4 / r2, 4 * r2)     # flipped: 1/2
    assert top.shape == (1, 2, 64)
    np.testing.assert_allclose(top[0, 0], want, atol=1e-6)
    np.testing.assert_allclose(top[0, 1], [0.1, 0.1, 0.2, 0.2] * 16, atol=1e-7)


def test_priorbox_clip_step_img_size_and_single_variance():
    feat, img = np.zeros((1, 1, 2, 2)), np.zeros((1, 3, 5, 5))
    _, top = run('type: "PriorBox" prior_box_param { min_size: 6 clip: true img_size: 8 '
                 'step: 4 offset: 0.5 }', [feat, img])
    want = []
    for cy in (2.0, 6.0):
        for cx in (2.0, 6.0):
            want += [min(max(v, 0.0), 1.0) for v in _box(cx, cy, 6, 6)]
    np.testing.assert_allclose(top[0, 0], want, atol=1e-7)
    np.testing.assert_allclose(top[0, 1], 0.1, atol=1e-8)
    with pytest.raises(LayerError, match="min_size"):
        run('type: "PriorBox" prior_box_param { max_size: 3 }', [feat, img])
    with pytest.raises(LayerError, match="not both"):
        run('type: "PriorBox" prior_box_param { min_size: 2 step: 2 step_h: 2 step_w: 2 }',
            [feat, img])


# -- DetectionOutput ---------------------------------------------------------------------------
PRIORS = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9]])


def _prior_blob(var=(0.1, 0.1, 0.2, 0.2)):
    return np.stack([PRIORS.ravel(), np.tile(var, 3)])[None]


def test_detection_output_nms_per_class_center_size():
    # zero offsets decode to the priors themselves; priors 0 and 1 overlap with IoU ~0.90
    loc = np.zeros((1, 12))
    conf = np.array([[0.1, 0.8, 0.1,    # prior 0: background, class 1, class 2
                      0.2, 0.7, 0.3,    # prior 1
                      0.5, 0.1, 0.4]])  # prior 2
    text = ('type: "DetectionOutput" detection_output_param { num_classes: 3 '
            'code_type: CENTER_SIZE nms_param { nms_threshold: 0.45 } '
            'confidence_threshold: 0.15 }')
    _, top = run(text, [loc, conf.reshape(1, 9), _prior_blob()])
    rows = top.reshape(-1, 7)
    want = [[0, 1, 0.8] + list(PRIORS[0]),      # class 1: prior 1 suppressed by prior 0
            [0, 2, 0.4] + list(PRIORS[2]),      # class 2: prior 2 first, then prior 1
            [0, 2, 0.3] + list(PRIORS[1])]      # (prior 0's 0.1 is under the threshold)
    np.testing.assert_allclose(rows, want, atol=1e-6)


def test_detection_output_corner_code_keep_top_k_and_empty():
    loc = np.zeros((2, 3, 4))
    loc[0, 2] = [1.0, -1.0, 0.5, 0.5]
    conf = np.zeros((2, 3, 2))
    conf[0, :, 1] = [0.9, 0.2, 0.6]
    text = ('type: "DetectionOutput" detection_output_param { num_classes: 2 code_type: CORNER '
            'keep_top_k: 2 confidence_threshold: 0.01 nms_param { nms_threshold: 0.5 } }')
    _, top = run(text, [loc.reshape(2, 12), conf.reshape(2, 6), _prior_blob()])
    rows = top.reshape(-1, 7)
    decoded = PRIORS[2] + np.array([0.1, 0.1, 0.2, 0.2]) * [1.0, -1.0, 0.5, 0.5]
    # image 0: priors 0 (0.9) and 2 (0.6) survive, prior 1 overlaps 0; image 1: nothing
    np.testing.assert_allclose(rows, [[0, 1, 0.9] + list(PRIORS[0]),
                                      [0, 1, 0.6] + list(decoded)], atol=1e-6)
    _, top = run(text, [loc.reshape(2, 12), np.zeros((2, 6)), _prior_blob()])
    np.testing.assert_array_equal(top.reshape(-1, 7), [[0] + [-1] * 6, [1] + [-1] * 6])


def test_detection_output_checks_counts():
    with pytest.raises(LayerError, match="location predictions"):
        run('type: "DetectionOutput" detection_output_param { num_classes: 2 }',
            [np.zeros((1, 8)), np.zeros((1, 6)), _prior_blob()])
    with pytest.raises(LayerError, match="num_classes"):
        run('type: "DetectionOutput"', [np.zeros((1, 12)), np.zeros((1, 6)), _prior_blob()])


# -- in a net, and in a .caffemodel ------------------------------------------------------------
SSD_HEAD = """
name: "ssd_head"
force_backward: true
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1
                            weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "conv_norm" type: "Normalize" bottom: "conv" top: "conv_norm"
        norm_param { across_spatial: false channel_shared: false
                     scale_filler { type: "constant" value: 20 } } }
layer { name: "loc" type: "Convolution" bottom: "conv_norm" top: "loc"
        convolution_param { num_output: 8 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "conv_norm" top: "conf"
        convolution_param { num_output: 6 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "conf_rs" type: "Reshape" bottom: "conf_flat" top: "conf_rs"
        reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "conf_sm" type: "Softmax" bottom: "conf_rs" top: "conf_sm"
        softmax_param { axis: 2 } }
layer { name: "conf_out" type: "Flatten" bottom: "conf_sm" top: "conf_out" }
layer { name: "priors" type: "PriorBox" bottom: "conv_norm" bottom: "data" top: "priors"
        prior_box_param { min_size: 3 aspect_ratio: 2 flip: false clip: false
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "det" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_out"
        bottom: "priors" top: "det"
        include { phase: TEST }
        detection_output_param { num_classes: 3 share_location: true background_label_id: 0
                                 nms_param { nms_threshold: 0.45 top_k: 10 }
                                 code_type: CENTER_SIZE keep_top_k: 5
                                 confidence_threshold: 0.01 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv_norm" bottom: "conv"
        top: "loss" include { phase: TRAIN } }
"""


def _write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_ssd_head_runs_forward_and_backward(tmp_path):
    path = _write(tmp_path, SSD_HEAD)
    test_net = caffe.Net(path, caffe.TEST)
    test_net.blobs["data"].data[...] = rs.standard_normal((1, 3, 8, 8))
    det = test_net.forward()["det"]
    assert det.shape[:2] == (1, 1) and det.shape[3] == 7 and 1 <= det.shape[2] <= 5
    assert test_net.blobs["priors"].shape == (1, 2, 4 * 4 * 2 * 4)
    train = caffe.Net(path, caffe.TRAIN)
    train.blobs["data"].data[...] = rs.standard_normal((1, 3, 8, 8))
    train.forward()
    train.backward()
    assert np.abs(train.params["conv_norm"][0].diff).sum() > 0
    assert np.abs(train.blobs["data"].diff).sum() > 0


def test_normalize_scale_round_trips_through_caffemodel(tmp_path):
    text = SSD_HEAD.replace("channel_shared: false", "channel_shared: true")
    for net_text in (SSD_HEAD, text):
        path = _write(tmp_path, net_text)
        net = caffe.Net(path, caffe.TEST)
        scale = net.params["conv_norm"][0]
        scale.data[...] = np.arange(1, scale.count + 1).reshape(scale.shape) * 1.5
        weights = str(tmp_path / "w.caffemodel")
        net.save(weights)
        saved = caffe_pb2.NetParameter()
        saved.ParseFromString(open(weights, "rb").read())
        blob = next(lp for lp in saved.layer if lp.name == "conv_norm").blobs[0]
        assert list(blob.shape.dim) == list(scale.shape)
        again = caffe.Net(path, caffe.TEST, weights=weights)
        np.testing.assert_array_equal(again.params["conv_norm"][0].data, scale.data)

"""What tests/test_fuzz.py found, kept as plain regressions: each input once raised a raw
Python error (or a LayerError wrapping one) and now runs as Caffe runs it, or fails with a
LayerError naming the layer and what is wrong."""
import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe
from minicaffe.proto import caffe_pb2

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NaN from empty batches


def _net(layer, shapes, num_top=1):
    """An Input layer with one top b<i> per shape in ``shapes`` (None: no Input layer), then
    layer "l" on those bottoms with tops t0..; force_backward so every backward runs."""
    lines = ["force_backward: true"]
    if shapes is not None:
        tops = " ".join(f'top: "b{i}"' for i in range(len(shapes)))
        dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in sh) + " }" for sh in shapes)
        lines.append(f'layer {{ name: "in" type: "Input" {tops} input_param {{ {dims} }} }}')
    bottoms = " ".join(f'bottom: "b{i}"' for i in range(len(shapes or ())))
    tops = " ".join(f'top: "t{i}"' for i in range(num_top))
    lines.append(f'layer {{ name: "l" {layer} {bottoms} {tops} }}')
    return text_format.Parse("\n".join(lines), caffe_pb2.NetParameter())


def _forward_backward(param, fill):
    net = minicaffe.Net(param, minicaffe.TRAIN)
    for name in net.inputs:
        net.blobs[name].data[...] = fill
    net.forward()
    for name in net.outputs:
        net.blobs[name].diff[...] = 1
    net.backward()
    return net


@pytest.mark.parametrize("layer, expected", [
    # 0-axis bottoms (an Input without shape; Caffe's loss tops are 0-axis too)
    ('type: "BNLL"', lambda x: np.log1p(np.exp(x))),
    ('type: "TanH"', np.tanh),
    ('type: "ELU" elu_param { alpha: 0.7 }', lambda x: x if x > 0 else 0.7 * np.expm1(x)),
])
def test_elementwise_layers_take_a_0_axis_bottom(layer, expected):
    net = _forward_backward(_net(layer, [()]), 0.5)
    assert net.blobs["t0"].data.shape == ()
    np.testing.assert_allclose(net.blobs["t0"].data, expected(0.5), rtol=1e-6)


def test_exp_and_power_constants_overflow_as_in_c():
    # Caffe computes base^shift and shift^power with C's pow: inf or NaN, never an error.
    net = _forward_backward(_net('type: "Exp" exp_param { base: 2 shift: 1e30 }', [(2,)]), 0.0)
    assert np.all(np.isinf(net.blobs["t0"].data))
    net = _forward_backward(_net('type: "Power" power_param { power: 0.5 scale: 0 shift: -4 }',
                                 [(2,)]), 1.0)
    assert np.all(np.isnan(net.blobs["t0"].data))
    net = _forward_backward(_net('type: "Power" power_param { power: 2 scale: 0 shift: 3 }',
                                 [(2,)]), 1.0)
    np.testing.assert_array_equal(net.blobs["t0"].data, [9.0, 9.0])


@pytest.mark.parametrize("layer, shapes, top_shape", [
    ('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [(0, 7)], (0, 2, 2)),
    ('type: "Normalize"', [(0, 3, 4, 1)], (0, 3, 4, 1)),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }',
     [(0, 3, 9, 8)], (0, 3, 5, 5)),
    ('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [(0, 3, 5, 4)],
     (0, 3, 1, 1)),
    ('type: "SPP" spp_param { pyramid_height: 2 pool: AVE }', [(2, 0, 7, 5)], (2, 0)),
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 }', [(0, 2, 5, 5)],
     (0, 4, 3, 3)),
    ('type: "Deconvolution" convolution_param { num_output: 3 kernel_size: 3 }',
     [(1, 0, 4, 5)], (1, 3, 6, 7)),
    ('type: "Scale" scale_param { axis: 0 num_axes: 2 bias_term: true }', [(3, 4, 0), (3, 4)],
     (3, 4, 0)),
    ('type: "Softmax"', [(3, 0, 2)], (3, 0, 2)),
    ('type: "EuclideanLoss"', [(0, 3), (0, 3)], ()),
    ('type: "HingeLoss"', [(0, 4), (0,)], ()),
    ('type: "RNN" recurrent_param { num_output: 3 }', [(4, 0, 2), (4, 0)], (4, 0, 3)),
    ('type: "PriorBox" prior_box_param { min_size: 4 }', [(1, 2, 0, 3), (1, 3, 12, 12)],
     (1, 2, 0)),
])
def test_empty_batches_and_axes_run(layer, shapes, top_shape):
    # Caffe loops zero times over an empty axis; NumPy's -1 reshapes and max() do not.
    net = _forward_backward(_net(layer, shapes), 1.0)
    assert tuple(net.blobs["t0"].shape) == top_shape


@pytest.mark.parametrize("layer, shapes, message", [
    ('type: "PriorBox" prior_box_param { min_size: inf }', [(1, 2, 3, 3), (1, 3, 12, 12)],
     "min_size must be positive and finite"),
    ('type: "PriorBox" prior_box_param { min_size: 4 aspect_ratio: 0 flip: true }',
     [(1, 2, 3, 3), (1, 3, 12, 12)], "aspect_ratio must be positive and finite"),
    ('type: "PriorBox" prior_box_param { min_size: 4 max_size: nan }',
     [(1, 2, 3, 3), (1, 3, 12, 12)], "max_size must be greater than min_size"),
    ('type: "DummyData" dummy_data_param { num: 3 shape { dim: 2 } }', None,
     "Both shape and legacy fields were specified"),
    ('type: "DummyData" dummy_data_param { num: 3 num: 2 channels: 1 height: 1 width: 1 }',
     None, "Must specify 'num' once, or once per top blob"),
    ('type: "DetectionOutput" detection_output_param { num_classes: 3 }',
     [(2, 16), (2, 12), (0, 2, 16)], "the prior bottom holds 0 values"),
    ('type: "DetectionOutput" detection_output_param { num_classes: 3 '
     'background_label_id: -1 }', [(2, 16), (2, 12), (1, 2, 16)],
     "Could not find location predictions for label -1"),
])
def test_bad_parameters_fail_with_the_layer_named(layer, shapes, message):
    with pytest.raises(minicaffe.LayerError, match=message) as info:
        minicaffe.Net(_net(layer, shapes), minicaffe.TRAIN)
    assert "'l'" in str(info.value) and info.value.__cause__ is None


def test_dummy_data_legacy_dims_give_one_shape_per_top():
    net = minicaffe.Net(_net('type: "DummyData" dummy_data_param { num: 3 num: 2 channels: 4 '
                             'height: 1 width: 5 }', None, num_top=2), minicaffe.TRAIN)
    assert [tuple(net.blobs[t].shape) for t in ("t0", "t1")] == [(3, 4, 1, 5), (2, 4, 1, 5)]


def test_negative_and_too_many_axes_are_blob_size_errors():
    from minicaffe.blob import Blob
    from minicaffe.errors import BlobSizeError
    with pytest.raises(BlobSizeError, match="negative dimension"):
        Blob((2, -1))
    with pytest.raises(BlobSizeError, match="33 axes; at most 32"):
        Blob((1,) * 33)


def test_msra_and_xavier_fill_an_empty_blob():
    from minicaffe.fillers import filled_array
    from minicaffe.proto import caffe_pb2
    for kind in ("xavier", "msra"):
        assert filled_array((0, 5), caffe_pb2.FillerParameter(type=kind)).shape == (0, 5)


def test_pooling_window_offsets_of_a_huge_kernel_equal_a_scan_of_every_offset():
    from minicaffe.kernels import array_im2col as cols

    def scan(k, p, in_len, out_len):   # every offset, as the loop over the whole kernel does
        return [i for i in range(k) if cols._axis_offset(i - p, out_len, 1, in_len)]

    offsets = cols.window_offsets((65536, 9), (1, 1), (65535, 4), (9, 8), (9, 8))
    rows = sorted({k // 9 for k, _, _ in offsets})
    assert rows == scan(65536, 65535, 9, 9) and len(rows) == 9


def test_a_solverstate_whose_learned_net_is_not_utf8_is_named(tmp_path):
    from minicaffe.errors import MiniCaffeError
    from minicaffe.solvers.snapshot_files import learned_net_path
    with pytest.raises(MiniCaffeError, match="learned_net is not a UTF-8 path"):
        learned_net_path(str(tmp_path / "x.solverstate"), b"\xff\xfe")

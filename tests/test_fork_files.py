"""Files written for Caffe's forks: their fields parse, resize/noise run, the rest warn or stop."""
import logging

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe.data.fork_transforms import ForkTransforms
from minicaffe.data.image import encode_image
from minicaffe.data.data_transformer import DataTransformer
from minicaffe.errors import LayerError
from minicaffe.io.prototxt import read_prototxt
from minicaffe.proto import caffe_pb2 as pb

# Numbers from the forks' caffe.proto (SSD: weiliu89/caffe branch ssd).
FORK_NUMBERS = [
    (pb.TransformationParameter, "resize_param", 8), (pb.TransformationParameter,
                                                      "noise_param", 9),
    (pb.TransformationParameter, "emit_constraint", 10),
    (pb.TransformationParameter, "distort_param", 13),
    (pb.TransformationParameter, "expand_param", 14),
    (pb.LayerParameter, "annotated_data_param", 200), (pb.LayerParameter,
                                                       "multibox_loss_param", 201),
    (pb.LayerParameter, "permute_param", 202), (pb.LayerParameter, "prior_box_param", 203),
    (pb.LayerParameter, "detection_output_param", 204),
    (pb.LayerParameter, "detection_evaluate_param", 205), (pb.LayerParameter, "norm_param", 206),
]


@pytest.mark.parametrize("msg,name,number", FORK_NUMBERS)
def test_fork_field_numbers(msg, name, number):
    assert msg.DESCRIPTOR.fields_by_name[name].number == number


def test_fork_defaults():
    assert pb.NormalizeParameter().across_spatial and pb.NormalizeParameter().channel_shared
    assert np.isclose(pb.NormalizeParameter().eps, 1e-10)
    assert pb.PriorBoxParameter().flip and pb.PriorBoxParameter().offset == 0.5
    d = pb.DetectionOutputParameter()
    assert d.code_type == pb.PriorBoxParameter.CORNER and d.keep_top_k == -1
    assert np.isclose(d.nms_param.nms_threshold, 0.3) and d.nms_param.eta == 1.0
    assert pb.ResizeParameter().resize_mode == pb.ResizeParameter.WARP
    assert pb.NoiseParameter().jpeg == -1 and pb.APLParameter().sums == 2


SSD_TRAIN = """
name: "ssd_fork_file"
layer {
  name: "data" type: "AnnotatedData" top: "data" top: "label"
  include { phase: TRAIN }
  transform_param {
    mirror: true mean_value: 104 mean_value: 117 mean_value: 123
    resize_param { prob: 1 resize_mode: WARP height: 300 width: 300
                   interp_mode: LINEAR interp_mode: AREA interp_mode: NEAREST }
    emit_constraint { emit_type: CENTER }
    distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5
                    contrast_lower: 0.5 contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18
                    saturation_prob: 0.5 saturation_lower: 0.5 saturation_upper: 1.5
                    random_order_prob: 0.0 }
    expand_param { prob: 0.5 max_expand_ratio: 4.0 }
  }
  data_param { source: "trainval_lmdb" batch_size: 32 backend: LMDB }
  annotated_data_param {
    batch_sampler { max_sample: 1 max_trials: 1 }
    batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5
                              max_aspect_ratio: 2.0 }
                    sample_constraint { min_jaccard_overlap: 0.1 } max_sample: 1
                    max_trials: 50 }
    label_map_file: "labelmap_voc.prototxt"
  }
}
layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "mbox_loc" bottom: "mbox_conf"
  bottom: "mbox_priorbox" bottom: "label" top: "mbox_loss"
  propagate_down: true propagate_down: true propagate_down: false propagate_down: false
  loss_param { normalization: VALID }
  multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1.0
    num_classes: 21 share_location: true match_type: PER_PREDICTION overlap_threshold: 0.5
    use_prior_for_matching: true background_label_id: 0 use_difficult_gt: true
    neg_pos_ratio: 3.0 neg_overlap: 0.5 code_type: CENTER_SIZE ignore_cross_boundary_bbox: false
    mining_type: MAX_NEGATIVE } }
layer { name: "detection_eval" type: "DetectionEvaluate" bottom: "detection_out"
  bottom: "label" top: "detection_eval" include { phase: TEST }
  detection_evaluate_param { num_classes: 21 background_label_id: 0 overlap_threshold: 0.5
    evaluate_difficult_gt: false name_size_file: "test_name_size.txt" } }
layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc"
  bottom: "mbox_conf_flatten" bottom: "mbox_priorbox" top: "detection_out"
  detection_output_param { num_classes: 21 share_location: true background_label_id: 0
    nms_param { nms_threshold: 0.45 top_k: 400 }
    save_output_param { output_directory: "out" output_name_prefix: "comp4_det_test_"
      output_format: "VOC" label_map_file: "labelmap_voc.prototxt"
      name_size_file: "test_name_size.txt" num_test_image: 4952
      resize_param { resize_mode: WARP height: 300 width: 300 } }
    code_type: CENTER_SIZE keep_top_k: 200 confidence_threshold: 0.01 } }
layer { name: "apl1" type: "APL" bottom: "conv1" top: "conv1"
  apl_param { sums: 5 slope_filler { type: "uniform" min: -0.5 max: 0.5 }
              offset_filler { type: "gaussian" std: 0.5 } } }
"""


def test_ssd_and_apl_files_parse(tmp_path):
    path = tmp_path / "train.prototxt"
    path.write_text(SSD_TRAIN)
    net = read_prototxt(str(path), pb.NetParameter())
    data = net.layer[0]
    assert data.transform_param.resize_param.height == 300
    assert list(data.transform_param.resize_param.interp_mode) == [1, 2, 3]
    assert data.transform_param.expand_param.max_expand_ratio == 4.0
    assert data.annotated_data_param.batch_sampler[1].sampler.min_scale == pytest.approx(0.3)
    assert net.layer[1].multibox_loss_param.num_classes == 21
    assert net.layer[3].detection_output_param.save_output_param.num_test_image == 4952
    assert net.layer[4].apl_param.sums == 5
    # the binary form carries every field
    again = pb.NetParameter.FromString(net.SerializeToString())
    assert again == net


# -- resize_param ------------------------------------------------------------------------------
def _transformer(text, phase=pb.TEST, name="fork_data"):
    p = text_format.Parse(text, pb.TransformationParameter())
    return DataTransformer(p, phase, rng=np.random.default_rng(0),
                           name=f"Data layer '{name}': ")


@pytest.mark.parametrize("mode,hw,want", [
    ("WARP", (200, 400), (300, 300)),
    ("FIT_LARGE_SIZE_AND_PAD", (200, 400), (300, 300)),
    ("FIT_SMALL_SIZE", (200, 400), (300, 600)),   # aspect 2 > 1: width = 2 * 300
    ("FIT_SMALL_SIZE", (400, 200), (600, 300)),   # aspect 0.5 < 1: height = 300 / 0.5
    ("FIT_SMALL_SIZE", (300, 450), (300, 450)),
])
def test_resize_modes_shapes(mode, hw, want):
    t = _transformer(f"resize_param {{ resize_mode: {mode} height: 300 width: 300 }}")
    assert t.infer_shape((3,) + hw) == (3,) + want
    img = np.zeros((1, 3) + hw, dtype=np.uint8)
    assert t.transform(img).shape == (1, 3) + want


def test_fit_large_size_and_pad_places_the_image():
    img = np.full((3, 20, 40), 100, dtype=np.uint8)    # h 20, w 40 -> 30 x 15 inside 30 x 30
    t = _transformer("resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD height: 30 width: 30 "
                     "pad_value: 7 pad_value: 8 pad_value: 9 }")
    out = t.transform(img[None])[0]
    top = (30 - 15) // 2
    assert (out[:, top:top + 15] == 100).all()
    for c, v in enumerate((7, 8, 9)):
        assert (out[c, :top] == v).all() and (out[c, top + 15:] == v).all()
    t = _transformer("resize_param { resize_mode: FIT_LARGE_SIZE_AND_PAD height: 30 width: 30 "
                     "pad_mode: REPEAT_NEAREST }")
    assert (t.transform(img[None]) == 100).all()


def test_warp_nearest_and_crop_after_resize():
    img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    t = _transformer("resize_param { height: 2 width: 2 interp_mode: NEAREST }")
    np.testing.assert_array_equal(t.transform(img[None])[0, 0], [[0, 2], [8, 10]])
    t = _transformer("crop_size: 2 resize_param { height: 4 width: 8 interp_mode: NEAREST }")
    assert t.transform(img[None]).shape == (1, 1, 2, 2)


def test_image_data_layer_with_resize(tmp_path):
    for i in range(2):
        (tmp_path / f"{i}.png").write_bytes(
            encode_image(np.full((3, 10 + 5 * i, 12), 50 * i, dtype=np.uint8)))
    (tmp_path / "list.txt").write_text("0.png 0\n1.png 1\n")
    net_text = f"""
layer {{ name: "img" type: "ImageData" top: "data" top: "label"
  transform_param {{ resize_param {{ resize_mode: WARP height: 6 width: 7 }}
                    noise_param {{ inverse: true }} }}
  image_data_param {{ source: "{tmp_path / 'list.txt'}" root_folder: "{tmp_path}/"
                     batch_size: 2 }} }}"""
    path = tmp_path / "net.prototxt"
    path.write_text(net_text)
    net = caffe.Net(str(path), caffe.TEST)
    out = net.forward()
    assert out["data"].shape == (2, 3, 6, 7)
    np.testing.assert_array_equal(out["data"][0], 255)
    np.testing.assert_array_equal(out["data"][1], 205)


# -- noise_param -------------------------------------------------------------------------------
def _noise(text, img, seed=0):
    p = text_format.Parse(f"noise_param {{ {text} }}", pb.TransformationParameter())
    return ForkTransforms(p, pytest.fail).apply([img], np.random.default_rng(seed))[0]


def test_noise_closed_forms():
    img = np.array([[[0, 63, 64, 200]], [[10, 20, 30, 255]], [[5, 128, 250, 1]]], np.uint8)
    np.testing.assert_array_equal(_noise("inverse: true", img), 255 - img.astype(int))
    np.testing.assert_array_equal(_noise("posterize: true", img), img // 64 * 64 + 32)
    b, g, r = (img[i].astype(float) for i in range(3))
    grey = np.floor(0.114 * b + 0.587 * g + 0.299 * r + 0.5)
    out = _noise("decolorize: true", img)
    assert np.abs(out.astype(float) - grey).max() <= 1 and (out == out[0]).all()


def test_erode_and_salt_pepper():
    img = np.full((1, 3, 3), 9, np.uint8)
    img[0, 1, 1] = 1
    out = _noise("erode: true", img)
    np.testing.assert_array_equal(out[0], [[9, 1, 9], [1, 1, 1], [9, 1, 9]])    # a 3x3 cross
    img = np.zeros((3, 10, 10), np.uint8)
    out = _noise("saltpepper: true saltpepper_param { fraction: 0.1 value: 255 }", img)
    hit = (out == 255).all(axis=0)
    assert 1 <= hit.sum() <= 10 and ((out == 0) | (out == 255)).all()


# -- what only warns, what stops ---------------------------------------------------------------
def test_train_only_fields_warn_once_naming_file_layer_field(tmp_path, caplog):
    text = """
layer { name: "warned_data" type: "ImageData" top: "data" top: "label"
  transform_param { distort_param { brightness_prob: 0.5 brightness_delta: 32 }
                    expand_param { prob: 0.5 max_expand_ratio: 4 } }
  image_data_param { source: "list.txt" batch_size: 1 } }"""
    path = tmp_path / "warn.prototxt"
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="minicaffe"):
        param = read_prototxt(str(path), pb.NetParameter())
        read_prototxt(str(path), pb.NetParameter())
        DataTransformer(param.layer[0].transform_param, pb.TRAIN,
                        name="ImageData layer 'warned_data': ")
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert all(str(path) in m and "warned_data" in m for m in msgs)
    assert any("distort_param" in m for m in msgs) and any("expand_param" in m for m in msgs)


def test_fields_that_change_test_output_stop():
    with pytest.raises(LayerError, match="fork_bad.*hist_eq"):
        _transformer("noise_param { hist_eq: true }", name="fork_bad")
    with pytest.raises(LayerError, match="interp_mode CUBIC"):
        _transformer("resize_param { height: 3 width: 3 interp_mode: CUBIC }")
    with pytest.raises(LayerError, match="height and width"):
        _transformer("resize_param { height: 3 }")


def test_unimplemented_fork_layer_is_named():
    p = text_format.Parse('name: "mbox_loss" type: "MultiBoxLoss"', pb.LayerParameter())
    with pytest.raises(LayerError, match="mbox_loss.*MultiBoxLoss"):
        caffe.layer.create_layer(p)

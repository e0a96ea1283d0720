"""WindowData: window-file parsing, fg/bg sampling fractions, and crops (warp, square, context
padding, clipping, mirror, mean file / mean values, scale) against hand-computed pixels."""
import numpy as np
import pytest
from PIL import Image

from gradcheck import layer_param, setup_layer
from minicaffe.errors import LayerError
from minicaffe.proto import caffe_pb2


def bgr_image(h, w, seed):
    """A (3, H, W) uint8 BGR image whose 2x2 blocks average to integers."""
    y, x = np.mgrid[0:h, 0:w]
    base = 10 * (y // 2) + 20 * (x // 2) + 2 * (y % 2) + 2 * (x % 2)
    return np.stack([(base + 3 * c + seed) % 200 for c in range(3)]).astype(np.uint8)


def save(path, chw):
    Image.fromarray(np.ascontiguousarray(chw[::-1].transpose(1, 2, 0)), "RGB").save(path)


def window_file(tmp_path, images):
    """images: [(chw array, [(label, overlap, x1, y1, x2, y2), ...])]."""
    lines = []
    for i, (img, windows) in enumerate(images):
        save(tmp_path / f"im{i}.png", img)
        lines += [f"# {i}", f"im{i}.png", f"3 {img.shape[1]} {img.shape[2]}", str(len(windows))]
        lines += [" ".join(str(v) for v in w) for w in windows]
    (tmp_path / "windows.txt").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "windows.txt")


def make_layer(tmp_path, source, window="", transform="", prefetch=0):
    text = (f'type: "WindowData" window_data_param {{ source: "{source}" '
            f'root_folder: "{tmp_path}/" {window} }} transform_param {{ {transform} }} '
            f'data_param {{ prefetch: {prefetch} }}')
    return setup_layer(layer_param(text), [], num_top=2, dtype=np.float32)


def one_window_layer(tmp_path, img, window, opts, transform):
    """A layer over one image holding one foreground window, batches of ``opts``."""
    src = window_file(tmp_path, [(img, [window])])
    return make_layer(tmp_path, src, "fg_fraction: 1 " + opts, transform)[::2]


def forward(layer, top):
    layer.forward([], top)
    return top[0].data.copy(), top[1].data.copy()


def test_sampling_fractions_and_thresholds(tmp_path):
    img = bgr_image(8, 8, 0)
    windows = [(1, 0.9, 0, 0, 3, 3), (2, 0.8, 1, 1, 4, 4), (3, 0.75, 2, 2, 5, 5),
               (4, 0.5, 0, 0, 7, 7),          # between the thresholds: dropped
               (5, 0.1, 3, 3, 6, 6), (6, 0.2, 0, 4, 3, 7)]   # background: label forced to 0
    src = window_file(tmp_path, [(img, windows), (bgr_image(6, 6, 5), [(7, 0.95, 0, 0, 2, 2)])])
    layer, _, top = make_layer(tmp_path, src, "batch_size: 10 fg_threshold: 0.7 "
                               "bg_threshold: 0.3 fg_fraction: 0.25", "crop_size: 4")
    assert top[0].shape == (10, 3, 4, 4) and top[1].shape == (10,)
    seen = []
    for _ in range(60):
        _, labels = forward(layer, top)
        assert np.all(labels[:8] == 0)          # int(10 * 0.25) = 2 fg, drawn after the bg
        assert np.all(np.isin(labels[8:], [1, 2, 3, 7]))
        seen += list(labels[8:])
    counts = np.array([seen.count(v) for v in (1, 2, 3, 7)])
    assert counts.min() > 0.5 * len(seen) / 4        # uniform over the 4 fg windows


def test_warp_matches_block_means(tmp_path):
    img = bgr_image(8, 8, 1)
    data, labels = forward(*one_window_layer(
        tmp_path, img, (1, 1.0, 2, 0, 5, 3), "batch_size: 2 scale: 0.5",
        "crop_size: 2 mean_value: 10 mean_value: 20 mean_value: 30"))
    box = img[:, 0:4, 2:6].astype(np.float64)
    want = np.zeros((3, 2, 2))
    for c in range(3):
        for i in range(2):
            for j in range(2):   # halving with OpenCV's linear taps = mean of a 2x2 block
                want[c, i, j] = (box[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() -
                                 (10, 20, 30)[c]) * 0.5
    np.testing.assert_allclose(data[0], want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(data[1], want, rtol=0, atol=1e-5)
    assert list(labels) == [1, 1]


def test_square_crop_with_mean_file(tmp_path):
    img = bgr_image(8, 8, 2)
    # box 4 wide, 2 high -> square of half-size 2 around (4, 4): pixels 2..6 both ways
    mean = np.arange(3 * 7 * 7, dtype=np.float32).reshape(1, 3, 7, 7) / 10
    bp = caffe_pb2.BlobProto()
    bp.shape.dim.extend(mean.shape)
    bp.data.extend(mean.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(bp.SerializeToString())
    data, _ = forward(*one_window_layer(
        tmp_path, img, (3, 1.0, 2, 3, 5, 4), 'batch_size: 1 crop_mode: "square"',
        f'crop_size: 5 mean_file: "{tmp_path}/mean.binaryproto"'))
    off = (7 - 5) // 2
    want = img[:, 2:7, 2:7].astype(np.float32) - mean[0, :, off:off + 5, off:off + 5]
    np.testing.assert_allclose(data[0], want, rtol=0, atol=1e-5)


def test_clipped_context_is_zero_and_mirror_moves_the_padding(tmp_path):
    img = bgr_image(8, 8, 3)
    # square around x 4..7, y 3..4: columns 4..8 of which 8 is outside the image
    layer, top = one_window_layer(tmp_path, img, (1, 1.0, 4, 3, 7, 4),
                                  'batch_size: 4 crop_mode: "square"', "crop_size: 5 mirror: true")
    plain = np.zeros((3, 5, 5), np.float32)
    plain[:, :, 0:4] = img[:, 2:7, 4:8]
    mirrored = np.zeros((3, 5, 5), np.float32)
    mirrored[:, :, 1:5] = img[:, 2:7, 4:8][:, :, ::-1]
    found = set()
    for _ in range(10):
        data, _ = forward(layer, top)
        for item in data:
            kind = [k for k, want in (("plain", plain), ("mirrored", mirrored))
                    if np.array_equal(item, want)]
            assert kind, "a window matches neither the plain nor the mirrored crop"
            found.add(kind[0])
    assert found == {"plain", "mirrored"}


def test_context_pad_clipped_at_the_top(tmp_path):
    img = bgr_image(8, 8, 4)
    # box x 0..3, y 0..1 squared: x -> 0..4, y -> -1..3; crop 5 keeps scale 1, row 0 is padding
    data, _ = forward(*one_window_layer(tmp_path, img, (2, 1.0, 0, 0, 3, 1),
                                        'batch_size: 1 crop_mode: "square"',
                                        "crop_size: 5 mean_value: 7"))
    want = np.zeros((3, 5, 5), np.float32)
    want[:, 1:5, :] = img[:, 0:4, 0:5].astype(np.float32) - 7
    np.testing.assert_array_equal(data[0], want)


def test_prefetch_and_cache_images_give_the_same_batches(tmp_path):
    img = bgr_image(10, 10, 5)
    src = window_file(tmp_path, [(img, [(1, 0.9, 0, 0, 5, 5), (1, 0.1, 2, 2, 9, 9),
                                        (2, 0.8, 3, 1, 8, 6)])])
    opts = "batch_size: 4 context_pad: 1"
    a_layer, _, a_top = make_layer(tmp_path, src, opts, "crop_size: 6 mirror: true")
    batches = [forward(a_layer, a_top) for _ in range(3)]
    import minicaffe
    minicaffe.set_random_seed(1701)
    b_layer, _, b_top = make_layer(tmp_path, src, opts + " cache_images: true",
                                   "crop_size: 6 mirror: true", prefetch=2)
    for data, labels in batches:
        d, lab = forward(b_layer, b_top)
        np.testing.assert_array_equal(d, data)
        np.testing.assert_array_equal(lab, labels)
    b_layer.close()


def test_errors(tmp_path):
    img = bgr_image(6, 6, 0)
    src = window_file(tmp_path, [(img, [(1, 0.1, 0, 0, 2, 2)])])
    with pytest.raises(LayerError, match="foreground windows"):
        make_layer(tmp_path, src, "batch_size: 4", "crop_size: 4")
    with pytest.raises(LayerError, match="crop_size"):
        make_layer(tmp_path, src, "batch_size: 4 fg_fraction: 0")
    bad = tmp_path / "bad.txt"
    bad.write_text("# 0\nim0.png\n3 6 6\n1\n0 0.9 0 0 2 2\n")
    with pytest.raises(LayerError, match="classes must be > 0"):
        make_layer(tmp_path, str(bad), "batch_size: 4", "crop_size: 4")

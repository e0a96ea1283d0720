"""LRN: ACROSS_CHANNELS and WITHIN_CHANNEL against plain loops, gradients, errors."""
import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.errors import LayerError


def lrn_reference(x, size, alpha, beta, k, across):
    """y = x * scale^-beta with scale from the sum of x^2 over each position's window.

    ACROSS_CHANNELS: the size channels centred on c (zero padded), scale = k + alpha/size * sum.
    WITHIN_CHANNEL (Caffe: square -> AVE pool size x size, pad (size-1)/2, stride 1, divisor
    size*size because padded positions count -> power -> product): the size x size window
    centred on (h, w), scale = 1 + alpha * avg; k is unused.
    """
    N, C, H, W = x.shape
    half = (size - 1) // 2
    y = np.zeros_like(x)
    for n, c, h, w in np.ndindex(N, C, H, W):
        if across:
            window = [(cc, h, w) for cc in range(c - half, c + half + 1)]
        else:
            window = [(c, hh, ww) for hh in range(h - half, h + half + 1)
                      for ww in range(w - half, w + half + 1)]
        s = 0.0
        for cc, hh, ww in window:
            if 0 <= cc < C and 0 <= hh < H and 0 <= ww < W:
                s += x[n, cc, hh, ww] ** 2
        scale = k + alpha / size * s if across else 1.0 + alpha * (s / (size * size))
        y[n, c, h, w] = x[n, c, h, w] * scale ** -beta
    return y


def lrn_across_reference(x, size, alpha, beta, k):
    return lrn_reference(x, size, alpha, beta, k, across=True)


def lrn_within_reference(x, size, alpha, beta):
    return lrn_reference(x, size, alpha, beta, None, across=False)


def run(text, x):
    layer, bottom, top = setup_layer(layer_param(text), [x])
    layer.forward(bottom, top)
    return layer, bottom, top


def text_for(region, size, alpha, beta, k):
    return (f'type: "LRN" lrn_param {{ norm_region: {region} local_size: {size} '
            f'alpha: {alpha} beta: {beta} k: {k} }}')


def f32(v):
    """lrn_param fields are proto floats: the layer sees the float32-rounded values."""
    return float(np.float32(v))


CONFIGS = [(3, 0.7, 0.6, 2.0), (5, 1.3, 0.75, 1.5), (5, 1.0, 0.75, 1.0)]


@pytest.mark.parametrize("size,alpha,beta,k", CONFIGS)
def test_across_channels_forward(size, alpha, beta, k):
    x = np.random.RandomState(0).standard_normal((2, 7, 3, 4)) * 1.5
    _, _, top = run(text_for("ACROSS_CHANNELS", size, alpha, beta, k), x)
    np.testing.assert_allclose(top[0].xdata, lrn_across_reference(x, size, f32(alpha), f32(beta), f32(k)),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("size,alpha,beta,k", CONFIGS)
def test_within_channel_forward(size, alpha, beta, k):
    x = np.random.RandomState(1).standard_normal((2, 3, 6, 5)) * 1.5
    _, _, top = run(text_for("WITHIN_CHANNEL", size, alpha, beta, k), x)
    np.testing.assert_allclose(top[0].xdata, lrn_within_reference(x, size, f32(alpha), f32(beta)),
                               rtol=1e-12, atol=1e-14)


def test_defaults_are_caffes():
    x = np.random.RandomState(2).standard_normal((1, 6, 2, 3))
    _, _, top = run('type: "LRN"', x)
    np.testing.assert_allclose(top[0].xdata, lrn_across_reference(x, 5, 1.0, 0.75, 1.0),
                               rtol=1e-12)


def test_window_larger_than_blob():
    # local_size 7 with 2 channels / a 2x3 image: the window is clipped to the blob.
    x = np.random.RandomState(3).standard_normal((1, 2, 2, 3))
    _, _, top = run(text_for("ACROSS_CHANNELS", 7, 2.0, 0.5, 1.0), x)
    np.testing.assert_allclose(top[0].xdata, lrn_across_reference(x, 7, 2.0, 0.5, 1.0),
                               rtol=1e-12)
    _, _, top = run(text_for("WITHIN_CHANNEL", 7, 2.0, 0.5, 1.0), x)
    np.testing.assert_allclose(top[0].xdata, lrn_within_reference(x, 7, 2.0, 0.5), rtol=1e-12)


def test_float32_forward():
    x = np.random.RandomState(4).standard_normal((2, 5, 4, 4)).astype(np.float32)
    for region, ref in (("ACROSS_CHANNELS", lrn_across_reference(x.astype(np.float64), 5,
                                                                    f32(1e-2), 0.75, 2.0)),
                        ("WITHIN_CHANNEL", lrn_within_reference(x.astype(np.float64), 5,
                                                                f32(1e-2), 0.75))):
        layer, bottom, top = setup_layer(layer_param(text_for(region, 5, 1e-2, 0.75, 2.0)),
                                         [x], dtype=np.float32)
        layer.forward(bottom, top)
        assert top[0].xdata.dtype == np.float32
        np.testing.assert_allclose(top[0].xdata, ref, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("size,alpha,beta,k", CONFIGS)
def test_gradients(region, size, alpha, beta, k):
    x = np.random.RandomState(5).standard_normal((2, 6, 4, 5))
    check_gradients(text_for(region, size, alpha, beta, k), [x])


def test_reshape_to_new_size():
    text = text_for("ACROSS_CHANNELS", 3, 0.5, 0.75, 1.0)
    layer, bottom, top = run(text, np.ones((1, 2, 2, 2)))
    x = np.random.RandomState(6).standard_normal((3, 4, 5, 2))
    bottom[0].reshape(x.shape)
    bottom[0].xdata[...] = x
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].xdata, lrn_across_reference(x, 3, 0.5, 0.75, 1.0),
                               rtol=1e-12)


def test_errors():
    with pytest.raises(LayerError, match="odd"):
        run('type: "LRN" lrn_param { local_size: 4 }', np.ones((1, 4, 2, 2)))
    with pytest.raises(LayerError, match=r"4 axes.*\(2, 3\)"):
        run('type: "LRN"', np.ones((2, 3)))

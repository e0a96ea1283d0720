"""SPP: pyramid pooling against loops written here, gradients by finite differences, shapes
and error checks."""
import math

import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer, rand
from minicaffe.errors import LayerError, ShapeError


def distinct(shape, seed=0):
    """Values far enough apart that a finite-difference step never changes a max's winner."""
    n = int(np.prod(shape))
    return (np.random.RandomState(seed).permutation(n) * 0.1).reshape(shape)


# --- SPP -------------------------------------------------------------------------------------
def pool_ref(x, kernel, stride, pad, method):
    """Caffe's pooling by loops (window clipped to the image for MAX, to the padded image for
    the AVE divisor; a last window starting in the padding is dropped)."""
    n, c, h, w = x.shape
    out_dims = []
    for size, k, s, p in zip((h, w), kernel, stride, pad):
        o = int(math.ceil((size + 2 * p - k) / s)) + 1
        if any(pad) and (o - 1) * s >= size + p:
            o -= 1
        out_dims.append(o)
    y = np.zeros((n, c) + tuple(out_dims))
    for a in range(out_dims[0]):
        for b in range(out_dims[1]):
            r0, c0 = a * stride[0] - pad[0], b * stride[1] - pad[1]
            r1, c1 = min(r0 + kernel[0], h + pad[0]), min(c0 + kernel[1], w + pad[1])
            size = (r1 - r0) * (c1 - c0)
            win = x[:, :, max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)]
            if method == "MAX":
                y[:, :, a, b] = win.max(axis=(2, 3))
            else:
                y[:, :, a, b] = win.sum(axis=(2, 3)) / size
    return y


def spp_ref(x, height, method):
    n, c, h, w = x.shape
    parts = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        y = pool_ref(x, (kh, kw), (kh, kw), (ph, pw), method)
        if height == 1:
            return y
        parts.append(y.reshape(n, -1))
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(1, (2, 3, 5, 4)), (2, (2, 2, 6, 7)),
                                          (3, (1, 2, 9, 8)), (3, (2, 1, 4, 4))])
def test_spp_forward_matches_loops(method, height, shape):
    x = rand(shape, 9)
    text = f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {method} }}'
    _, _, top = forward_layer(text, [x])
    ref = spp_ref(x, height, method)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)


def test_spp_shapes():
    # 4x4 input, three levels: 1 + 4 + 16 bins per channel.
    _, _, top = forward_layer('type: "SPP" spp_param { pyramid_height: 3 }', [rand((2, 3, 4, 4))])
    assert top[0].shape == (2, 3 * 21)
    # pyramid_height 1: the single pooling output itself, not flattened.
    _, _, top = forward_layer('type: "SPP" spp_param { pyramid_height: 1 }', [rand((2, 3, 4, 4))])
    assert top[0].shape == (2, 3, 1, 1)


def test_spp_follows_input_size_changes():
    layer, bottom, top = forward_layer('type: "SPP" spp_param { pyramid_height: 2 pool: AVE }',
                                 [rand((1, 2, 6, 6))])
    x = rand((1, 2, 9, 5), 10)
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, spp_ref(x, 2, "AVE"), rtol=1e-12)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(1, (2, 2, 5, 4)), (2, (2, 2, 5, 6)),
                                          (3, (1, 2, 8, 9))])
def test_spp_gradients(method, height, shape):
    check_gradients(f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {method} }}',
                    [distinct(shape, 11)])


def test_spp_errors():
    with pytest.raises(ShapeError, match=r"SPP layer 'under_test'.*4 axes.*\(2, 3, 4\)"):
        forward_layer('type: "SPP" spp_param { pyramid_height: 2 }', [rand((2, 3, 4))])
    # 2x2 input, level 2 (4x4 bins): kernel 1 with pad 1, which pooling cannot do.
    with pytest.raises(ShapeError, match=r"SPP layer 'under_test'.*level 2.*\(1, 1, 2, 2\)"):
        forward_layer('type: "SPP" spp_param { pyramid_height: 3 }', [rand((1, 1, 2, 2))])
    with pytest.raises(LayerError, match="pyramid_height"):
        forward_layer('type: "SPP"', [rand((1, 1, 4, 4))])
    with pytest.raises(LayerError, match="STOCHASTIC"):
        forward_layer('type: "SPP" spp_param { pyramid_height: 1 pool: STOCHASTIC }',
                [rand((1, 1, 4, 4))])

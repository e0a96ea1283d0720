"""Im2col: columns against loops written here, gradients by finite differences (col2im),
axis handling and error checks."""
import numpy as np
import pytest

from gradcheck import check_gradients, forward_layer, rand
from minicaffe.errors import LayerError, ShapeError


# --- Im2col ----------------------------------------------------------------------------------
def im2col_ref(x, kernel, stride, pad, dilation):
    """Caffe's im2col by direct loops: row c*kh*kw + i*kw + j, column (oh, ow)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, c * kh * kw, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = ch * kh * kw + i * kw + j
                    for y in range(oh):
                        for z in range(ow):
                            r, s = y * sh - ph + i * dh, z * sw - pw + j * dw
                            if 0 <= r < h and 0 <= s < w:
                                out[b, row, y, z] = x[b, ch, r, s]
    return out


IM2COL_CASES = [
    ("kernel_size: 3", (3, 3), (1, 1), (0, 0), (1, 1)),
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), (1, 1)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 2", (2, 3), (1, 2),
     (0, 2), (1, 1)),
    ("kernel_size: 2 dilation: 2 pad: 1 stride: 2", (2, 2), (2, 2), (1, 1), (2, 2)),
    ("kernel_size: 3 kernel_size: 2 stride: 3 stride: 1 dilation: 1 dilation: 2 pad: 2 pad: 0",
     (3, 2), (3, 1), (2, 0), (1, 2)),
]


@pytest.mark.parametrize("text,kernel,stride,pad,dilation", IM2COL_CASES)
def test_im2col_forward_matches_loops(text, kernel, stride, pad, dilation):
    x = rand((2, 3, 7, 6), 5)
    _, _, top = forward_layer(f'type: "Im2col" convolution_param {{ {text} }}', [x])
    ref = im2col_ref(x, kernel, stride, pad, dilation)
    assert top[0].shape == ref.shape
    np.testing.assert_array_equal(top[0].data, ref)


@pytest.mark.parametrize("text,kernel,stride,pad,dilation", IM2COL_CASES)
def test_im2col_gradients(text, kernel, stride, pad, dilation):
    check_gradients(f'type: "Im2col" convolution_param {{ {text} }}', [rand((2, 2, 6, 5), 6)])


def test_im2col_backward_is_col2im_sum():
    """Each pixel's gradient is the sum of the column entries it was copied to."""
    x = rand((1, 2, 5, 5), 7)
    layer, bottom, top = forward_layer('type: "Im2col" convolution_param { kernel_size: 3 pad: 1 }',
                                 [x])
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    # With stride 1, pad 1 and a 3x3 kernel a pixel is used once per window that covers it:
    # 3 x 3 inside, 2 x 3 on an edge, 2 x 2 in a corner.
    counts = np.array([[4, 6, 6, 6, 4], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6],
                       [4, 6, 6, 6, 4]], float)
    np.testing.assert_array_equal(bottom[0].diff, np.broadcast_to(counts, (1, 2, 5, 5)))


def test_im2col_axis_and_leading_dims():
    x = rand((2, 3, 2, 5, 4), 8)
    text = 'type: "Im2col" convolution_param { kernel_size: 2 axis: 2 }'
    _, _, top = forward_layer(text, [x])
    assert top[0].shape == (2, 3, 8, 4, 3)
    ref = im2col_ref(x.reshape(6, 2, 5, 4), (2, 2), (1, 1), (0, 0), (1, 1))
    np.testing.assert_array_equal(top[0].data.reshape(6, 8, 4, 3), ref)
    check_gradients(text, [x])


def test_im2col_errors():
    with pytest.raises(ShapeError, match=r"Im2col layer 'under_test'.*\(1, 1, 2, 2\)"):
        forward_layer('type: "Im2col" convolution_param { kernel_size: 3 }', [rand((1, 1, 2, 2))])
    with pytest.raises(LayerError, match="Im2col layer.*2-D spatial"):
        forward_layer('type: "Im2col" convolution_param { kernel_size: 3 }', [rand((1, 1, 5))])
    with pytest.raises(LayerError, match="not both"):
        forward_layer('type: "Im2col" convolution_param { kernel_size: 3 kernel_h: 2 kernel_w: 2 }',
                [rand((1, 1, 5, 5))])
    with pytest.raises(LayerError, match="kernel_size"):
        forward_layer('type: "Im2col" convolution_param { stride: 2 }', [rand((1, 1, 5, 5))])

"""Convolution configurations and the float32 comparison shared by the conv engine tests."""
import numpy as np


def close(got, want):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * scale)


# (batch, channels, H, W, num_output, kernel, stride, pad, dilation, group, bias)
GRID = [
    (1, 3, 7, 9, 4, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    (3, 4, 9, 7, 6, (1, 1), (2, 2), (0, 0), (1, 1), 2, False),
    (1, 2, 6, 6, 3, (1, 1), (2, 2), (0, 0), (1, 1), 1, True),      # right pad -1
    (3, 3, 9, 11, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    (1, 4, 11, 9, 4, (3, 3), (2, 2), (1, 1), (1, 1), 2, True),
    (3, 2, 13, 9, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1, False),
    (1, 6, 9, 9, 6, (3, 3), (2, 1), (0, 0), (2, 2), 2, True),
    (3, 4, 11, 11, 6, (5, 5), (1, 1), (2, 2), (1, 1), 1, True),
    (1, 4, 9, 13, 2, (5, 5), (2, 2), (2, 2), (1, 1), 2, False),
    (3, 3, 15, 13, 4, (5, 5), (1, 2), (1, 1), (2, 2), 1, True),
    (3, 5, 9, 7, 3, (3, 2), (1, 1), (1, 1), (1, 1), 1, True),
    (1, 4, 11, 7, 4, (3, 2), (2, 1), (2, 2), (1, 1), 2, False),
    (3, 2, 13, 11, 3, (3, 2), (1, 1), (0, 0), (2, 2), 1, False),
    (1, 6, 7, 9, 4, (3, 2), (2, 2), (1, 1), (2, 1), 2, True),
    (3, 3, 8, 7, 2, (2, 3), (3, 2), (1, 0), (1, 2), 1, True),      # pad_h != pad_w
]

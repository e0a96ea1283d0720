import math

import numpy as np
import pytest

import minicaffe
from minicaffe.blob import Blob
from minicaffe.fillers import filled_array
from minicaffe.proto import caffe_pb2


def test_blob_shape_count_and_negative_axes():
    b = Blob((2, 3, 4, 5))
    assert b.shape == (2, 3, 4, 5)
    assert b.count == 120 and b.num_axes == 4
    assert b.shape(-1) == 5 and b.shape(1) == 3
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 4, 5)
    assert b.count_range(1) == 60 and b.count_range(1, 3) == 12
    with pytest.raises(IndexError):
        b.shape(4)
    assert b.data.dtype == np.float32


def test_blob_diff_is_lazy_and_reshape_reuses_capacity():
    b = Blob((4, 6))
    assert not b.has_diff
    b.diff[...] = 1
    assert b.has_diff
    buf = b._data_buf
    b.reshape(2, 6)
    assert b._data_buf is buf and b.shape == (2, 6)
    b.reshape(5, 6)
    assert b._data_buf is not buf and b.count == 30
    b.data[...] = 3
    assert b.data.sum() == 90


def test_blob_proto_round_trip():
    b = Blob((2, 3))
    b.data[...] = np.arange(6).reshape(2, 3)
    p = b.to_proto()
    assert list(p.shape.dim) == [2, 3]
    c = Blob()
    c.from_proto(p)
    np.testing.assert_array_equal(c.data, b.data)


def F(**kw):
    return caffe_pb2.FillerParameter(**kw)


def test_constant_uniform_gaussian():
    assert np.all(filled_array((3, 4), F(type="constant", value=2.5)) == 2.5)
    u = filled_array((200, 50), F(type="uniform", min=-2, max=3))
    assert u.min() >= -2 and u.max() <= 3 and abs(u.mean() - 0.5) < 0.05
    g = filled_array((200, 100), F(type="gaussian", mean=1, std=2))
    assert abs(g.mean() - 1) < 0.05 and abs(g.std() - 2) < 0.05


def test_sparse_gaussian_keeps_expected_nonzeros():
    g = filled_array((20, 1000), F(type="gaussian", std=1, sparse=5))
    # Probability of a nonzero is sparse / num_outputs = 5/20 per entry.
    assert abs((g != 0).mean() - 0.25) < 0.02


def test_xavier_and_msra_scales():
    shape = (64, 32, 3, 3)
    fan_in, fan_out = 32 * 9, 64 * 9
    x = filled_array(shape, F(type="xavier"))
    assert abs(np.abs(x).max() - math.sqrt(3.0 / fan_in)) < 1e-3
    x = filled_array(shape, F(type="xavier", variance_norm=caffe_pb2.FillerParameter.AVERAGE))
    assert x.max() <= math.sqrt(3.0 / ((fan_in + fan_out) / 2)) + 1e-6
    m = filled_array(shape, F(type="msra", variance_norm=caffe_pb2.FillerParameter.FAN_OUT))
    assert abs(m.std() - math.sqrt(2.0 / fan_out)) < 0.003


def test_positive_unitball_rows_sum_to_one():
    p = filled_array((5, 3, 2, 2), F(type="positive_unitball"))
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.reshape(5, -1).sum(1), 1, rtol=1e-5)


def test_bilinear_matches_closed_form():
    k = 4
    b = filled_array((2, 1, k, k), F(type="bilinear"))
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2 * f)
    for y in range(k):
        for x in range(k):
            want = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
            assert abs(b[1, 0, y, x] - want) < 1e-6


def test_seed_reproducible():
    minicaffe.set_random_seed(3)
    a = filled_array((10,), F(type="gaussian"))
    minicaffe.set_random_seed(3)
    b = filled_array((10,), F(type="gaussian"))
    np.testing.assert_array_equal(a, b)


def test_unknown_filler_is_clear():
    with pytest.raises(minicaffe.MiniCaffeError, match="unknown filler type 'nope'"):
        filled_array((2,), F(type="nope"))

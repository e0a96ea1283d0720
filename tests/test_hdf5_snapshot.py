"""snapshot_format: HDF5 in Caffe's layout (Net::ToHDF5, SnapshotSolverStateToHDF5): the
groups and datasets read back with h5py alone, resuming from a .solverstate.h5, weights from
a .caffemodel.h5 written by hand with h5py, and the errors (shape, missing blob, no h5py)."""
import sys

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import MiniCaffeError
from minicaffe.io import parse_text
from minicaffe.proto import caffe_pb2

h5py = pytest.importorskip("h5py")

NET = """name: "h5net"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" }
    shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "h"
  param { name: "shared_w" } inner_product_param { num_output: 3
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "h2"
  param { name: "shared_w" } inner_product_param { num_output: 3
    weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip3" type: "InnerProduct" bottom: "h2" top: "out"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" }
"""


def _solver(tmp_path, extra="", max_iter=4):
    p = parse_text(f"""base_lr: 0.05 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 2
        max_iter: {max_iter} snapshot: 2 random_seed: 7 snapshot_format: HDF5
        snapshot_prefix: "{tmp_path}/h5" {extra}""", caffe_pb2.SolverParameter())
    parse_text(NET, p.net_param)
    return caffe.get_solver(p)


def _params(net):
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


def test_layout_is_caffes(tmp_path):
    s = _solver(tmp_path, "snapshot_diff: true")
    s.solve()
    with h5py.File(tmp_path / "h5_iter_4.caffemodel.h5", "r") as f:
        assert sorted(f) == ["data", "diff"]
        assert list(f["data"]) == ["data", "ip1", "ip2", "ip3", "loss"]   # every layer
        assert sorted(f["data/ip1"]) == ["0", "1"]
        assert sorted(f["data/ip2"]) == ["1"]        # the shared weight is stored by its owner
        assert sorted(f["diff/ip2"]) == ["0", "1"]   # diffs regardless of sharing
        for name, blobs in s.net.params.items():
            for i, blob in enumerate(blobs):
                if f"data/{name}/{i}" in f:
                    ds = f[f"data/{name}/{i}"]
                    assert ds.dtype == np.float32 and ds.shape == blob.data.shape
                    np.testing.assert_array_equal(ds[()], blob.data)
                np.testing.assert_array_equal(f[f"diff/{name}/{i}"][()], blob.diff)
    with h5py.File(tmp_path / "h5_iter_4.solverstate.h5", "r") as f:
        assert f["iter"].dtype == np.int32 and f["iter"][()].tolist() == [4]
        assert f["current_step"][()].tolist() == [3 // 2]   # step of the last rate (iter 3)
        assert f["learned_net"][()] == f"{tmp_path}/h5_iter_4.caffemodel.h5".encode()
        assert f["learned_net"].id.get_type().get_strpad() == h5py.h5t.STR_NULLTERM
        # SGD: one history blob per learnable (owned) parameter: ip1 w, b; ip2 b; ip3 w, b
        assert sorted(f["history"]) == ["0", "1", "2", "3", "4"]
        for i, h in enumerate(s.history):
            np.testing.assert_array_equal(f[f"history/{i}"][()], h)


def test_resume_from_hdf5_state_equals_a_straight_run(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = _solver(tmp_path / "a", max_iter=4)
    straight.solve()
    first = _solver(tmp_path / "b", max_iter=2)
    first.solve()
    resumed = _solver(tmp_path / "b", max_iter=4)
    resumed.solve(str(tmp_path / "b" / "h5_iter_2.solverstate.h5"))
    assert resumed.iter == 4
    for name, blobs in _params(straight.net).items():
        for a, b in zip(blobs, _params(resumed.net)[name]):
            np.testing.assert_array_equal(a, b)


def _test_net_param():
    param = parse_text(NET, caffe_pb2.NetParameter())
    param.state.phase = caffe.TEST
    return param


def test_weights_from_a_hand_written_hdf5_file(tmp_path):
    net = caffe.Net(_test_net_param())
    rng = np.random.default_rng(0)
    path = tmp_path / "hand.caffemodel.h5"
    values = {"ip1": [rng.standard_normal((3, 3)), rng.standard_normal(3)],
              "ip3": [rng.standard_normal((2, 3)), rng.standard_normal(2)]}
    with h5py.File(path, "w") as f:
        for name, arrays in values.items():
            for i, a in enumerate(arrays):
                f.create_dataset(f"data/{name}/{i}", data=a.astype(np.float64))
        f.create_dataset("data/ip2/1", data=np.full(3, 0.25))   # weight 0 shared from ip1
        f.create_group("data/not_in_net")
    net.copy_from(str(path))
    for name, arrays in values.items():
        for blob, a in zip(net.params[name], arrays):
            np.testing.assert_allclose(blob.data, a.astype(np.float32))
    np.testing.assert_array_equal(net.params["ip2"][1].data, np.full(3, 0.25, np.float32))
    np.testing.assert_array_equal(net.params["ip2"][0].data, net.params["ip1"][0].data)


def test_weight_errors_name_the_file_and_layer(tmp_path):
    net = caffe.Net(_test_net_param())
    bad_shape = tmp_path / "shape.h5"
    with h5py.File(bad_shape, "w") as f:
        f.create_dataset("data/ip3/0", data=np.zeros((3, 2)))
    with pytest.raises(MiniCaffeError, match=r"shape.h5: cannot load param 0 of layer 'ip3'.*"
                                             r"source \(3, 2\) vs target \(2, 3\)"):
        net.copy_from(str(bad_shape))
    missing = tmp_path / "missing.h5"
    with h5py.File(missing, "w") as f:
        f.create_dataset("data/ip3/0", data=np.zeros((2, 3)))
    with pytest.raises(MiniCaffeError, match=r"missing.h5: layer 'ip3' has no blob 1"):
        net.copy_from(str(missing))
    no_data = tmp_path / "nodata.h5"
    with h5py.File(no_data, "w") as f:
        f.create_dataset("iter", data=[1])
    with pytest.raises(MiniCaffeError, match=r"nodata.h5: no 'data' group"):
        net.copy_from(str(no_data))


def test_state_errors(tmp_path):
    s = _solver(tmp_path)
    s.solve()
    with pytest.raises(MiniCaffeError, match=r"h5_iter_4.caffemodel.h5: no dataset 'iter'"):
        s.restore(str(tmp_path / "h5_iter_4.caffemodel.h5"))
    with pytest.raises(MiniCaffeError, match=r"nope.solverstate.h5: no such file"):
        s.restore(str(tmp_path / "nope.solverstate.h5"))
    adam = _solver(tmp_path, 'type: "Adam"')
    with pytest.raises(MiniCaffeError, match=r"holds 5 history blobs, but the Adam solver"):
        adam.restore(str(tmp_path / "h5_iter_4.solverstate.h5"))


def test_without_h5py_hdf5_format_fails_at_solver_start(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)      # import h5py raises ImportError
    with pytest.raises(MiniCaffeError, match=r"snapshot_format: HDF5 needs the h5py package"):
        _solver(tmp_path)

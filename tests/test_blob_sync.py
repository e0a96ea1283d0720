"""GPU-mode host/device syncing, tested on the CPU with a stand-in device module.

``FakeDevice`` plays CuPy: its arrays are a NumPy subclass that refuses to mix with plain
NumPy arrays in operations (as CuPy does), copies between "host" and "device" only through
``get``/``set``/``asarray`` (counted), and every implicit read of a device value on the host
(``float()``, ``int()``, ``bool()``, ``item()``: a device sync with CuPy) is counted too.
``backend.use_device_module`` installs it as GPU mode's module, so these tests exercise
Blob's SyncedMemory logic, the Net moving between modes, device-side losses and the solver's
once-per-display loss reads, and compare GPU-mode results with the CPU run.
"""
import os

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import backend
from minicaffe.blob import Blob, move_blobs
from minicaffe.proto import caffe_pb2


# ------------------------------------------------------------------------------------------
# The stand-in device module
class Counters:
    def __init__(self):
        self.reset()

    def reset(self):
        self.h2d = 0       # host -> device copies
        self.d2h = 0       # device -> host copies
        self.syncs = 0     # device values read implicitly on the host

    def __repr__(self):
        return f"<h2d {self.h2d} d2h {self.d2h} syncs {self.syncs}>"


COUNT = Counters()
_STRICT = [False]          # CuPy's rules apply while the stand-in is installed


def _is_host_array(a):
    return _STRICT[0] and type(a) is np.ndarray and a.ndim > 0


def _check_no_host(values):
    for v in values:
        if _is_host_array(v):
            raise TypeError("fake device: a NumPy array was mixed into a device operation "
                            f"(shape {v.shape}); convert it with xp.asarray first")
        if isinstance(v, (list, tuple)):
            _check_no_host(v)


def _plain(v):
    if isinstance(v, FakeArray):
        return v.view(np.ndarray)
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _wrap(v):
    if isinstance(v, FakeArray):
        return v
    if isinstance(v, np.ndarray):
        return v.view(FakeArray)
    if isinstance(v, np.generic):                 # CuPy returns 0-d arrays, not scalars
        return np.asarray(v).view(FakeArray)
    if isinstance(v, tuple):
        return tuple(_wrap(x) for x in v)
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v


class FakeArray(np.ndarray):
    """A "device" array: NumPy memory, CuPy's rules."""

    def get(self, stream=None, order="C", out=None):
        COUNT.d2h += 1
        src = self.view(np.ndarray)
        if out is None:
            return src.copy()
        if type(out) is not np.ndarray or out.shape != self.shape:
            raise ValueError("get(out=) needs a NumPy array of the same shape")
        out[...] = src
        return out

    def set(self, arr, stream=None):
        if type(arr) is not np.ndarray or arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("set() needs a NumPy array of the same shape and dtype")
        COUNT.h2d += 1
        self.view(np.ndarray)[...] = arr

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _check_no_host(inputs)
        _check_no_host(kwargs.values())
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        if "where" in kwargs:
            kwargs["where"] = _plain(kwargs["where"])
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        _check_no_host(args)
        _check_no_host(kwargs.values())
        return _wrap(func(*_plain(args), **_plain(kwargs)))

    def __setitem__(self, key, value):
        if _is_host_array(value):
            raise TypeError("fake device: assigning a NumPy array into a device array")
        self.view(np.ndarray)[_plain(key)] = _plain(value)

    def __getitem__(self, key):
        return _wrap(self.view(np.ndarray)[_plain(key)])

    def _sync(self):
        COUNT.syncs += 1
        return self.view(np.ndarray)

    def __float__(self):
        return float(self._sync())

    def __int__(self):
        return int(self._sync())

    def __bool__(self):
        return bool(self._sync())

    def __index__(self):
        return self._sync().__index__()

    def item(self, *args):
        return self._sync().item(*args)

    def tolist(self):
        return self._sync().tolist()


def _device_call(fn):
    def call(*args, **kwargs):
        _check_no_host(args)
        _check_no_host(kwargs.values())
        return _wrap(fn(*_plain(args), **_plain(kwargs)))
    return call


class _Ufunc:
    """A NumPy ufunc called on device arrays (methods such as ``at``/``reduce`` too)."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self._call = _device_call(ufunc)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self._ufunc, name)
        return _device_call(attr) if callable(attr) else attr


class _Namespace:
    """NumPy's functions with device arrays in and out, host arrays refused."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if isinstance(attr, type(np)):
            return _Namespace(attr)
        if isinstance(attr, np.ufunc):
            return _Ufunc(attr)
        if isinstance(attr, type) or not callable(attr):
            return attr
        return _device_call(attr)


class _FakeRandom:
    def __init__(self):
        self._gen = np.random.default_rng(0)

    def seed(self, s):
        self._gen = np.random.default_rng(int(s))

    def random_sample(self, size=None, dtype=np.float64):
        return _wrap(self._gen.random(size, dtype=np.dtype(dtype).type))


class FakeDevice(_Namespace):
    """A CuPy stand-in: ``ndarray``, ``asarray``, ``asnumpy``, ``get_array_module``,
    ``random``, and NumPy's other functions through ``_Namespace``."""
    ndarray = FakeArray

    def __init__(self):
        super().__init__(np)
        self.random = _FakeRandom()

    def get_array_module(self, *arrays):
        return self if any(isinstance(a, FakeArray) for a in arrays) else np

    def asarray(self, a, dtype=None):
        if isinstance(a, FakeArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        if isinstance(a, np.ndarray):
            COUNT.h2d += 1
        return np.array(a, dtype=dtype).view(FakeArray)

    array = asarray

    def asnumpy(self, a):
        return a.get() if isinstance(a, FakeArray) else np.asarray(a)


FAKE = FakeDevice()


def _forget_device_scratch():
    """Drop scratch arrays that layers share through module-level caches (im2col's
    workspaces), so no stand-in array outlives the test that installed the stand-in."""
    from minicaffe.kernels import array_im2col as im2col
    local = getattr(im2col, "_local", None)
    if local is not None:
        local.__dict__.clear()


@pytest.fixture
def gpu():
    """GPU mode on the stand-in device; counters reset; CPU mode again afterwards."""
    backend.use_device_module(FAKE)
    _STRICT[0] = True
    caffe.set_mode_gpu()
    COUNT.reset()
    yield COUNT
    _STRICT[0] = False
    backend.use_device_module(None)
    caffe.set_mode_cpu()
    _forget_device_scratch()


# ------------------------------------------------------------------------------------------
# Blob
def test_cpu_blob_hands_out_the_compute_arrays_themselves():
    b = Blob((2, 3))
    assert b.data is b.xdata and b.diff is b.xdiff
    assert b.cpu_data() is b.xdata and not b.on_device
    b.data[...] = 4
    assert (b.xdata == 4).all()


def test_gpu_blob_lives_on_the_device_with_numpy_views(gpu):
    b = Blob((2, 3))
    assert isinstance(b.xdata, FakeArray) and b.on_device and b.xp is FAKE
    assert type(b.data) is np.ndarray and b.data.shape == (2, 3)
    assert type(b.diff) is np.ndarray


def test_host_write_reaches_the_device_at_the_next_layer_use(gpu):
    b = Blob((2, 3))
    d = b.data                         # device was head: one copy down
    assert gpu.d2h == 1
    d[...] = np.arange(6).reshape(2, 3)
    assert gpu.h2d == 0                # nothing copied until a layer asks
    x = b.xdata
    assert gpu.h2d == 1
    np.testing.assert_array_equal(x.view(np.ndarray), np.arange(6).reshape(2, 3))
    b.xdata
    assert gpu.h2d == 1                # device is head now: no second copy


def test_device_write_is_seen_by_the_next_host_read(gpu):
    b = Blob((4,))
    b.xdata[...] = 3.0
    np.testing.assert_array_equal(b.data, 3.0)
    assert gpu.d2h == 1
    b.data
    assert gpu.d2h == 1                # host is head: reading again copies nothing
    b.xdata[...] = 5.0                 # a layer took xdata: device is head again
    np.testing.assert_array_equal(b.data, 5.0)
    assert gpu.d2h == 2


def test_cpu_data_reads_without_making_the_host_head(gpu):
    b = Blob((3,))
    b.xdata[...] = 2.0
    np.testing.assert_array_equal(b.cpu_data(), 2.0)
    assert gpu.d2h == 1
    b.xdata
    assert gpu.h2d == 0                # synced, so nothing goes back up
    b.data                             # pycaffe view: host becomes head
    b.xdata
    assert gpu.h2d == 1


def test_data_setter_writes_without_reading_the_device_first(gpu):
    b = Blob((2, 2))
    b.data = np.full((2, 2), 7.0)
    assert gpu.d2h == 0
    np.testing.assert_array_equal(b.xdata.view(np.ndarray), 7.0)
    b.data = FAKE.asarray(np.ones((2, 2)))   # a device array is written on the device
    np.testing.assert_array_equal(b.data, 1.0)


def test_diff_syncs_like_data(gpu):
    b = Blob((5,))
    b.xdiff[...] = 1.5
    np.testing.assert_array_equal(b.diff, 1.5)
    b.diff[...] = -2.0
    np.testing.assert_array_equal(b.xdiff.view(np.ndarray), -2.0)
    b.diff = np.arange(5.0)
    np.testing.assert_array_equal(b.cpu_diff(), np.arange(5.0))
    np.testing.assert_array_equal(b.xdiff.view(np.ndarray), np.arange(5.0))


def test_reshape_within_capacity_keeps_host_writes(gpu):
    b = Blob((2, 4))
    b.data[...] = np.arange(8).reshape(2, 4)     # host is head
    b.reshape(4)                                 # smaller view, same buffer
    np.testing.assert_array_equal(b.xdata.view(np.ndarray), [0, 1, 2, 3])
    b.reshape(8)                                 # back: the values beyond 4 survived
    np.testing.assert_array_equal(b.data, np.arange(8))
    b.data[...] = 9
    b.reshape(2)
    b.reshape(2, 4)
    np.testing.assert_array_equal(b.xdata.view(np.ndarray), 9)


def test_shared_data_shares_the_sync_state(gpu):
    a = Blob((2, 3))
    v = Blob((6,))
    v.share_data(a)
    a.data[...] = 4.0                            # host write through one blob
    np.testing.assert_array_equal(v.xdata.view(np.ndarray), 4.0)   # seen through the other
    v.xdata[...] = 1.0
    np.testing.assert_array_equal(a.data, 1.0)
    v.share_diff(a)
    a.diff[...] = 3.0
    np.testing.assert_array_equal(v.xdiff.view(np.ndarray), 3.0)


def test_proto_round_trip_on_the_device(gpu):
    b = Blob((2, 3))
    b.xdata[...] = FAKE.asarray(np.arange(6.0).reshape(2, 3))
    b.xdiff[...] = 0.5
    proto = b.to_proto(write_diff=True)
    c = Blob()
    c.from_proto(proto)
    np.testing.assert_array_equal(c.xdata.view(np.ndarray), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(c.cpu_diff(), 0.5)


def test_move_blobs_keeps_values_and_sharing():
    a, c = Blob((2, 2)), Blob((2, 2))
    a.data[...] = [[1, 2], [3, 4]]
    a.diff[...] = 0.25
    v = Blob((4,))
    v.share_data(a)
    backend.use_device_module(FAKE)
    _STRICT[0] = True
    try:
        move_blobs([a, v, c], FAKE)
        assert isinstance(a.xdata, FakeArray) and v._data_buf is a._data_buf
        a.data[...] = 8
        np.testing.assert_array_equal(v.xdata.view(np.ndarray), 8)
        np.testing.assert_array_equal(a.cpu_diff(), 0.25)
        move_blobs([a, v, c], np)
        assert type(a.xdata) is np.ndarray and v._data_buf is a._data_buf
        np.testing.assert_array_equal(v.data, 8)
    finally:
        _STRICT[0] = False
        backend.use_device_module(None)


def test_fake_device_refuses_host_arrays(gpu):
    b = Blob((3,))
    with pytest.raises(TypeError):
        b.xdata + np.ones(3)
    with pytest.raises(TypeError):
        b.xdata[...] = np.ones(3)
    b.xdata = np.ones(3)                         # the xdata setter converts for the caller
    np.testing.assert_array_equal(b.data, 1.0)


# ------------------------------------------------------------------------------------------
# Nets and solvers in GPU mode
NET = """
name: "sync"
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 6 dim: 2 dim: 6 dim: 6 } shape { dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "bn" type: "BatchNorm" bottom: "pool" top: "pool" }
layer { name: "scale" type: "Scale" bottom: "pool" top: "pool"
        scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "pool" top: "pool" }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
"""


def _net_param(text=NET):
    from google.protobuf import text_format
    return text_format.Parse(text, caffe_pb2.NetParameter())


def _inputs(seed=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((6, 2, 6, 6)).astype(np.float32),
            rng.integers(0, 3, 6).astype(np.float32))


def _run(net):
    x, y = _inputs()
    out = net.forward(data=x, label=y)
    net.backward()
    grads = [b.cpu_diff().copy() for blobs in net.params.values() for b in blobs]
    return out, grads


def test_gpu_mode_net_matches_cpu_through_pycaffe(gpu):
    net_gpu = caffe.Net(_net_param(), caffe.TRAIN)
    assert all(b.on_device for b in net_gpu.blobs.values())
    caffe.set_mode_cpu()
    caffe.set_random_seed(5)
    net_cpu = caffe.Net(_net_param(), caffe.TRAIN)
    caffe.set_mode_gpu()
    for name, blobs in net_cpu.params.items():
        for b_cpu, b_gpu in zip(blobs, net_gpu.params[name]):
            b_gpu.data[...] = b_cpu.data
    out_gpu, g_gpu = _run(net_gpu)
    caffe.set_mode_cpu()
    out_cpu, g_cpu = _run(net_cpu)
    for k in out_cpu:
        assert type(out_gpu[k]) is np.ndarray
        np.testing.assert_allclose(out_gpu[k], out_cpu[k], rtol=1e-5, atol=1e-6)
    for a, b in zip(g_gpu, g_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_net_built_on_cpu_follows_a_switch_to_gpu(gpu):
    caffe.set_mode_cpu()
    net = caffe.Net(_net_param(), caffe.TRAIN)
    out_cpu, _ = _run(net)
    w = net.params["conv"][0].data.copy()
    caffe.set_mode_gpu()
    out_gpu, _ = _run(net)                      # moves every blob first
    assert net.params["conv"][0].on_device
    np.testing.assert_array_equal(net.params["conv"][0].data, w)
    np.testing.assert_allclose(out_gpu["loss"], out_cpu["loss"], rtol=1e-5)
    caffe.set_mode_cpu()
    _run(net)
    assert not net.params["conv"][0].on_device


def test_forward_backward_reads_nothing_from_the_device(gpu):
    """No host round trip per layer or per iteration: the loss stays a device scalar."""
    net = caffe.Net(_net_param(), caffe.TRAIN)
    x, y = _inputs()
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = y
    net.forward_backward()                       # first pass: the one-off label checks
    COUNT.reset()
    loss = net.forward_backward()
    assert isinstance(loss, FakeArray)
    assert (COUNT.d2h, COUNT.syncs) == (0, 0), COUNT
    assert COUNT.h2d == 0                        # inputs were already on the device
    assert np.isfinite(float(loss))


SOLVER_NET = """
name: "lin"
layer { name: "in" type: "Input" top: "x" top: "y"
        input_param { shape { dim: 8 dim: 5 } shape { dim: 8 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""


def _solver(solver_type, display=0, **extra):
    sp = caffe_pb2.SolverParameter(type=solver_type, base_lr=0.05, lr_policy="fixed",
                                   momentum=0.9 if solver_type in ("SGD", "Nesterov") else 0,
                                   weight_decay=0.01, display=display, max_iter=100,
                                   random_seed=11, average_loss=3, **extra)
    sp.train_net_param.CopyFrom(_net_param(SOLVER_NET))
    s = caffe.get_solver(sp)
    rng = np.random.default_rng(0)
    s.net.blobs["x"].data[...] = rng.standard_normal((8, 5))
    s.net.blobs["y"].data[...] = rng.standard_normal((8, 2))
    return s


@pytest.mark.parametrize("solver_type", ["SGD", "Nesterov", "AdaGrad", "RMSProp",
                                         "AdaDelta", "Adam"])
def test_solver_on_the_device_tracks_the_cpu(gpu, solver_type):
    s_gpu = _solver(solver_type)
    s_gpu.step(6)
    caffe.set_mode_cpu()
    s_cpu = _solver(solver_type)
    s_cpu.step(6)
    for name in s_cpu.net.params:
        for a, b in zip(s_gpu.net.params[name], s_cpu.net.params[name]):
            np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)
    assert s_gpu.smoothed_loss == pytest.approx(s_cpu.smoothed_loss, rel=1e-5)


def test_solver_reads_the_loss_once_per_display(gpu, caplog):
    import logging
    s = _solver("SGD", display=5)
    s.step(1)
    COUNT.reset()
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        s.step(10)
    # iterations 5 and 10 display: one stacked copy of the pending losses each, plus the
    # net output printed at each display; nothing in between.
    assert COUNT.syncs == 0, COUNT
    assert COUNT.d2h <= 4, COUNT
    assert sum("), loss = " in r.getMessage() for r in caplog.records) == 2
    s.step(3)                                    # no display: the losses stay pending
    COUNT.reset()
    before = s.last_smoothed_loss                # never waits for the device
    assert COUNT.d2h == 0 and len(s._loss.pending) == 3
    after = s.smoothed_loss                      # reading it copies the pending losses once
    assert COUNT.d2h == 1 and not s._loss.pending and after != before


def test_snapshot_and_restore_from_the_device(gpu, tmp_path):
    s = _solver("SGD", snapshot_prefix=str(tmp_path / "snap"))
    s.step(3)
    model, state = s.snapshot()
    w = s.net.params["ip"][0].data.copy()
    s.step(2)
    s.restore(state)
    np.testing.assert_array_equal(s.net.params["ip"][0].data, w)
    assert s.iter == 3 and os.path.exists(model)


def test_test_phase_sums_outputs_on_the_device(gpu):
    sp = caffe_pb2.SolverParameter(base_lr=0.01, lr_policy="fixed", display=0, max_iter=10,
                                   test_iter=[4], test_interval=100, random_seed=2,
                                   test_initialization=False)
    sp.net_param.CopyFrom(_net_param(SOLVER_NET))
    s = caffe.get_solver(sp)
    COUNT.reset()
    means = s.test(0)
    assert COUNT.syncs <= 1 and len(means) == 1 and np.isfinite(means[0])


# ------------------------------------------------------------------------------------------
# The GPU parity cases of test_gpu.py on the stand-in device
import test_gpu  # noqa: E402  (tests/ is on sys.path)


@pytest.mark.parametrize("ltype,index", test_gpu._ids())
def test_gpu_parity_case_on_a_device_module(gpu, tmp_path, monkeypatch, ltype, index):
    """Every layer runs on device arrays without mixing NumPy arrays in (CuPy refuses that)
    and matches the CPU: the array-module path of each layer, checked without a GPU."""
    test_gpu.test_layer_parity(None, tmp_path, monkeypatch, ltype, index, True)


def test_data_layers_on_a_device_module(gpu, tmp_path):
    test_gpu.test_data_layers_parity(None, tmp_path)

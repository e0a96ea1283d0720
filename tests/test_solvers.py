"""Solvers: every update rule against a float64 hand computation, learning-rate policies at
their boundaries, iter_size accumulation, snapshot/resume equality, the test phase and the
errors for bad solver files."""
import logging
import math

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.layer import Layer, register
from minicaffe.proto import caffe_pb2
from minicaffe.io import parse_text
from log_assertions import assert_logged

N, D, K = 4, 3, 2

INPUT_NET = f"""
name: "tiny"
layer {{ name: "data" type: "Input" top: "data" top: "label"
  input_param {{ shape {{ dim: {N} dim: {D} }} shape {{ dim: {N} dim: {K} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "out"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: {K}
    weight_filler {{ type: "gaussian" std: 0.5 }}
    bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" }}
"""


def dummy_net(batch, label_filler='type: "gaussian" std: 1'):
    return f"""
name: "dummy"
layer {{ name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {{ data_filler {{ type: "gaussian" std: 1 }} data_filler {{ {label_filler} }}
    shape {{ dim: {batch} dim: {D} }} shape {{ dim: {batch} dim: {K} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "out"
  inner_product_param {{ num_output: {K} weight_filler {{ type: "gaussian" std: 0.5 }}
    bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" }}
"""


def solver_param(text, net=INPUT_NET):
    p = parse_text(text, caffe_pb2.SolverParameter())
    if not (p.HasField("net") or p.HasField("train_net_param") or p.HasField("net_param")):
        parse_text(net, p.net_param)
    return p


def f32(x):
    return float(np.float32(x))


# -- hand computation ------------------------------------------------------------------------
def grads(W, b, X, Y):
    """EuclideanLoss(XW^T + b, Y) = sum(r^2) / (2N): dW = r^T X / N, db = sum_n r / N."""
    r = X @ W.T + b - Y
    return [r.T @ X / len(X), r.sum(0) / len(X)]


def reference(kind, hp, W, b, X, Y, steps):
    """Caffe's update rules written out in float64; returns params and history per step."""
    params = [W.astype(np.float64), b.astype(np.float64)]
    lr_mult, decay_mult = [1.0, 2.0], [1.0, 0.0]
    h1 = [np.zeros_like(q) for q in params]
    h2 = [np.zeros_like(q) for q in params]
    out = []
    for it in range(steps):
        g_all = grads(params[0], params[1], X, Y)
        rate = hp["base_lr"] * hp.get("gamma", 1.0) ** (it // hp["stepsize"]) \
            if "stepsize" in hp else hp["base_lr"]
        for k in range(2):
            g = g_all[k]
            decay = hp.get("weight_decay", 0.0) * decay_mult[k]
            if hp.get("reg") == "L1":
                g = g + decay * np.sign(params[k])
            else:
                g = g + decay * params[k]
            lr = rate * lr_mult[k]
            mom = hp.get("momentum", 0.0)
            delta = hp.get("delta", f32(1e-8))
            if kind == "SGD":
                h1[k] = mom * h1[k] + lr * g
                step = h1[k]
            elif kind == "Nesterov":
                prev = h1[k]
                h1[k] = mom * h1[k] + lr * g
                step = (1 + mom) * h1[k] - mom * prev
            elif kind == "AdaGrad":
                h1[k] = h1[k] + g * g
                step = lr * g / (np.sqrt(h1[k]) + delta)
            elif kind == "RMSProp":
                rd = hp["rms_decay"]
                h1[k] = rd * h1[k] + (1 - rd) * g * g
                step = lr * g / (np.sqrt(h1[k]) + delta)
            elif kind == "AdaDelta":
                h1[k] = mom * h1[k] + (1 - mom) * g * g
                upd = g * np.sqrt((h2[k] + delta) / (h1[k] + delta))
                h2[k] = mom * h2[k] + (1 - mom) * upd * upd
                step = lr * upd
            elif kind == "Adam":
                b1, b2, t = mom, hp["momentum2"], it + 1
                h1[k] = b1 * h1[k] + (1 - b1) * g
                h2[k] = b2 * h2[k] + (1 - b2) * g * g
                corr = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                step = lr * corr * h1[k] / (np.sqrt(h2[k]) + delta)
            params[k] = params[k] - step
        out.append(([q.copy() for q in params], [q.copy() for q in h1], [q.copy() for q in h2]))
    return out


CASES = {
    "SGD": ('type: "SGD" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 momentum: 0.9 '
            'weight_decay: 0.05',
            dict(base_lr=f32(0.1), gamma=0.5, stepsize=2, momentum=f32(0.9),
                 weight_decay=f32(0.05))),
    "Nesterov": ('type: "Nesterov" base_lr: 0.1 lr_policy: "fixed" momentum: 0.8 '
                 'weight_decay: 0.05 regularization_type: "L1"',
                 dict(base_lr=f32(0.1), momentum=f32(0.8), weight_decay=f32(0.05), reg="L1")),
    "AdaGrad": ('type: "AdaGrad" base_lr: 0.2 lr_policy: "fixed" delta: 0.001 '
                'weight_decay: 0.01',
                dict(base_lr=f32(0.2), delta=f32(0.001), weight_decay=f32(0.01))),
    "RMSProp": ('type: "RMSProp" base_lr: 0.05 lr_policy: "fixed" rms_decay: 0.9 delta: 0.0001',
                dict(base_lr=f32(0.05), rms_decay=f32(0.9), delta=f32(1e-4))),
    "AdaDelta": ('type: "AdaDelta" base_lr: 1.0 lr_policy: "fixed" momentum: 0.95 delta: 0.000001 '
                 'weight_decay: 0.01',
                 dict(base_lr=1.0, momentum=f32(0.95), delta=f32(1e-6), weight_decay=f32(0.01))),
    "Adam": ('solver_type: ADAM base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 momentum2: 0.999',
             dict(base_lr=f32(0.01), momentum=f32(0.9), momentum2=f32(0.999))),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_update_rule_matches_hand_computation(kind):
    text, hp = CASES[kind]
    solver = caffe.get_solver(solver_param(text))
    assert type(solver).__name__ == f"{kind}Solver"
    rng = np.random.default_rng(5)
    X = rng.normal(size=(N, D)).astype(np.float32)
    Y = rng.normal(size=(N, K)).astype(np.float32)
    net = solver.net
    net.blobs["data"].data[...] = X
    net.blobs["label"].data[...] = Y
    W0 = net.params["ip"][0].data.copy()
    b0 = net.params["ip"][1].data.copy()
    expected = reference(kind, hp, W0, b0, X.astype(np.float64), Y.astype(np.float64), 3)
    for it in range(3):
        solver.step(1)
        assert solver.iter == it + 1
        params, h1, h2 = expected[it]
        np.testing.assert_allclose(net.params["ip"][0].data, params[0], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(net.params["ip"][1].data, params[1], rtol=2e-5, atol=1e-6)
        n = 2
        hist = solver.history
        assert len(hist) == (2 * n if kind in ("AdaDelta", "Adam") else n)
        np.testing.assert_allclose(hist[0], h1[0], rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(hist[1], h1[1], rtol=2e-5, atol=1e-7)
        if kind in ("AdaDelta", "Adam"):
            np.testing.assert_allclose(hist[2], h2[0], rtol=2e-5, atol=1e-9)
            np.testing.assert_allclose(hist[3], h2[1], rtol=2e-5, atol=1e-9)


def test_python_constructors_and_lr_mult_zero():
    net = INPUT_NET.replace("param { lr_mult: 2 decay_mult: 0 }", "param { lr_mult: 0 }")
    p = solver_param('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.1', net)
    for cls in (caffe.SGDSolver, caffe.NesterovSolver, caffe.AdamSolver):
        s = cls(p)
        s.net.blobs["data"].data[...] = 1.0
        b0 = s.net.params["ip"][1].data.copy()
        W0 = s.net.params["ip"][0].data.copy()
        s.step(2)
        np.testing.assert_array_equal(s.net.params["ip"][1].data, b0)   # frozen
        assert not np.array_equal(s.net.params["ip"][0].data, W0)


def test_clip_gradients_scales_to_global_norm():
    p = solver_param('base_lr: 1 lr_policy: "fixed" clip_gradients: 0.01')
    s = caffe.SGDSolver(p)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32) * 3
    Y = rng.normal(size=(N, K)).astype(np.float32)
    s.net.blobs["data"].data[...] = X
    s.net.blobs["label"].data[...] = Y
    W0 = s.net.params["ip"][0].data.astype(np.float64)
    b0 = s.net.params["ip"][1].data.astype(np.float64)
    gW, gb = grads(W0, b0, X.astype(np.float64), Y.astype(np.float64))
    norm = math.sqrt((gW ** 2).sum() + (gb ** 2).sum())
    assert norm > 0.01
    s.step(1)
    scale = 0.01 / norm
    np.testing.assert_allclose(s.net.params["ip"][0].data, W0 - scale * gW, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.net.params["ip"][1].data, b0 - 2 * scale * gb,
                               rtol=1e-5, atol=1e-7)


# -- learning-rate policies ------------------------------------------------------------------
def rates(text, iters):
    s = caffe.SGDSolver(solver_param(text + " max_iter: 10"))
    out = []
    for it in iters:
        s.iter = it
        out.append(s.get_learning_rate())
    return out


def test_lr_policies_at_boundaries():
    base, g = f32(0.1), f32(0.5)
    assert rates('base_lr: 0.1 lr_policy: "fixed"', [0, 9]) == [base, base]
    np.testing.assert_allclose(
        rates('base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 3', [0, 2, 3, 5, 6]),
        [base, base, base * g, base * g, base * g * g], rtol=1e-7)
    ge = f32(0.9)
    np.testing.assert_allclose(rates('base_lr: 0.1 lr_policy: "exp" gamma: 0.9', [0, 1, 10]),
                               [base, base * ge, base * ge ** 10], rtol=1e-7)
    gi, pw = f32(1e-2), f32(0.75)
    np.testing.assert_allclose(
        rates('base_lr: 0.1 lr_policy: "inv" gamma: 0.01 power: 0.75', [0, 100]),
        [base, base * (1 + gi * 100) ** -pw], rtol=1e-7)
    # multistep moves on at each stepvalue, one step per iteration, in order
    np.testing.assert_allclose(
        rates('base_lr: 0.1 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 4',
              range(6)), [base, base, base * g, base * g, base * g * g, base * g * g], rtol=1e-7)
    np.testing.assert_allclose(
        rates('base_lr: 0.1 lr_policy: "poly" power: 2', [0, 5, 10]),
        [base, base * 0.25, 0.0], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(
        rates('base_lr: 0.1 lr_policy: "sigmoid" gamma: 0.5 stepsize: 4', [0, 4, 8]),
        [base / (1 + math.exp(2)), base / 2, base / (1 + math.exp(-2))], rtol=1e-7)


def test_step_policy_current_step_and_lr_log(caplog):
    s = caffe.SGDSolver(solver_param(
        'base_lr: 0.1 lr_policy: "step" gamma: 0.1 stepsize: 2 display: 1 max_iter: 3'))
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        s.step(3)
    assert s.current_step == 1
    text = caplog.text
    assert "Iteration 0, lr = 0.1" in text and "Iteration 2, lr = 0.01" in text
    assert "Train net output #0: loss = " in text and "(* 1 = " in text


def test_smoothed_loss_and_callbacks():
    s = caffe.SGDSolver(solver_param('base_lr: 0.2 lr_policy: "fixed" average_loss: 2'))
    s.net.blobs["data"].data[...] = np.arange(N * D).reshape(N, D) / 10.0
    seen, starts = [], []
    s.add_callback(lambda: starts.append(s.iter),
                   lambda: seen.append(float(s.net.blobs["loss"].data)))
    s.step(3)
    assert starts == [0, 1, 2] and len(set(seen)) == 3
    assert s.smoothed_loss == pytest.approx((seen[1] + seen[2]) / 2, rel=1e-6)


# -- iter_size -------------------------------------------------------------------------------
def test_iter_size_2_equals_double_batch():
    text = ('base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.01 '
            'random_seed: 11 ')
    label = 'type: "constant" value: 0.5'
    a = caffe.SGDSolver(solver_param(text + "iter_size: 2", dummy_net(2, label)))
    b = caffe.SGDSolver(solver_param(text, dummy_net(4, label)))
    c = caffe.SGDSolver(solver_param(text, dummy_net(2, label)))
    for k in range(2):
        b.net.params["ip"][k].data[...] = a.net.params["ip"][k].data
        c.net.params["ip"][k].data[...] = a.net.params["ip"][k].data
    for s in (a, b, c):
        s.step(3)
    for k in range(2):
        np.testing.assert_allclose(a.net.params["ip"][k].data, b.net.params["ip"][k].data,
                                   rtol=1e-5, atol=1e-7)
    # ...and the accumulation matters: iter_size 1 at batch 2 sees half the data
    assert not np.allclose(c.net.params["ip"][0].data, a.net.params["ip"][0].data, atol=1e-4)


# -- snapshot and resume ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdaDelta"])
def test_resume_is_bitwise_equal_to_straight_training(tmp_path, kind):
    prefix = str(tmp_path / "run")
    text = (f'type: "{kind}" base_lr: 0.05 lr_policy: "step" gamma: 0.5 stepsize: 2 '
            f'momentum: 0.9 max_iter: 6 snapshot: 3 snapshot_prefix: "{prefix}" random_seed: 7')
    p = solver_param(text, dummy_net(3))
    straight = caffe.get_solver(p)
    straight.solve()
    w_straight = [b.data.copy() for b in straight.net.params["ip"]]
    h_straight = [h.copy() for h in straight.history]
    assert (tmp_path / "run_iter_3.caffemodel").exists()
    assert (tmp_path / "run_iter_6.solverstate").exists()
    state = caffe_pb2.SolverState()
    state.ParseFromString((tmp_path / "run_iter_3.solverstate").read_bytes())
    assert state.iter == 3 and state.current_step == 1
    assert state.learned_net == prefix + "_iter_3.caffemodel"
    assert len(state.history) == (4 if kind != "SGD" else 2)

    resumed = caffe.get_solver(p)
    resumed.solve(resume_file=str(tmp_path / "run_iter_3.solverstate"))
    assert resumed.iter == 6
    for a, b in zip(w_straight, resumed.net.params["ip"]):
        np.testing.assert_array_equal(a, b.data)
    for a, b in zip(h_straight, resumed.history):
        np.testing.assert_array_equal(a, b)


def test_snapshot_files_load_back(tmp_path):
    p = solver_param(f'base_lr: 0.1 lr_policy: "fixed" snapshot_prefix: "{tmp_path}/m"')
    s = caffe.SGDSolver(p)
    s.net.blobs["data"].data[...] = 1
    s.step(2)
    model, state = s.snapshot()
    assert model.endswith("m_iter_2.caffemodel") and state.endswith("m_iter_2.solverstate")
    net = caffe.Net(parse_text(INPUT_NET, caffe_pb2.NetParameter()), model, caffe.TEST)
    np.testing.assert_array_equal(net.params["ip"][0].data, s.net.params["ip"][0].data)
    wrong = caffe.AdamSolver(p)      # 4 history blobs expected, 2 stored
    with pytest.raises(caffe.MiniCaffeError, match="history"):
        wrong.restore(state)


# -- test phase ------------------------------------------------------------------------------
@register("TestSolverCounter")
class _Counter(Layer):
    """Outputs 1, 2, 3, ... on successive forwards (a scalar)."""
    exact_num_bottom = 0
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(())

    def forward(self, bottom, top):
        self.calls += 1
        top[0].xdata[...] = self.calls

    def backward(self, top, propagate_down, bottom):
        pass


TEST_NET = """
name: "counter"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "out"
  inner_product_param { num_output: 2 } }
layer { name: "count" type: "TestSolverCounter" top: "count" }
layer { name: "count2" type: "TestSolverCounter" top: "count2" loss_weight: 0.5 }
"""


def test_test_phase_means_and_shared_weights(caplog):
    p = solver_param('base_lr: 0.1 lr_policy: "fixed" max_iter: 4 test_iter: 4 '
                     'test_interval: 2 test_compute_loss: true')
    parse_text(TEST_NET, p.test_net_param.add())
    s = caffe.SGDSolver(p)
    tnet = s.test_nets[0]
    assert tnet.params["ip"][0] is s.net.params["ip"][0]
    s.net.blobs["data"].data[...] = 1
    tnet.blobs["data"].data[...] = np.arange(6).reshape(2, 3)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        s.solve()
    # tests at iterations 0, 2 and 4: counters 1..4, 5..8, 9..12; "out" (2x2) comes first
    assert s.mean_scores[0][4:] == [10.5, 10.5]
    text = caplog.text
    assert_logged(text, "Iteration 0, Testing net (#0)", "    Test net output #4: count = 2.5",
                  "    Test net output #5: count2 = 2.5 (* 0.5 = 1.25 loss)",
                  "Test net output #4: count = 6.5", "Test loss: 1.25", "Optimization Done.")
    # the test net's "out" was computed from the trained (shared) weights
    W, b = s.net.params["ip"][0].data, s.net.params["ip"][1].data
    assert not np.allclose(b, 0)
    expected = np.arange(6).reshape(2, 3) @ W.T.astype(np.float64) + b
    np.testing.assert_allclose(s.mean_scores[0][:4], expected.ravel(), rtol=1e-5)


def test_generic_net_gives_train_and_test_phase():
    net = INPUT_NET + """
layer { name: "train_only" type: "TestSolverCounter" top: "t" include { phase: TRAIN } }
layer { name: "test_only" type: "TestSolverCounter" top: "u" include { phase: TEST } }"""
    p = solver_param('base_lr: 0.1 lr_policy: "fixed" test_iter: 1 test_iter: 2 '
                     'test_interval: 5', net)
    s = caffe.SGDSolver(p)
    assert "train_only" in s.net.layer_by_name and "test_only" not in s.net.layer_by_name
    assert len(s.test_nets) == 2
    assert all("test_only" in t.layer_by_name for t in s.test_nets)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("text,match", [
    ('base_lr: 0.1 lr_policy: "fixed" test_iter: 1', "test_iter"),
    ('base_lr: 0.1 lr_policy: "bogus"', "lr_policy"),
    ('base_lr: 0.1', "lr_policy is not set"),
    ('base_lr: 0.1 lr_policy: "step"', "stepsize"),
    ('type: "AdaGrad" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9', "Momentum"),
    ('type: "SGD" solver_type: NESTEROV base_lr: 0.1 lr_policy: "fixed"', "solver_type"),
    ('base_lr: 0.1 lr_policy: "fixed" regularization_type: "L3"', "regularization_type"),
])
def test_bad_solver_settings(text, match):
    p = solver_param(text)
    if "test_iter" in text:       # a train_net_param has no test net to go with test_iter
        p.ClearField("net_param")
        parse_text(INPUT_NET, p.train_net_param)
    with pytest.raises(caffe.MiniCaffeError, match=match):
        caffe.get_solver(p)


def test_unknown_type_and_missing_files(tmp_path):
    with pytest.raises(caffe.MiniCaffeError, match="unknown solver type 'Foo'"):
        caffe.get_solver(solver_param('type: "Foo" base_lr: 1 lr_policy: "fixed"'))
    with pytest.raises(caffe.MiniCaffeError, match="no such file"):
        caffe.get_solver(str(tmp_path / "missing.prototxt"))
    bad = tmp_path / "bad.prototxt"
    bad.write_text("base_lr: 0.1\nlr_policy: fixed\n")
    with pytest.raises(caffe.MiniCaffeError, match="bad.prototxt:2"):
        caffe.get_solver(str(bad))
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "net.prototxt").write_text(INPUT_NET)
    (sub / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    with pytest.raises(caffe.MiniCaffeError, match="did you mean '.*sub/net.prototxt'"):
        caffe.get_solver(str(sub / "solver.prototxt"))


def test_solver_file_defaults(tmp_path, monkeypatch):
    (tmp_path / "net.prototxt").write_text(INPUT_NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" solver_type: NESTEROV')
    monkeypatch.chdir(tmp_path)
    s = caffe.get_solver("solver.prototxt")
    assert isinstance(s, caffe.NesterovSolver)
    assert s.param.snapshot_prefix == "solver"
    assert not s.param.HasField("solver_type")

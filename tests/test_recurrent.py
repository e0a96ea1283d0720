"""RNN, LSTM and LSTMUnit: forward against per-step loops written from the equations, gradients
by finite differences, Caffe's parameter layout, cont resets, expose_hidden, carried state."""
import math

import numpy as np
import pytest

from gradcheck import check_gradients, layer_param, setup_layer
from minicaffe.errors import LayerError

F = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'
T, N, H = 4, 3, 3


def rec_text(kind, extra=""):
    return f'name: "rec" type: "{kind}" recurrent_param {{ num_output: {H} {extra} {F} }}'


def conts():
    c = np.ones((T, N))
    c[0] = 0          # every stream starts a sequence
    c[2, 1] = 0       # stream 1 starts another one mid-batch
    return c


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def matvec(w, v):
    return [sum(w[r][k] * v[k] for k in range(len(v))) for r in range(len(w))]


def ref_rnn(x, cont, xs, params, h0):
    """o[t, n] from the RNN equations, one stream and one unit at a time."""
    w_xh, b_h = params[0], params[1]
    w_s = params[2] if xs is not None else None
    w_hh, w_ho, b_o = params[-3:]
    o = np.zeros((T, N, H))
    hT = np.zeros((N, H))
    for n in range(N):
        h = list(h0[n])
        for t in range(T):
            xt = x[t, n].ravel()
            hc = [cont[t, n] * v for v in h]
            a = [u + v + b for u, v, b in zip(matvec(w_hh, hc), matvec(w_xh, xt), b_h)]
            if w_s is not None:
                a = [u + v for u, v in zip(a, matvec(w_s, xs[n].ravel()))]
            h = [math.tanh(v) for v in a]
            o[t, n] = [math.tanh(v + b) for v, b in zip(matvec(w_ho, h), b_o)]
        hT[n] = h
    return o, hT


def ref_lstm(x, cont, xs, params, h0, c0):
    w_xc, b_c = params[0], params[1]
    w_s = params[2] if xs is not None else None
    w_hc = params[-1]
    out = np.zeros((T, N, H))
    hT, cT = np.zeros((N, H)), np.zeros((N, H))
    for n in range(N):
        h, c = list(h0[n]), list(c0[n])
        for t in range(T):
            hc = [cont[t, n] * v for v in h]
            g_in = [u + v + b for u, v, b in zip(matvec(w_hc, hc), matvec(w_xc, x[t, n].ravel()),
                                                b_c)]
            if w_s is not None:
                g_in = [u + v for u, v in zip(g_in, matvec(w_s, xs[n].ravel()))]
            for d in range(H):
                i = sig(g_in[d])
                f = cont[t, n] * sig(g_in[H + d])
                o = sig(g_in[2 * H + d])
                g = math.tanh(g_in[3 * H + d])
                c[d] = f * c[d] + i * g
                h[d] = o * math.tanh(c[d])
            out[t, n] = h
        hT[n], cT[n] = h, c
    return out, hT, cT


def run(kind, bottoms, extra="", num_top=1):
    layer, bottom, top = setup_layer(layer_param(rec_text(kind, extra)), bottoms, num_top)
    layer.forward(bottom, top)
    return layer, bottom, top


@pytest.mark.parametrize("static", [False, True])
def test_rnn_forward_matches_step_loop(static):
    rs = np.random.RandomState(3)
    x, xs = rs.standard_normal((T, N, 2, 2)), rs.standard_normal((N, 5))
    layer, _, top = run("RNN", [x, conts()] + ([xs] if static else []))
    params = [b.data for b in layer.blobs]
    want, _ = ref_rnn(x, conts(), xs if static else None, params, np.zeros((N, H)))
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("static", [False, True])
def test_lstm_forward_matches_step_loop(static):
    rs = np.random.RandomState(4)
    x, xs = rs.standard_normal((T, N, 3)), rs.standard_normal((N, 2, 2))
    layer, _, top = run("LSTM", [x, conts()] + ([xs] if static else []))
    params = [b.data for b in layer.blobs]
    zeros = np.zeros((N, H))
    want, _, _ = ref_lstm(x, conts(), xs if static else None, params, zeros, zeros)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)


def test_parameter_shapes_follow_caffes_unrolled_net():
    x, xs = np.zeros((T, N, 2, 3)), np.zeros((N, 5))
    shapes = lambda layer: [tuple(b.shape) for b in layer.blobs]  # noqa: E731
    assert shapes(run("RNN", [x, conts()])[0]) == [(H, 6), (H,), (H, H), (H, H), (H,)]
    assert shapes(run("RNN", [x, conts(), xs])[0]) == [(H, 6), (H,), (H, 5), (H, H), (H, H),
                                                       (H,)]
    assert shapes(run("LSTM", [x, conts()])[0]) == [(4 * H, 6), (4 * H,), (4 * H, H)]
    assert shapes(run("LSTM", [x, conts(), xs])[0]) == [(4 * H, 6), (4 * H,), (4 * H, 5),
                                                        (4 * H, H)]


def test_expose_hidden_takes_and_gives_the_states():
    rs = np.random.RandomState(5)
    x = rs.standard_normal((T, N, 2))
    h0, c0 = rs.standard_normal((1, N, H)), rs.standard_normal((1, N, H))
    cont = np.ones((T, N))
    layer, _, top = run("LSTM", [x, cont, h0, c0], "expose_hidden: true", num_top=3)
    want, hT, cT = ref_lstm(x, cont, None, [b.data for b in layer.blobs], h0[0], c0[0])
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(top[1].data[0], hT, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(top[2].data[0], cT, rtol=1e-12, atol=1e-12)
    layer, _, top = run("RNN", [x, cont, h0], "expose_hidden: true", num_top=2)
    want, hT = ref_rnn(x, cont, None, [b.data for b in layer.blobs], h0[0])
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(top[1].data[0], hT, rtol=1e-12, atol=1e-12)


def test_state_carries_over_to_the_next_forward():
    rs = np.random.RandomState(6)
    x1, x2 = rs.standard_normal((T, N, 2)), rs.standard_normal((T, N, 2))
    layer, bottom, top = run("LSTM", [x1, conts()])
    params = [b.data.copy() for b in layer.blobs]
    zeros = np.zeros((N, H))
    _, h1, c1 = ref_lstm(x1, conts(), None, params, zeros, zeros)
    bottom[0].data[...] = x2
    bottom[1].data[...] = 1         # continue every sequence from the first batch
    layer.forward(bottom, top)
    want, _, _ = ref_lstm(x2, np.ones((T, N)), None, params, h1, c1)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)
    layer.reset()
    layer.forward(bottom, top)
    want, _, _ = ref_lstm(x2, np.ones((T, N)), None, params, zeros, zeros)
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static", [False, True])
def test_gradients_through_time(kind, static):
    rs = np.random.RandomState(7)
    bottoms = [rs.standard_normal((T, N, 2)), conts()]
    if static:
        bottoms.append(rs.standard_normal((N, 3)))
    check_gradients(rec_text(kind), bottoms, check_bottom=[0, 2] if static else [0])


@pytest.mark.parametrize("kind,states", [("RNN", 1), ("LSTM", 2)])
def test_gradients_with_exposed_hidden_states(kind, states):
    rs = np.random.RandomState(8)
    bottoms = [rs.standard_normal((T, N, 2)), conts(), rs.standard_normal((N, 2))]
    bottoms += [rs.standard_normal((1, N, H)) for _ in range(states)]
    check_gradients(rec_text(kind, "expose_hidden: true"), bottoms, num_top=1 + states,
                    check_bottom=[0, 2] + list(range(3, 3 + states)))


def test_float32_forward_and_no_gradient_to_cont():
    rs = np.random.RandomState(11)
    x = rs.standard_normal((T, N, 2))
    layer, bottom, top = setup_layer(layer_param(rec_text("LSTM")), [x, conts()],
                                     dtype=np.float32)
    layer.forward(bottom, top)
    zeros = np.zeros((N, H))
    want, _, _ = ref_lstm(x.astype(np.float32), conts(), None,
                          [b.data.astype(np.float64) for b in layer.blobs], zeros, zeros)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5, atol=1e-6)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


def test_bottom_shape_errors():
    with pytest.raises(LayerError, match="cont"):
        run("RNN", [np.zeros((T, N, 2)), np.zeros((T, N + 1))])
    with pytest.raises(LayerError, match="timesteps"):
        layer, bottom, top = run("RNN", [np.zeros((T, N, 2)), conts()])
        bottom[0].reshape((T + 1, N, 2))
        layer.reshape(bottom, top)
    with pytest.raises(LayerError, match="3 top"):
        setup_layer(layer_param(rec_text("LSTM", "expose_hidden: true")),
                    [np.zeros((T, N, 2)), conts(), np.zeros((1, N, H)), np.zeros((1, N, H))])


# -- LSTMUnit -----------------------------------------------------------------------------------
def test_lstm_unit_forward_matches_formula():
    rs = np.random.RandomState(9)
    c_prev, gates = rs.standard_normal((1, N, H)), rs.standard_normal((1, N, 4 * H))
    cont = np.array([[1.0, 0.0, 1.0]])
    layer, bottom, top = setup_layer(layer_param('type: "LSTMUnit"'), [c_prev, gates, cont], 2)
    layer.forward(bottom, top)
    for n in range(N):
        for d in range(H):
            gi = gates[0, n]
            c = cont[0, n] * sig(gi[H + d]) * c_prev[0, n, d] + sig(gi[d]) * math.tanh(gi[3 * H + d])
            assert top[0].data[0, n, d] == pytest.approx(c, rel=1e-12, abs=1e-12)
            assert top[1].data[0, n, d] == pytest.approx(sig(gi[2 * H + d]) * math.tanh(c),
                                                         rel=1e-12, abs=1e-12)


def test_lstm_unit_gradients_and_cont_refused():
    rs = np.random.RandomState(10)
    bottoms = [rs.standard_normal((1, N, H)), rs.standard_normal((1, N, 4 * H)),
               np.array([[1.0, 0.0, 1.0]])]
    check_gradients('type: "LSTMUnit"', bottoms, num_top=2, check_bottom=[0, 1])
    layer, bottom, top = setup_layer(layer_param('type: "LSTMUnit"'), bottoms, 2)
    layer.forward(bottom, top)
    with pytest.raises(LayerError, match="sequence indicators"):
        layer.backward(top, [True, True, True], bottom)
    with pytest.raises(LayerError, match="4 \\* 3"):
        setup_layer(layer_param('type: "LSTMUnit"'), [bottoms[0], bottoms[0], bottoms[2]], 2)


NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "cont"
        input_param { shape { dim: 4 dim: 3 dim: 2 } shape { dim: 4 dim: 3 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
        recurrent_param { num_output: 3 weight_filler { type: "uniform" min: -0.5 max: 0.5 }
                          bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }
"""


def test_net_runs_saves_and_reloads_the_weights(tmp_path):
    import minicaffe as caffe
    model = tmp_path / "lstm.prototxt"
    model.write_text(NET)
    net = caffe.Net(str(model), caffe.TRAIN)
    rs = np.random.RandomState(12)
    net.blobs["x"].data[...] = rs.standard_normal((T, N, 2))
    net.blobs["cont"].data[...] = conts()
    net.forward()
    net.blobs["h"].diff[...] = 1
    net.backward()          # force_backward must leave cont alone
    assert np.abs(net.blobs["x"].diff).sum() > 0
    weights = tmp_path / "lstm.caffemodel"
    net.save(str(weights))
    again = caffe.Net(str(model), caffe.TEST, weights=str(weights))
    assert [p.data.shape for p in again.params["lstm"]] == [(12, 2), (12,), (12, 3)]
    for a, b in zip(again.params["lstm"], net.params["lstm"]):
        np.testing.assert_array_equal(a.data, b.data)


def _gpu_ready():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


GPU_CASES = [(rec_text("RNN"), [(T, N, 2), "cont", (N, 5)], 1, [True, False, True]),
             (rec_text("LSTM", "expose_hidden: true"), [(T, N, 2), "cont", (1, N, H), (1, N, H)],
              3, [True, False, True, True]),
             ('type: "LSTMUnit"', [(1, N, H), (1, N, 4 * H), "cont1"], 2, [True, True, False])]


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_ready(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("case", range(len(GPU_CASES)))
def test_gpu_matches_cpu(case):
    import minicaffe as caffe
    from minicaffe.blob import Blob
    from minicaffe.layer import create_layer
    text, shapes, num_top, prop = GPU_CASES[case]
    rs = np.random.RandomState(13)
    arrays = [conts() if s == "cont" else np.array([[1.0, 0.0, 1.0]]) if s == "cont1" else
              rs.standard_normal(s) for s in shapes]
    diffs = None
    results = []
    for mode in (caffe.set_mode_cpu, caffe.set_mode_gpu):
        mode()
        caffe.set_random_seed(3)
        layer = create_layer(layer_param(text))
        bottom = [Blob(a.shape) for a in arrays]
        for b, a in zip(bottom, arrays):
            b.data[...] = a
        top = [Blob() for _ in range(num_top)]
        layer.setup(bottom, top)
        layer.forward(bottom, top)
        if diffs is None:
            diffs = [rs.standard_normal(t.shape) for t in top]
        for t, d in zip(top, diffs):
            t.diff[...] = d
        layer.backward(top, prop, bottom)
        results.append([t.data.copy() for t in top] +
                       [b.diff.copy() for b, p in zip(bottom, prop) if p] +
                       [b.diff.copy() for b in layer.blobs])
    caffe.set_mode_cpu()
    for cpu, gpu in zip(*results):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)

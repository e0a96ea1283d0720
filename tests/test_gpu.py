"""GPU mode on a real NVIDIA GPU through CuPy: every registered layer against the CPU
(forward, backward, parameter gradients, float32 tolerance) with the fused kernels on and
off, a 20-iteration training run on the GPU tracking the CPU run, the memory pool over 200
iterations, and the training loop never waiting for the device.

Everything but ``test_kernel_sources_compile`` skips without CuPy and a usable GPU (CI has
none); that one needs only CuPy's NVRTC bindings (pip install cupy-cuda13x), no GPU. The
host/device sync logic itself is tested on the CPU in test_blob_sync.py.
"""
import os
import textwrap

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import backend
from minicaffe.blob import Blob
from minicaffe.layer import create_layer, layer_types
from minicaffe.proto import caffe_pb2

from gradcheck import layer_param

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))


def _gpu_reason():
    try:
        import cupy  # noqa: F401
    except Exception as e:  # ImportError or a broken install
        return f"CuPy is not installed ({type(e).__name__}: {e}); pip install minicaffe[gpu]"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return f"CuPy finds no usable GPU ({type(e).__name__}: {e})"
    if n < 1:
        return "CuPy finds no GPU"
    return None


GPU_REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=str(GPU_REASON))
pytestmark = pytest.mark.gpu


@pytest.fixture
def gpu():
    caffe.set_mode_gpu()
    caffe.set_device(0)
    backend.set_fused_kernels(True)
    yield backend.cupy_module()
    backend.set_fused_kernels(True)
    caffe.set_mode_cpu()


# ------------------------------------------------------------------------------------------
# Kernel sources (NVRTC only; runs without a GPU where CuPy is installed)
def _elementwise_check_source(name, dtype):
    """An ElementwiseKernel's operation inside a plain kernel with its parameters declared,
    so NVRTC checks the body as CuPy will compile it."""
    from minicaffe.kernels import cuda
    ins, outs, op = cuda.elementwise_parts(name, dtype)
    out_names = [p.split()[-1] for p in outs.split(",")]
    args, body = [], []
    for p in (ins + ", " + outs).split(","):
        words = p.split()
        if words[0] == "raw":
            args.append(f"{words[1]}* {words[2]}")
        elif words[1] in out_names:
            args.append(f"{words[0]}* _raw_{words[1]}")
            body.append(f"{words[0]}& {words[1]} = _raw_{words[1]}[i];")
        else:
            args.append(f"{words[0]} {words[1]}")
    return ("typedef float float32; typedef double float64; typedef int int32;\n"
            f'extern "C" __global__ void check_{name}({", ".join(args)}) {{\n'
            "  const long long i = blockIdx.x;\n  " + "\n  ".join(body) + "\n  " + op + "\n}\n")


def test_kernel_sources_compile():
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc",
                                reason="CuPy (with NVRTC) is not installed")
    from minicaffe.kernels import cuda
    try:
        nvrtc.getVersion()
    except Exception as e:
        pytest.skip(f"NVRTC library not loadable: {e}")
    sources = []
    for dt in (np.float32, np.float64):
        sources += [(m, cuda.raw_source(m, dt)) for m in cuda.RAW_SOURCES]
        sources += [(n, _elementwise_check_source(n, dt)) for n in cuda.ELEMENTWISE_SOURCES]
    for name, src in sources:
        prog = nvrtc.createProgram(src, name + ".cu", [], [])
        try:
            nvrtc.compileProgram(prog, ["-arch=compute_80", "--std=c++11"])
        except Exception as e:
            pytest.fail(f"kernel source '{name}' does not compile: {e}\n"
                        f"{nvrtc.getProgramLog(prog)}")


# ------------------------------------------------------------------------------------------
# Layer parity. Each case: layer prototxt (name "l"), bottom array makers, number of tops,
# propagate_down, options (phase, in_place, forward_only).
def rn(*shape):
    return lambda r: r.standard_normal(shape).astype(np.float32)


def pos(*shape):
    return lambda r: r.uniform(0.5, 2.0, shape).astype(np.float32)


def ints(hi, *shape):
    return lambda r: r.integers(0, hi, shape).astype(np.float32)


def probs(n, c):
    def make(r):
        p = r.uniform(0.1, 1.0, (n, c))
        return (p / p.sum(1, keepdims=True)).astype(np.float32)
    return make


def case(text, bottoms, num_top=1, prop=None, **opts):
    return dict(text=text, bottoms=bottoms, num_top=num_top, prop=prop, **opts)


F = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'

CASES = {
    "AbsVal": [case('type: "AbsVal"', [rn(2, 3, 4, 5)])],
    "Accuracy": [case('type: "Accuracy" accuracy_param { top_k: 2 }', [rn(6, 5), ints(5, 6)],
                      num_top=2, forward_only=True),
                 case('type: "Accuracy" accuracy_param { ignore_label: 1 }',
                      [rn(3, 4, 2, 2), ints(4, 3, 2, 2)], forward_only=True)],
    "ArgMax": [case('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [rn(4, 7)],
                    forward_only=True)],
    "BNLL": [case('type: "BNLL"', [rn(2, 3, 4)])],
    "BatchNorm": [case('type: "BatchNorm"', [rn(4, 3, 5, 6)]),
                  case('type: "BatchNorm"', [rn(4, 3, 5, 6)], in_place=True),
                  case('type: "BatchNorm"', [rn(16, 7)]),
                  case('type: "BatchNorm" batch_norm_param { use_global_stats: true }',
                       [rn(4, 3, 5, 6)], stats=True)],
    "BatchReindex": [case('type: "BatchReindex"', [rn(5, 3, 2), ints(5, 7)], prop=[True, False])],
    "Bias": [case('type: "Bias" bias_param { filler { type: "gaussian" } }', [rn(3, 4, 5, 2)]),
             case('type: "Bias" bias_param { filler { type: "gaussian" } }', [rn(3, 4, 5, 2)],
                  in_place=True),
             case('type: "Bias" bias_param { axis: 0 num_axes: 2 }', [rn(3, 4, 5), rn(3, 4)])],
    "Clip": [case('type: "Clip" clip_param { min: -0.5 max: 0.7 }', [rn(3, 4, 5)])],
    "Concat": [case('type: "Concat"', [rn(2, 3, 4), rn(2, 5, 4)]),
               case('type: "Concat" concat_param { axis: 0 }', [rn(2, 3), rn(4, 3)])],
    "ContrastiveLoss": [case('type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }',
                             [rn(6, 4), rn(6, 4), ints(2, 6)], prop=[True, True, False])],
    "Convolution": [
        case(f'type: "Convolution" convolution_param {{ num_output: 5 kernel_size: 3 pad: 1 '
             f'{F} }}', [rn(2, 3, 7, 6)]),
        case(f'type: "Convolution" convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 '
             f'dilation: 2 group: 2 pad: 2 {F} }}', [rn(2, 4, 9, 8)]),
        case(f'type: "Convolution" convolution_param {{ num_output: 6 kernel_h: 1 kernel_w: 3 '
             f'stride_h: 2 stride_w: 1 bias_term: false {F} }}', [rn(3, 2, 5, 5)])],
    "Crop": [case('type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }',
                  [rn(2, 3, 6, 7), rn(2, 3, 3, 4)], prop=[True, False])],
    "Deconvolution": [
        case(f'type: "Deconvolution" convolution_param {{ num_output: 3 kernel_size: 3 '
             f'stride: 2 pad: 1 {F} }}', [rn(2, 4, 4, 5)])],
    "Dropout": [case('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', [rn(3, 4, 5)],
                     phase=TEST),
                case('type: "Dropout"', [rn(8, 50)], dropout=True)],
    "DummyData": [case('type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } '
                       'data_filler { type: "constant" value: 1.5 } }', [], forward_only=True)],
    "ELU": [case('type: "ELU" elu_param { alpha: 0.7 }', [rn(3, 4, 5)]),
            case('type: "ELU"', [rn(3, 4, 5)], in_place=True)],
    "Eltwise": [case('type: "Eltwise" eltwise_param { operation: PROD }', [rn(3, 4), rn(3, 4)]),
                case('type: "Eltwise" eltwise_param { operation: SUM coeff: 2 coeff: -1 }',
                     [rn(3, 4), rn(3, 4)]),
                case('type: "Eltwise" eltwise_param { operation: MAX }', [rn(3, 4), rn(3, 4),
                                                                         rn(3, 4)])],
    "Embed": [case(f'type: "Embed" embed_param {{ num_output: 4 input_dim: 6 {F} }}',
                   [ints(6, 5)], prop=[False])],
    "EuclideanLoss": [case('type: "EuclideanLoss"', [rn(4, 3, 2), rn(4, 6)])],
    "Exp": [case('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', [rn(3, 4)])],
    "Flatten": [case('type: "Flatten"', [rn(2, 3, 4, 5)])],
    "HingeLoss": [case('type: "HingeLoss"', [rn(6, 4), ints(4, 6)], prop=[True, False]),
                  case('type: "HingeLoss" hinge_loss_param { norm: L2 }', [rn(6, 4), ints(4, 6)],
                       prop=[True, False])],
    "InfogainLoss": [case('type: "InfogainLoss"', [rn(5, 4), ints(4, 5), pos(4, 4)],
                          prop=[True, False, False])],
    "InnerProduct": [
        case(f'type: "InnerProduct" inner_product_param {{ num_output: 7 {F} }}',
             [rn(4, 3, 2, 2)]),
        case(f'type: "InnerProduct" inner_product_param {{ num_output: 3 transpose: true '
             f'axis: 2 {F} }}', [rn(2, 3, 5)])],
    "Input": [case('type: "Input" input_param { shape { dim: 2 dim: 3 } }', [],
                   forward_only=True)],
    "LRN": [case('type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }',
                 [rn(2, 6, 4, 5)]),
            case('type: "LRN" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }',
                 [rn(2, 3, 5, 5)])],
    "Log": [case('type: "Log" log_param { base: 3 scale: 2 shift: 0.1 }', [pos(3, 4)])],
    "MVN": [case('type: "MVN"', [rn(3, 4, 5, 2)]),
            case('type: "MVN" mvn_param { across_channels: true normalize_variance: false }',
                 [rn(3, 4, 5, 2)])],
    "MultinomialLogisticLoss": [case('type: "MultinomialLogisticLoss"',
                                     [probs(6, 4), ints(4, 6)], prop=[True, False])],
    "PReLU": [case('type: "PReLU" prelu_param { filler { type: "gaussian" } }', [rn(2, 3, 4, 5)]),
              case('type: "PReLU" prelu_param { channel_shared: true }', [rn(2, 3, 4)],
                   in_place=True)],
    "Parameter": [case('type: "Parameter" parameter_param { shape { dim: 3 dim: 4 } }', [])],
    "Pooling": [
        case('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
             [rn(2, 3, 9, 8)], num_top=2),
        case('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 }',
             [rn(2, 3, 6, 7)]),
        case('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }',
             [rn(2, 3, 9, 8)]),
        case('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [rn(2, 3, 5, 4)]),
        case('type: "Pooling" pooling_param { pool: MAX global_pooling: true }', [rn(2, 3, 5, 4)]),
        # TEST only: TRAIN samples from CuPy's generator, not the host one the CPU run uses.
        case('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }',
             [pos(2, 3, 9, 8)], phase=TEST, forward_only=True)],
    "Power": [case('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', [rn(3, 4)])],
    "Python": [case('type: "Python" python_param { module: "gpu_user_layers" layer: "Double" }',
                    [rn(3, 4)])],
    "ReLU": [case('type: "ReLU"', [rn(3, 4, 5)]),
             case('type: "ReLU" relu_param { negative_slope: 0.1 }', [rn(3, 4, 5)],
                  in_place=True)],
    "Reduction": [case('type: "Reduction" reduction_param { operation: SUMSQ axis: 1 coeff: 2 }',
                       [rn(3, 4, 5)]),
                  case('type: "Reduction" reduction_param { operation: MEAN }', [rn(3, 4)]),
                  case('type: "Reduction" reduction_param { operation: ASUM axis: 1 }',
                       [rn(3, 4)])],
    "Reshape": [case('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }',
                     [rn(2, 3, 4)])],
    "Scale": [case('type: "Scale" scale_param { filler { type: "gaussian" } bias_term: true }',
                   [rn(3, 4, 5, 2)]),
              case('type: "Scale" scale_param { filler { type: "gaussian" } }', [rn(3, 4, 5, 2)],
                   in_place=True),
              case('type: "Scale" scale_param { axis: 0 num_axes: 2 bias_term: true }',
                   [rn(3, 4, 5), rn(3, 4)])],
    "Sigmoid": [case('type: "Sigmoid"', [rn(3, 4)])],
    "SigmoidCrossEntropyLoss": [case('type: "SigmoidCrossEntropyLoss"',
                                     [rn(4, 5), ints(2, 4, 5)], prop=[True, False])],
    "Silence": [case('type: "Silence"', [rn(3, 4)], num_top=0)],
    "Slice": [case('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 3 }',
                   [rn(2, 5, 3)], num_top=3)],
    "Softmax": [case('type: "Softmax"', [rn(3, 5, 2)]),
                case('type: "Softmax" softmax_param { axis: 2 }', [rn(3, 5, 4)])],
    "SoftmaxWithLoss": [
        case('type: "SoftmaxWithLoss"', [rn(6, 5), ints(5, 6)], prop=[True, False]),
        case('type: "SoftmaxWithLoss" loss_param { ignore_label: 2 normalization: VALID }',
             [rn(3, 4, 2, 3), ints(4, 3, 2, 3)], num_top=2, prop=[True, False]),
        case('type: "SoftmaxWithLoss" loss_param { normalization: BATCH_SIZE } '
             'loss_weight: 2.5', [rn(3, 4, 5), ints(4, 3, 5)], prop=[True, False])],
    "Split": [case('type: "Split"', [rn(3, 4)], num_top=3)],
    "Swish": [case('type: "Swish" swish_param { beta: 1.5 }', [rn(3, 4)])],
    "TanH": [case('type: "TanH"', [rn(3, 4)])],
    "Threshold": [case('type: "Threshold" threshold_param { threshold: 0.2 }', [rn(3, 4)],
                       forward_only=True)],
    "Tile": [case('type: "Tile" tile_param { axis: 1 tiles: 3 }', [rn(2, 3, 4)])],
    "Filter": [case('type: "Filter"', [rn(6, 3, 2), rn(6, 4),
                    lambda r: np.array([1, 0, 2, 0, 1, 1], np.float32).reshape(6, 1)],
                    num_top=2, prop=[True, True, False])],
    "Im2col": [case('type: "Im2col" convolution_param { kernel_size: 3 stride: 2 pad: 1 }',
                    [rn(2, 3, 7, 6)]),
               case('type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 3 dilation: 2 }',
                    [rn(2, 2, 6, 7)])],
    "SPP": [case('type: "SPP" spp_param { pyramid_height: 3 pool: MAX }', [rn(2, 3, 9, 8)]),
            case('type: "SPP" spp_param { pyramid_height: 2 pool: AVE }', [rn(2, 3, 7, 5)]),
            case('type: "SPP" spp_param { pyramid_height: 1 }', [rn(2, 3, 5, 4)])],
    "LSTM": [case(f'type: "LSTM" recurrent_param {{ num_output: 3 expose_hidden: true {F} }}',
                  [rn(4, 3, 2), ints(2, 4, 3), rn(3, 5), rn(1, 3, 3), rn(1, 3, 3)], num_top=3,
                  prop=[True, False, True, True, True])],
    "LSTMUnit": [case('type: "LSTMUnit"', [rn(1, 3, 4), rn(1, 3, 16), ints(2, 1, 3)], num_top=2,
                      prop=[True, True, False])],
    "RNN": [case(f'type: "RNN" recurrent_param {{ num_output: 3 {F} }}',
                 [rn(4, 3, 2), ints(2, 4, 3), rn(3, 5)], prop=[True, False, True])],
    "Normalize": [case('type: "Normalize" norm_param { across_spatial: false channel_shared: false '
                       'scale_filler { type: "gaussian" std: 1 } }', [rn(2, 3, 4, 5)]),
                  case('type: "Normalize" norm_param { across_spatial: true }', [rn(2, 3, 4, 5)])],
    "Permute": [case('type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }',
                     [rn(2, 3, 4, 5)])],
    "PriorBox": [case('type: "PriorBox" prior_box_param { min_size: 4 max_size: 9 '
                      'aspect_ratio: 2 flip: true clip: true variance: 0.1 variance: 0.1 '
                      'variance: 0.2 variance: 0.2 }',
                      [rn(1, 2, 3, 3), rn(1, 3, 12, 12)], forward_only=True)],
    "DetectionOutput": [case('type: "DetectionOutput" detection_output_param { num_classes: 3 '
                             'nms_param { nms_threshold: 0.45 } keep_top_k: 5 '
                             'confidence_threshold: 0.1 }',
                             [lambda r: (0.1 * r.standard_normal((2, 16))).astype(np.float32),
                              lambda r: probs(8, 3)(r).reshape(2, 12),
                              lambda r: np.concatenate([
                                  np.tile(np.array([[0.1, 0.1, 0.5, 0.5], [0.4, 0.3, 0.9, 0.8]],
                                                   np.float32), (2, 1)).reshape(1, 1, 16),
                                  np.full((1, 1, 16), 0.1, np.float32)], axis=1)],
                             forward_only=True)],
}

DATA_LAYERS = ("Data", "ImageData", "HDF5Data", "MemoryData", "HDF5Output", "WindowData")   # checked by test_data_layers_parity

USER_LAYERS = '''
import minicaffe as caffe


class Double(caffe.Layer):
    """y = 2 x through the pycaffe surface (.data / .diff NumPy views)."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * top[0].diff
'''


def _ids():
    out = []
    for t in sorted(CASES):
        out += [pytest.param(t, i, id=f"{t}-{i}") for i in range(len(CASES[t]))]
    return out


def test_every_registered_layer_has_a_parity_case():
    from minicaffe.layer import _REGISTRY
    builtin = [t for t in layer_types()     # not the layers other tests register
               if _REGISTRY[t].__module__.startswith("minicaffe.layers")]
    missing = [t for t in builtin if t not in CASES and t not in DATA_LAYERS]
    assert not missing, f"add GPU parity cases for {missing} to tests/test_gpu.py"


def _run_layer(c, arrays, top_diffs, params_from=None, seed=7):
    """Set up and run the case's layer in the current mode; returns its arrays (NumPy)."""
    caffe.set_random_seed(seed)
    phase = c.get("phase", TRAIN)
    layer = create_layer(layer_param('name: "l" ' + c["text"], phase))
    bottom = []
    for a in arrays:
        b = Blob(a.shape)
        b.data[...] = a
        bottom.append(b)
    if c.get("in_place"):
        top = [bottom[0]]
    else:
        top = [Blob() for _ in range(c["num_top"])]
    layer.setup(bottom, top)
    if c.get("stats") and params_from is None:     # stored statistics for global stats
        C = layer.blobs[0].count
        layer.blobs[0].data[...] = np.linspace(-1, 1, C) * 2.0
        layer.blobs[1].data[...] = np.linspace(0.5, 2, C) * 2.0
        layer.blobs[2].data[...] = 2.0
    if params_from is not None:
        for mine, theirs in zip(layer.blobs, params_from):
            mine.data[...] = theirs
    params_before = [b.cpu_data().copy() for b in layer.blobs]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    out = {"top": [t.cpu_data().copy() for t in top], "params": params_before,
           "stats": None}
    if c.get("forward_only"):
        return out, layer
    for t, d in zip(top, top_diffs):
        if d is not None:
            t.diff[...] = d
    for b in layer.blobs:
        b.diff[...] = 0
    prop = c["prop"] if c["prop"] is not None else [True] * len(bottom)
    layer.backward(top, prop, bottom)
    out["bottom_diff"] = [b.cpu_diff().copy() if p else None for b, p in zip(bottom, prop)]
    out["param_diff"] = [b.cpu_diff().copy() for b in layer.blobs]
    out["param_after"] = [b.cpu_data().copy() for b in layer.blobs]
    return out, layer


def _close(a, b, what, rtol=2e-4, atol=2e-5):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


@needs_gpu
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("ltype,index", _ids())
def test_layer_parity(gpu, tmp_path, monkeypatch, ltype, index, fused):
    c = CASES[ltype][index]
    if ltype == "Python":
        (tmp_path / "gpu_user_layers.py").write_text(textwrap.dedent(USER_LAYERS))
        monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(100 + index)
    arrays = [make(rng) for make in c["bottoms"]]
    caffe.set_mode_cpu()
    ref, ref_layer = _run_layer(c, arrays, [])
    top_diffs = [rng.standard_normal(t.shape).astype(np.float32) if t.size else None
                 for t in ref["top"]]
    if ref_layer.is_loss or ltype.endswith("Loss"):
        top_diffs = [None] * len(top_diffs)          # keep the loss weight the layer set
    ref, ref_layer = _run_layer(c, arrays, top_diffs)
    caffe.set_mode_gpu()
    backend.set_fused_kernels(fused)
    got, layer = _run_layer(c, arrays, top_diffs, params_from=ref["params"])
    assert all(b.on_device for b in layer.blobs)
    if c.get("dropout"):
        x, y = arrays[0], got["top"][0]
        kept = y != 0
        _close(y[kept], x[kept] * 2.0, "dropout keeps and scales")
        assert 0.35 < kept.mean() < 0.65
        _close(got["bottom_diff"][0], np.where(kept, top_diffs[0] * 2.0, 0), "dropout backward")
        return
    for i, (a, b) in enumerate(zip(got["top"], ref["top"])):
        _close(a, b, f"top {i}")
    if c.get("forward_only"):
        return
    for i, (a, b) in enumerate(zip(got["bottom_diff"], ref["bottom_diff"])):
        if b is not None:
            _close(a, b, f"bottom diff {i}")
    for i, (a, b) in enumerate(zip(got["param_diff"], ref["param_diff"])):
        _close(a, b, f"param {i} diff")
    for i, (a, b) in enumerate(zip(got["param_after"], ref["param_after"])):
        _close(a, b, f"param {i} after forward (BatchNorm statistics)")


@needs_gpu
def test_data_layers_parity(gpu, tmp_path):
    """Data, ImageData and HDF5Data give the same batches in both modes."""
    from PIL import Image
    from minicaffe.data import db as dbm
    rng = np.random.default_rng(0)
    with dbm.LMDBWriter(str(tmp_path / "lmdb")) as w:
        for i in range(5):
            a = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
            w.put(b"%05d" % i, dbm.array_to_datum(a, i).SerializeToString())
    names = []
    for i in range(4):
        arr = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        Image.fromarray(arr, "RGB").save(tmp_path / f"im{i}.png")
        names.append(f"im{i}.png {i}")
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    texts = [
        f'type: "Data" top: "d" top: "l" transform_param {{ scale: 0.5 mean_value: 10 }} '
        f'data_param {{ source: "{tmp_path / "lmdb"}" batch_size: 3 backend: LMDB }}',
        f'type: "ImageData" top: "d" top: "l" image_data_param {{ source: '
        f'"{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 3 }}']
    try:
        import h5py
        with h5py.File(tmp_path / "a.h5", "w") as f:
            f["data"] = rng.standard_normal((5, 2, 3))
            f["label"] = np.arange(5, dtype=np.float32)
        (tmp_path / "h5.txt").write_text(str(tmp_path / "a.h5") + "\n")
        texts.append(f'type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ source: '
                     f'"{tmp_path / "h5.txt"}" batch_size: 2 }}')
    except ImportError:
        pass

    def batches(text):
        layer = create_layer(layer_param('name: "l" ' + text, TEST))
        top = [Blob(), Blob()]
        layer.setup([], top)
        out = []
        for _ in range(2):
            layer.reshape([], top)
            layer.forward([], top)
            out.append([t.cpu_data().copy() for t in top])
        return out, top

    for text in texts:
        caffe.set_mode_cpu()
        ref, _ = batches(text)
        caffe.set_mode_gpu()
        got, top = batches(text)
        assert all(t.on_device for t in top)
        for (a0, a1), (b0, b1) in zip(got, ref):
            np.testing.assert_array_equal(a0, b0)
            np.testing.assert_array_equal(a1, b1)


# ------------------------------------------------------------------------------------------
# Training
def _cifar_net(batch=16, size=16):
    """models/cifar10_bn/train_val.prototxt in TRAIN phase with one Input layer (data, label)
    instead of the Data layers."""
    from minicaffe.io.prototxt import read_prototxt
    from minicaffe.net_state import filter_net
    full = read_prototxt(os.path.join(ROOT, "models", "cifar10_bn", "train_val.prototxt"),
                         caffe_pb2.NetParameter())
    full.state.phase = TRAIN
    param = filter_net(full)
    out = caffe_pb2.NetParameter(name=param.name)
    inp = out.layer.add(name="input", type="Input", top=["data", "label"])
    inp.input_param.shape.add(dim=[batch, 3, size, size])
    inp.input_param.shape.add(dim=[batch])
    for lp in param.layer:
        if lp.type not in ("Data", "Accuracy"):
            out.layer.add().CopyFrom(lp)
    return out


def _solver(net_param, solver_type="SGD", display=0):
    sp = caffe_pb2.SolverParameter(type=solver_type, base_lr=0.01, momentum=0.9,
                                   weight_decay=0.004, lr_policy="fixed", display=display,
                                   max_iter=10 ** 6, random_seed=1701, average_loss=1)
    if solver_type not in ("SGD", "Nesterov"):
        sp.momentum = 0.9 if solver_type in ("Adam", "AdaDelta") else 0
        sp.base_lr = 0.001 if solver_type == "Adam" else 0.01
        if solver_type == "AdaDelta":
            sp.base_lr = 1.0
            sp.delta = 1e-4      # (1e-6 makes the first steps chaotic for tiny gradients)
    sp.train_net_param.CopyFrom(net_param)
    return caffe.get_solver(sp)


def _feed(solver, seed):
    rng = np.random.default_rng(seed)
    d = solver.net.blobs["data"]
    d.data[...] = rng.standard_normal(d.shape).astype(np.float32) * 40
    solver.net.blobs["label"].data[...] = rng.integers(0, 10, solver.net.blobs["label"].shape)


def _train(solver, iters):
    losses = []
    for it in range(iters):
        _feed(solver, it)
        solver.step(1)
        losses.append(float(solver.smoothed_loss))
    return losses


@needs_gpu
@pytest.mark.parametrize("solver_type", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta",
                                         "Adam"])
def test_training_on_the_gpu_tracks_the_cpu(gpu, solver_type):
    net_param = _cifar_net()
    caffe.set_mode_cpu()
    s_cpu = _solver(net_param, solver_type)
    cpu_losses = _train(s_cpu, 20)
    caffe.set_mode_gpu()
    s_gpu = _solver(net_param, solver_type)
    assert s_gpu.net.blobs["data"].on_device
    gpu_losses = _train(s_gpu, 20)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=2e-3, atol=2e-4)
    _params_close(s_gpu.net, s_cpu.net, 1e-2)


@needs_gpu
def test_memory_pool_does_not_grow(gpu):
    s = _solver(_cifar_net(batch=32, size=32), display=50)
    _feed(s, 0)
    s.step(20)
    backend.synchronize()
    used0, held0 = backend.memory_pool_bytes()
    s.step(200)
    backend.synchronize()
    used1, held1 = backend.memory_pool_bytes()
    assert held1 <= held0 + (1 << 20), f"pool grew from {held0} to {held1} bytes"
    assert used1 <= used0 + (1 << 20), f"memory in use grew from {used0} to {used1} bytes"


@needs_gpu
def test_training_loop_never_waits_for_the_device(gpu):
    import cupyx
    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy has no cupyx.allow_synchronize")
    s = _solver(_cifar_net(), display=0)
    _feed(s, 0)
    s.step(2)                                   # first passes: one-off checks, compilation
    with cupyx.allow_synchronize(False):
        s.step(5)
    assert np.isfinite(s.smoothed_loss)


@needs_gpu
def test_time_verb_on_the_gpu(gpu, tmp_path, capsys):
    from minicaffe.cli import main
    model = os.path.join(ROOT, "models", "cifar10_bn", "deploy.prototxt")
    assert main(["time", "--model", model, "--gpu", "0", "--iterations", "2"]) == 0


# ------------------------------------------------------------------------------------------
# The CUDA kernels emulated on the CPU: each raw kernel is compiled with the host C++
# compiler (CUDA's qualifiers defined away, one thread per block, blocks run in turn; the
# kernels' grid-stride loops then visit every index once) and each ElementwiseKernel's
# operation is wrapped in a loop. ``raw_function``/``elementwise`` are swapped for these,
# and ``backend.fused_kernels`` is forced on, so the layers' and solvers' fused paths run on
# NumPy arrays: argument order and types, contiguity and the kernels' arithmetic are checked
# against the NumPy paths without a GPU. (Concurrency -- atomics, shared memory -- is not.)
EMU_PRELUDE = r"""
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
using std::exp; using std::log; using std::max; using std::min; using std::sqrt;
struct mc_dim3 { int x, y, z; };
extern "C" { mc_dim3 blockIdx, blockDim, threadIdx, gridDim; }
#define __global__
#define __shared__ static
#define __syncthreads()
template <typename T> inline T atomicAdd(T* p, T v) { T old = *p; *p += v; return old; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
"""


class _Emulator:
    def __init__(self, workdir):
        import ctypes
        self.ctypes = ctypes
        self.workdir = workdir
        self.libs = {}

    def _compile(self, key, source):
        import subprocess
        if key not in self.libs:
            src = os.path.join(self.workdir, f"{key}.cpp")
            lib = os.path.join(self.workdir, f"{key}.so")
            with open(src, "w") as f:
                f.write(EMU_PRELUDE + source)
            subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", lib, src], check=True,
                           capture_output=True)
            self.libs[key] = self.ctypes.CDLL(lib)
        return self.libs[key]

    def _arg(self, a):
        c = self.ctypes
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous, "a kernel was given a non-contiguous array"
            return c.c_void_p(a.ctypes.data)
        if isinstance(a, np.int32):
            return c.c_int(int(a))
        if isinstance(a, np.float64):
            return c.c_double(float(a))
        if isinstance(a, np.float32):
            return c.c_float(float(a))
        raise TypeError(f"kernel argument of type {type(a).__name__}: pass np.int32/float64")

    def raw_function(self, module, name, dtype):
        from minicaffe.kernels import cuda
        ctypes = self.ctypes
        lib = self._compile(f"{module}_{np.dtype(dtype).name}", cuda.raw_source(module, dtype))
        fn = getattr(lib, name)

        class Dim3(ctypes.Structure):
            _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("z", ctypes.c_int)]

        def call(grid, block, args):
            cargs = [self._arg(a) for a in args]
            for var, v in (("gridDim", (grid[0], 1, 1)), ("blockDim", (1, 1, 1)),
                           ("threadIdx", (0, 0, 0))):
                d = Dim3.in_dll(lib, var)
                d.x, d.y, d.z = v
            bidx = Dim3.in_dll(lib, "blockIdx")
            for bx in range(grid[0]):          # blocks in turn, one thread each
                bidx.x, bidx.y, bidx.z = bx, 0, 0
                fn(*cargs)
        return call

    def elementwise(self, name, dtype):
        from minicaffe.kernels import cuda
        ins, outs, op = cuda.elementwise_parts(name, dtype)
        out_names = [p.split()[-1] for p in outs.split(",")]
        params, body = [], []
        for p in (ins + ", " + outs).split(","):
            typ, nm = p.split()
            if nm in out_names:
                params.append(f"{typ}* _raw_{nm}")
                body.append(f"{typ}& {nm} = _raw_{nm}[i];")
            else:
                params.append(f"{typ} {nm}")
        src = ("typedef float float32; typedef double float64; typedef int int32;\n"
               f'extern "C" void run({", ".join(params)}, long long n) {{\n'
               "  for (long long i = 0; i < n; ++i) {\n    " + "\n    ".join(body) +
               "\n    " + op + "\n  }\n}\n")
        lib = self._compile(f"ew_{name}_{np.dtype(dtype).name}", src)
        n_in = len(ins.split(","))

        def call(*args):
            outs_ = args[n_in:]
            size = outs_[0].size
            assert all(o.size == size for o in outs_)
            lib.run(*[self._arg(a) for a in args], self.ctypes.c_longlong(size))
        return call


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    import shutil
    if shutil.which("g++") is None:
        pytest.skip("no g++ to emulate the CUDA kernels on the CPU")
    return _Emulator(str(tmp_path_factory.mktemp("cuda_emu")))


@pytest.fixture
def emulated(emulator, monkeypatch):
    """Fused-kernel paths on NumPy arrays, through the emulated kernels."""
    from minicaffe.kernels import cuda
    monkeypatch.setattr(cuda, "raw_function", emulator.raw_function)
    monkeypatch.setattr(cuda, "elementwise", emulator.elementwise)
    for mod in (cuda.channels, cuda.softmax_loss, cuda.pooling, cuda.im2col, cuda.solver):
        for attr in ("raw_function", "elementwise"):
            if hasattr(mod, attr):
                monkeypatch.setattr(mod, attr, getattr(emulator, attr))
    caffe.set_mode_cpu()
    return emulator


FUSED_TYPES = ("BatchNorm", "Scale", "Bias", "SoftmaxWithLoss")


@pytest.mark.parametrize("ltype,index", [p for p in _ids() if p.values[0] in FUSED_TYPES])
def test_fused_layer_kernels_emulated(emulated, monkeypatch, ltype, index):
    c = CASES[ltype][index]
    rng = np.random.default_rng(100 + index)
    arrays = [make(rng) for make in c["bottoms"]]
    ref, layer = _run_layer(c, arrays, [])
    top_diffs = [rng.standard_normal(t.shape).astype(np.float32) if t.size else None
                 for t in ref["top"]]
    if layer.is_loss:
        top_diffs = [None] * len(top_diffs)
    ref, _ = _run_layer(c, arrays, top_diffs)
    monkeypatch.setattr(backend, "fused_kernels", lambda xp: True)
    got, layer = _run_layer(c, arrays, top_diffs, params_from=ref["params"])
    assert getattr(layer, "_last_fused", True) or ltype in ("Scale", "Bias")
    for key in ("top", "bottom_diff", "param_diff", "param_after"):
        for i, (a, b) in enumerate(zip(got.get(key, []), ref.get(key, []))):
            if b is not None:
                _close(a, b, f"{key} {i}")


@pytest.mark.parametrize("solver_type", ["SGD", "Adam"])
def test_fused_training_emulated(emulated, monkeypatch, solver_type):
    """The cifar10_bn net for a few iterations with every fused kernel (BatchNorm, Scale,
    Bias, SoftmaxWithLoss, the solver's update) against the plain NumPy run. (Every update
    kernel is checked exactly, one step, by test_solver_update_kernels_emulated; the GPU run
    of test_training_on_the_gpu_tracks_the_cpu covers all six types.)"""
    net_param = _cifar_net(batch=8, size=16)
    s_ref = _solver(net_param, solver_type)
    ref = _train(s_ref, 4)
    monkeypatch.setattr(backend, "fused_kernels", lambda xp: True)
    s = _solver(net_param, solver_type)
    got = _train(s, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    _params_close(s.net, s_ref.net, 1e-2)


def _params_close(net, ref_net, tol):
    """Parameters agree in norm: ||a - b|| <= tol * ||b||. (Element-wise tolerances do not
    suit adaptive rates: AdaGrad-like steps are about +-lr whatever the gradient's size, so
    an element whose gradient is rounding noise -- conv1 before BatchNorm -- may step either
    way.)"""
    for name, blobs in ref_net.params.items():
        for i, (a, b) in enumerate(zip(net.params[name], blobs)):
            a, b = a.cpu_data().astype(np.float64), b.cpu_data().astype(np.float64)
            err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
            assert err <= tol, f"{name} param {i}: relative error {err:.2e} > {tol}"


@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adagrad", "rmsprop", "adadelta", "adam"])
@pytest.mark.parametrize("l1", [False, True])
def test_solver_update_kernels_emulated(emulated, kind, l1):
    """One fused update against the solver's NumPy steps on the same arrays."""
    from minicaffe.kernels.cuda import solver as ks
    from minicaffe.solvers import SOLVERS
    names = {"sgd": "SGD", "nesterov": "Nesterov", "adagrad": "AdaGrad", "rmsprop": "RMSProp",
             "adadelta": "AdaDelta", "adam": "Adam"}
    cls = SOLVERS[names[kind]]
    rng = np.random.default_rng(9)
    w, g = (rng.standard_normal(50).astype(np.float32) for _ in range(2))
    hist = [np.abs(rng.standard_normal(50)).astype(np.float32) for _ in range(cls.history_sets)]
    sp = caffe_pb2.SolverParameter(type=names[kind], base_lr=0.1, lr_policy="fixed",
                                   weight_decay=0.01, iter_size=2, momentum=0.9,
                                   momentum2=0.99, rms_decay=0.95, delta=1e-6,
                                   regularization_type="L1" if l1 else "L2")

    f = cls.__new__(cls)               # the solver's NumPy steps on one bare parameter
    f.param, f.iter = sp, 3
    f._lr_mult, f._decay_mult, f._xp = [2.0], [0.5], [np]
    b = Blob(w.shape)
    b.data[...] = w
    b.diff[...] = g
    f._params = [b]
    f.history = [h.copy() for h in hist]
    f._update = [np.zeros_like(w)]
    f._temp = [np.zeros_like(w)]
    for step in ("normalize", "regularize"):
        getattr(cls, step)(f, 0)
    cls.compute_update_value(f, 0, 0.1)
    w_ref = w - b.diff
    scalars = cls._fused_scalars(f, 0, 0.1)
    wk, gk, hk = w.copy(), g.copy(), [h.copy() for h in hist]
    ks.update(kind, gk, wk, hk[0], hk[1] if len(hk) > 1 else None, **scalars)
    _close(wk, w_ref, "data", rtol=1e-5, atol=1e-6)
    _close(gk, b.diff, "diff (the update)", rtol=1e-5, atol=1e-7)
    for i, (a, r) in enumerate(zip(hk, f.history)):
        _close(a, r, f"history {i}", rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("geometry", [((3, 3), (2, 2), (0, 0)), ((2, 3), (2, 1), (1, 1)),
                                      ((5, 4), (1, 1), (0, 0))])
def test_pooling_kernels_emulated(emulated, geometry):
    """CUDA pooling (kernels.get("pooling", cupy)) against the Pooling layer on NumPy."""
    from minicaffe.kernels.cuda import pooling as kp
    (kh, kw), (sh, sw), (ph, pw) = geometry
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    x[0, 0, 1, 1] = x[0, 0, 1, 2]                               # a tie: first one wins
    for method in ("MAX", "AVE"):
        text = (f'type: "Pooling" pooling_param {{ pool: {method} kernel_h: {kh} '
                f'kernel_w: {kw} stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} }}')
        c = case(text, [lambda r: x], num_top=2 if method == "MAX" else 1)
        ref, layer = _run_layer(c, [x], [])
        shape = ref["top"][0].shape
        dy = rng.standard_normal(shape).astype(np.float32)
        top_diff = [dy] + ([np.zeros(shape, np.float32)] if method == "MAX" else [])
        ref, layer = _run_layer(c, [x], top_diff)
        x3, dy3 = x.reshape(6, 6, 5), dy.reshape((6,) + shape[2:])
        y3 = np.empty_like(dy3)
        dx3 = np.empty_like(x3)
        g = (kh, kw, sh, sw, ph, pw)
        if method == "MAX":
            arg = np.empty(y3.shape, np.int32)
            kp.max_forward(x3, y3, arg, *g)
            np.testing.assert_array_equal(arg.reshape(shape), ref["top"][1])
            kp.max_backward(dy3, arg, dx3)
        else:
            kp.ave_forward(x3, y3, *g, None)
            kp.ave_backward(dy3, dx3, *g, None)
        _close(y3.reshape(shape), ref["top"][0], f"{method} forward")
        _close(dx3.reshape(x.shape), ref["bottom_diff"][0], f"{method} backward")


@pytest.mark.parametrize("geometry", [((3, 3), (1, 1), (1, 1), (1, 1), 1),
                                      ((3, 2), (2, 1), (2, 0), (2, 1), 2)])
def test_im2col_kernels_emulated(emulated, geometry):
    """CUDA im2col/col2im (channels-last layout) against kernels.array_im2col on NumPy."""
    from minicaffe.kernels import array_im2col as cols
    from minicaffe.kernels.cuda import im2col as kc
    kernel, stride, pad, dilation, groups = geometry
    rng = np.random.default_rng(5)
    n, cg, h, w = 2, 3, 7, 6
    oh = (h + 2 * pad[0] - (dilation[0] * (kernel[0] - 1) + 1)) // stride[0] + 1
    ow = (w + 2 * pad[1] - (dilation[1] * (kernel[1] - 1) + 1)) // stride[1] + 1
    x = rng.standard_normal((n, groups, cg, h, w)).astype(np.float32)
    padded = np.empty((groups, n, h + 2 * pad[0], w + 2 * pad[1], cg), np.float32)
    cols.to_padded_nhwc(x, padded, pad)
    col_ref = np.empty((groups, n * oh * ow, kernel[0] * kernel[1] * cg), np.float32)
    cols.im2col(padded, col_ref, kernel, stride, dilation, (oh, ow))
    col = np.empty_like(col_ref)
    kc.im2col(padded, col, kernel, stride, dilation, (oh, ow))
    np.testing.assert_array_equal(col, col_ref)
    dcol = rng.standard_normal(col.shape).astype(np.float32)
    back_ref = np.empty_like(padded)
    cols.col2im(dcol, back_ref, kernel, stride, dilation, (oh, ow))
    back = np.empty_like(padded)
    kc.col2im(dcol, back, kernel, stride, dilation, (oh, ow))
    _close(back, back_ref, "col2im")

"""One ONNX converter per Caffe layer type: ``convert(ctx)`` writes the layer's tops and returns
how many of the following layers it absorbed (BatchNorm takes a Scale along).

Caffe details kept: ceil-mode pooling sizes (the bottom/right pads grow until ONNX's floor
formula gives Caffe's output size), AVE pooling's divisor (window clipped to the padded
image, so edge windows of a ceil-mode pool divide by less), BatchNorm's moving-average factor
blobs[2], Dropout as identity at TEST, and WITHIN_CHANNEL LRN built from an average pool.
"""
import math

import numpy as np

from ..proto import caffe_pb2

P = caffe_pb2.PoolingParameter
CONVERTERS = {}


def converter(*types):
    def deco(fn):
        for t in types:
            CONVERTERS[t] = fn
        return fn
    return deco


def _axis(ctx, axis, ndim):
    if not -ndim <= axis < ndim:
        ctx.fail(f"axis {axis} is out of range for a {ndim}-axis bottom")
    return axis % ndim


def _spatial_attrs(ctx, layer):
    if getattr(layer, "axis", 1) != 1:
        ctx.fail("only axis 1 (N, C, H, W) maps to ONNX")
    return dict(kernel_shape=list(layer.kernel), strides=list(layer.stride),
                pads=list(layer.pad) * 2)


# -- learned linear layers ----------------------------------------------------------------------
@converter("Convolution", "Deconvolution")
def convolution(ctx):
    layer, g = ctx.layer, ctx.g
    attrs = _spatial_attrs(ctx, layer)
    inputs = [ctx.bottoms[0], g.const(f"{ctx.name}_W", ctx.params[0])]
    if layer.bias_term:
        inputs.append(g.const(f"{ctx.name}_b", ctx.params[1]))
    op = "Conv" if ctx.lp.type == "Convolution" else "ConvTranspose"
    for bottom, top in zip(ctx.bottoms, ctx.tops):
        g.op(op, [bottom] + inputs[1:], ctx.name, out=top, group=int(layer.group),
             dilations=list(layer.dilation), **attrs)


@converter("InnerProduct")
def inner_product(ctx):
    g, p = ctx.g, ctx.lp.inner_product_param
    shape = ctx.bottom_shapes[0]
    axis = _axis(ctx, p.axis, len(shape))
    m = int(np.prod(shape[:axis], dtype=np.int64))
    x = g.op("Reshape", [ctx.bottoms[0], g.ints(f"{ctx.name}_rows", [m, -1])], ctx.name)
    inputs = [x, g.const(f"{ctx.name}_W", ctx.params[0])]
    if p.bias_term:
        inputs.append(g.const(f"{ctx.name}_b", ctx.params[1]))
    y = g.op("Gemm", inputs, ctx.name, transB=0 if p.transpose else 1)
    g.op("Reshape", [y, g.ints(f"{ctx.name}_shape", ctx.top_shapes[0])], ctx.name,
         out=ctx.tops[0])


def _broadcast_shape(shape, axis, ndim):
    """Caffe's Scale/Bias operand shape padded with 1s so ONNX broadcasting lines it up."""
    return tuple(shape) + (1,) * (ndim - axis - len(shape))


def _operand(ctx, k, values, param_axis, what):
    """The second operand of Scale/Bias: a learned blob or bottom 1, shaped for broadcasting."""
    g, ndim = ctx.g, len(ctx.bottom_shapes[0])
    axis = _axis(ctx, param_axis, ndim)
    if values is not None:
        return g.const(f"{ctx.name}_{what}", values.reshape(_broadcast_shape(values.shape, axis,
                                                                             ndim)))
    shape = _broadcast_shape(ctx.bottom_shapes[k], axis, ndim)
    return g.op("Reshape", [ctx.bottoms[k], g.ints(f"{ctx.name}_{what}_shape", shape)], ctx.name)


@converter("Scale")
def scale(ctx):
    p = ctx.lp.scale_param
    learned = len(ctx.bottoms) == 1
    factor = _operand(ctx, 1, ctx.params[0] if learned else None, p.axis, "scale")
    if not p.bias_term:
        ctx.g.op("Mul", [ctx.bottoms[0], factor], ctx.name, out=ctx.tops[0])
        return
    y = ctx.g.op("Mul", [ctx.bottoms[0], factor], ctx.name)
    bias = _operand(ctx, None, ctx.params[1 if learned else 0], p.axis, "bias")
    ctx.g.op("Add", [y, bias], ctx.name, out=ctx.tops[0])


@converter("Bias")
def bias(ctx):
    learned = len(ctx.bottoms) == 1
    b = _operand(ctx, 1, ctx.params[0] if learned else None, ctx.lp.bias_param.axis, "bias")
    ctx.g.op("Add", [ctx.bottoms[0], b], ctx.name, out=ctx.tops[0])


@converter("BatchNorm")
def batch_norm(ctx):
    p = ctx.lp.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        ctx.fail("use_global_stats: false normalises with the batch's own statistics at TEST, "
                 "which ONNX's BatchNormalization does not do")
    mean, var, factor = ctx.params[:3]
    s = 0.0 if factor.ravel()[0] == 0 else 1.0 / factor.ravel()[0]
    channels = mean.size
    gamma, beta = np.ones(channels, np.float32), np.zeros(channels, np.float32)
    out, absorbed = ctx.tops[0], 0
    nxt = ctx.next
    if nxt is not None and nxt.lp.type == "Scale" and nxt.bottoms == ctx.tops[:1] and \
            len(nxt.bottoms) == 1 and ctx.consumers.get(ctx.tops[0], 0) == 1 and \
            _axis(nxt, nxt.lp.scale_param.axis, len(nxt.bottom_shapes[0])) == 1 and \
            nxt.params[0].shape == (channels,):
        gamma = nxt.params[0]
        if nxt.lp.scale_param.bias_term:
            beta = nxt.params[1]
        out, absorbed = nxt.tops[0], 1
    g = ctx.g
    g.op("BatchNormalization",
         [ctx.bottoms[0], g.const(f"{ctx.name}_gamma", gamma), g.const(f"{ctx.name}_beta", beta),
          g.const(f"{ctx.name}_mean", mean * s), g.const(f"{ctx.name}_var", var * s)],
         ctx.name, out=out, epsilon=float(p.eps))
    return absorbed


# -- pooling and normalisation ------------------------------------------------------------------
@converter("Pooling")
def pooling(ctx):
    layer, g, p = ctx.layer, ctx.g, ctx.lp.pooling_param
    if len(ctx.tops) > 1:
        ctx.fail("the argmax mask top has no ONNX equivalent")
    if p.pool not in (P.MAX, P.AVE):
        ctx.fail("only MAX and AVE pooling map to ONNX")
    x, top = ctx.bottoms[0], ctx.tops[0]
    if layer.global_pooling:
        g.op("GlobalMaxPool" if p.pool == P.MAX else "GlobalAveragePool", [x], ctx.name, out=top)
        return
    (h, w), (oh, ow) = ctx.bottom_shapes[0][2:], ctx.top_shapes[0][2:]
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.pad
    # extra bottom/right padding so that floor((H + 2p + extra - k) / s) + 1 == Caffe's size
    eh = max(0, (oh - 1) * sh + kh - (h + 2 * ph))
    ew = max(0, (ow - 1) * sw + kw - (w + 2 * pw))
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw])
    if p.pool == P.MAX:
        g.op("MaxPool", [x], ctx.name, out=top, pads=[ph, pw, ph + eh, pw + ew], **attrs)
        return
    padded = g.op("Pad", [x, g.ints(f"{ctx.name}_pads", [0, 0, ph, pw, 0, 0, ph + eh, pw + ew])],
                  ctx.name)
    divisor = np.outer(_pool_sizes(oh, sh, kh, ph, h), _pool_sizes(ow, sw, kw, pw, w))
    if np.all(divisor == kh * kw):
        g.op("AveragePool", [padded], ctx.name, out=top, **attrs)
        return
    avg = g.op("AveragePool", [padded], ctx.name, **attrs)
    g.op("Mul", [avg, g.const(f"{ctx.name}_divisor", (kh * kw) / divisor)], ctx.name, out=top)


def _pool_sizes(out, stride, kernel, pad, size):
    """Caffe's AVE divisor along one axis: the window clipped to the padded extent."""
    start = np.arange(out) * stride - pad
    return np.minimum(start + kernel, size + pad) - start


@converter("LRN")
def lrn(ctx):
    g, p = ctx.g, ctx.lp.lrn_param
    n, x = int(p.local_size), ctx.bottoms[0]
    if p.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
        g.op("LRN", [x], ctx.name, out=ctx.tops[0], size=n, alpha=float(p.alpha),
             beta=float(p.beta), bias=float(p.k))
        return
    # WITHIN_CHANNEL: x * (1 + alpha * mean of x^2 over the n x n window, zero padded)^-beta
    pad = (n - 1) // 2
    sq = g.op("Mul", [x, x], ctx.name)
    avg = g.op("AveragePool", [sq], ctx.name, kernel_shape=[n, n], pads=[pad] * 4,
               count_include_pad=1)
    base = g.op("Add", [g.op("Mul", [avg, g.const(f"{ctx.name}_alpha", p.alpha)], ctx.name),
                        g.const(f"{ctx.name}_one", 1.0)], ctx.name)
    scale_ = g.op("Pow", [base, g.const(f"{ctx.name}_beta", -p.beta)], ctx.name)
    g.op("Mul", [x, scale_], ctx.name, out=ctx.tops[0])


@converter("Softmax")
def softmax(ctx):
    axis = _axis(ctx, ctx.lp.softmax_param.axis, len(ctx.bottom_shapes[0]))
    ctx.g.op("Softmax", ctx.bottoms[:1], ctx.name, out=ctx.tops[0], axis=axis)


# -- element-wise ------------------------------------------------------------------------------
_UNARY = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus",
          "Dropout": "Identity", "Split": "Identity"}


@converter(*_UNARY)
def unary(ctx):
    for top in ctx.tops:   # Split: one copy per top
        ctx.g.op(_UNARY[ctx.lp.type], ctx.bottoms[:1], ctx.name, out=top)


@converter("ReLU")
def relu(ctx):
    slope = ctx.lp.relu_param.negative_slope
    if slope:
        ctx.g.op("LeakyRelu", ctx.bottoms, ctx.name, out=ctx.tops[0], alpha=float(slope))
    else:
        ctx.g.op("Relu", ctx.bottoms, ctx.name, out=ctx.tops[0])


@converter("ELU")
def elu(ctx):
    ctx.g.op("Elu", ctx.bottoms, ctx.name, out=ctx.tops[0], alpha=float(ctx.lp.elu_param.alpha))


def _affine(ctx, x, scale_, shift, out=None):
    """scale * x + shift, skipping the identity parts (``out`` names the result if given)."""
    g = ctx.g
    steps = [("Mul", scale_)] if scale_ != 1 else []
    steps += [("Add", shift)] if shift != 0 else []
    if not steps:
        return g.op("Identity", [x], ctx.name, out=out) if out else x
    for k, (op, value) in enumerate(steps):
        x = g.op(op, [x, g.const(f"{ctx.name}_{op.lower()}", value)], ctx.name,
                 out=out if k == len(steps) - 1 else None)
    return x


@converter("Power")
def power(ctx):
    p, g = ctx.lp.power_param, ctx.g
    if p.power == 1:
        _affine(ctx, ctx.bottoms[0], p.scale, p.shift, out=ctx.tops[0])
        return
    base = _affine(ctx, ctx.bottoms[0], p.scale, p.shift)
    g.op("Pow", [base, g.const(f"{ctx.name}_power", p.power)], ctx.name, out=ctx.tops[0])


@converter("Exp")
def exp(ctx):
    p = ctx.lp.exp_param
    ln_base = 1.0 if p.base == -1 else math.log(p.base)
    inner = _affine(ctx, ctx.bottoms[0], p.scale * ln_base, p.shift * ln_base)
    ctx.g.op("Exp", [inner], ctx.name, out=ctx.tops[0])


@converter("Log")
def log(ctx):
    p = ctx.lp.log_param
    y = ctx.g.op("Log", [_affine(ctx, ctx.bottoms[0], p.scale, p.shift)], ctx.name,
                 out=ctx.tops[0] if p.base == -1 else None)
    if p.base != -1:
        _affine(ctx, y, 1.0 / math.log(p.base), 0.0, out=ctx.tops[0])


@converter("Eltwise")
def eltwise(ctx):
    p, g = ctx.lp.eltwise_param, ctx.g
    E = caffe_pb2.EltwiseParameter
    if p.operation != E.SUM:
        op = "Mul" if p.operation == E.PROD else "Max"
        g.op(op, ctx.bottoms, ctx.name, out=ctx.tops[0])
        return
    coeffs = list(p.coeff) or [1.0] * len(ctx.bottoms)
    if len(coeffs) != len(ctx.bottoms):
        ctx.fail(f"{len(coeffs)} coefficients for {len(ctx.bottoms)} bottoms")
    terms = [_affine(ctx, b, c, 0.0) for b, c in zip(ctx.bottoms, coeffs)]
    g.op("Sum", terms, ctx.name, out=ctx.tops[0])


# -- shape -------------------------------------------------------------------------------------
@converter("Concat")
def concat(ctx):
    p = ctx.lp.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis
    ctx.g.op("Concat", ctx.bottoms, ctx.name, out=ctx.tops[0],
             axis=_axis(ctx, axis, len(ctx.bottom_shapes[0])))


@converter("Slice")
def slice_(ctx):
    p = ctx.lp.slice_param
    axis = _axis(ctx, p.slice_dim if p.HasField("slice_dim") else p.axis,
                 len(ctx.bottom_shapes[0]))
    sizes = ctx.g.ints(f"{ctx.name}_split", [s[axis] for s in ctx.top_shapes])
    ctx.g.op("Split", [ctx.bottoms[0], sizes], ctx.name, out=ctx.tops, axis=axis)


@converter("Flatten", "Reshape")
def reshape(ctx):
    shape = ctx.g.ints(f"{ctx.name}_shape", ctx.top_shapes[0])
    ctx.g.op("Reshape", [ctx.bottoms[0], shape], ctx.name, out=ctx.tops[0])


@converter("Crop")
def crop(ctx):
    p = ctx.lp.crop_param
    shape, ref = ctx.bottom_shapes[0], ctx.bottom_shapes[1]
    axis = _axis(ctx, p.axis, len(shape))
    axes = list(range(axis, len(shape)))
    offsets = list(p.offset)
    if len(offsets) not in (0, 1, len(axes)):
        ctx.fail(f"{len(offsets)} offsets for {len(axes)} cropped axes")
    starts = [offsets[0] if len(offsets) == 1 else offsets[k] if offsets else 0
              for k in range(len(axes))]
    ends = [s + ref[a] for s, a in zip(starts, axes)]
    g = ctx.g
    g.op("Slice", [ctx.bottoms[0], g.ints(f"{ctx.name}_starts", starts),
                   g.ints(f"{ctx.name}_ends", ends), g.ints(f"{ctx.name}_axes", axes)],
         ctx.name, out=ctx.tops[0])

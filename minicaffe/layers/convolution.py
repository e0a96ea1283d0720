"""Convolution and Deconvolution (convolution_param), 2-D spatial case.

In "convolution sense" an image ``a`` (N, Ci, Hi, Wi) and a response ``r`` (N, Co, Ho, Wo)
are related through the weights W (Co, Ci/G, kh, kw), group by group:

    r[g] = W[g] @ col(a)[g]^T                  (one GEMM over the whole batch per group)
    dW[g] += r'[g] @ col(a)[g]                 (r' the response gradient)
    da = a convolution of r' with W flipped in space and transposed (stride 1), or
         col2im(W[g]^T @ r'[g]) (strided)

Convolution: a = bottom, r = top.   Deconvolution: a = top, r = bottom (the same weights
used the other way round, as in Caffe). Columns are channels-last rows (``kernels/array_im2col.py``):
col (G, N*Ho*Wo, kh*kw*Ci/G), and W is used as (G, Co/G, kh*kw*Ci/G), so responses come out
as rows (G, Co/G, N*Ho*Wo) that are copied into (N, Co, Ho, Wo) in runs of Ho*Wo values.

At stride 1 the image gradient never needs col2im (a loop of scattered additions): with
W'[c, o, i, j] = W[o, c, kh-1-i, kw-1-j] it is the convolution of the response gradient,
padded by d(k-1) - p, with W' -- one more im2col and GEMM of the same shape as forward. When
the weights want a gradient too, it comes from those same columns (``_accumulate_flipped``), so
backward never rebuilds the input's columns.

Memory: the columns are the big buffer (kh*kw times the image). A TRAIN-phase layer keeps its
own whole-batch columns from forward to backward (for dW) when they take at most
``KEEP_COLS_BYTES``; otherwise (and always in TEST phase or a forward-only net) the batch is
processed in chunks of at most ``CHUNK_BYTES`` of columns through buffers shared by all layers
of the thread. The image gradient's columns are chunked on their own, and only built when the
bottom needs a gradient.

That is the whole-batch path (CuPy, Deconvolution, numba off). Convolution on NumPy arrays
with the numba kernels runs one image at a time per core instead (``engines/conv_per_image.py``): the same
products, cut per image, with nothing kept between forward and backward.

All of this is Caffe's engine (``engine: CAFFE``). On NumPy float32 blobs the layer runs on
oneDNN instead when ``engines.selection`` picks it (the default where the library loads):
``engines/onednn/conv_layer.py`` then serves forward and backward.
"""
from ..kernels import array_im2col as cols
from ..engines import conv_per_image
from ..proto import caffe_pb2
from ..errors import ShapeError
from ..layer import Layer, register
from ..engines import selection
from ..engines.onednn.conv_layer import ConvLayerEngine
from .conv_geometry import read_geometry

# The example's conv1 columns (29 MiB; its input needs no gradient) are kept: whole training
# steps measured 8-16 ms faster than rebuilding them in backward.
KEEP_COLS_BYTES = 32 << 20
CHUNK_BYTES = 16 << 20


class _ConvolutionBase(Layer):
    min_num_bottom = 1
    min_num_top = 1
    equal_num_bottom_top = True
    reverse = False   # Deconvolution: the top plays the convolution's input

    # -- setup -------------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        p = self.layer_param.convolution_param
        read_geometry(self, p, bottom[0])
        self.channels = bottom[0].shape[self.axis]
        self.num_output = int(p.num_output)
        self.group = int(p.group)
        if self.num_output <= 0:
            self.fail("num_output must be positive")
        if self.group <= 0:
            self.fail("group must be positive")
        if self.channels % self.group:
            self.fail(f"the number of input channels ({self.channels}) must be a multiple of "
                      f"group ({self.group})")
        if self.num_output % self.group:
            self.fail(f"num_output ({self.num_output}) must be a multiple of group ({self.group})")
        if self.reverse:
            self.conv_in, self.conv_out = self.num_output, self.channels
        else:
            self.conv_in, self.conv_out = self.channels, self.num_output
        self.bias_term = p.bias_term
        weight_shape = (self.conv_out, self.conv_in // self.group) + self.kernel
        specs = [(weight_shape, p.weight_filler)]
        if self.bias_term:
            specs.append(((self.num_output,), p.bias_filler))
        self.init_param_blobs(specs)
        self._own_col = cols.Scratch()   # whole-batch columns kept from forward for dW
        self._wk = cols.Scratch()        # W as (G, Co/G, kh*kw*Ci/G)
        self._wf = cols.Scratch()        # W flipped and transposed: (G, Ci/G, kh*kw*Co/G)
        self._cached = None              # which bottom's columns self._own_col holds
        self.engine = None               # a ConvLayerEngine when oneDNN serves the layer

    def reshape(self, bottom, top):
        first = bottom[0]
        if first.num_axes != self.axis + 3:
            self.fail(f"bottom num_axes may not change: got shape {tuple(first.shape)}", ShapeError)
        for i, b in enumerate(bottom[1:], 1):
            if tuple(b.shape) != tuple(first.shape):
                self.fail(f"all bottoms must have the same shape: bottom 0 is "
                          f"{tuple(first.shape)}, bottom {i} is {tuple(b.shape)}", ShapeError)
        for i, (b, t) in enumerate(zip(bottom, top)):
            if b is t:
                self.fail(f"cannot run in place (top {i} is bottom {i})")
        if first.shape[self.axis] != self.channels:
            self.fail(f"input size incompatible with convolution kernel: bottom shape "
                      f"{tuple(first.shape)} has {first.shape[self.axis]} channels, the weights "
                      f"expect {self.channels}", ShapeError)
        self.num = first.count_range(0, self.axis)
        self.in_hw = tuple(first.shape[self.axis + 1:])
        self.out_hw = tuple(self._output_size(self.in_hw[d], d) for d in range(2))
        if min(self.out_hw) <= 0:
            self.fail(f"kernel {self.kernel} (dilation {self.dilation}, pad {self.pad}) does not "
                      f"fit the input {self.in_hw}: output would be {self.out_hw}", ShapeError)
        top_shape = tuple(first.shape[:self.axis]) + (self.num_output,) + self.out_hw
        for t in top:
            t.reshape(top_shape)
        # The image/response pair in convolution sense.
        self.img_hw, self.res_hw = (self.out_hw, self.in_hw) if self.reverse else \
            (self.in_hw, self.out_hw)
        g = self.group
        self.cg_in, self.cg_out = self.conv_in // g, self.conv_out // g
        kk = self.kernel[0] * self.kernel[1]
        img_len = self.img_hw[0] * self.img_hw[1]
        res_len = self.res_hw[0] * self.res_hw[1]
        # The image gradient as a stride-1 convolution with the flipped kernel needs a
        # non-negative padding d(k-1) - p of the response.
        self.flip_pad = tuple(self.dilation[d] * (self.kernel[d] - 1) - self.pad[d]
                              for d in range(2))
        self.flipped = self.stride == (1, 1) and min(self.flip_pad) >= 0
        # Two column buffers with their own chunking: the response's columns (forward and
        # dW of Convolution, backward of Deconvolution) and the image side's (the image
        # gradient of Convolution, forward of Deconvolution), flipped or strided. A layer
        # whose bottom needs no gradient (conv1) never builds the second kind.
        itemsize = first.dtype.itemsize
        col_image = res_len * kk * self.conv_in * itemsize
        img_image = (img_len * kk * self.conv_out if self.flipped else
                     res_len * kk * self.conv_in) * itemsize
        # Kept columns serve only a weight gradient that would otherwise build them again: not
        # one taken from the image gradient's flipped columns.
        needs = self.bottom_need_backward
        rebuilds = not (self.flipped and (needs is None or all(needs)))
        self.keep_cols = (not self.reverse and self.phase == caffe_pb2.TRAIN and
                          self.keeps_backward_state and rebuilds and
                          bool(self.param_propagate_down[:1] and self.param_propagate_down[0]) and
                          self.num * col_image <= KEEP_COLS_BYTES)
        # NumPy with the numba kernels: one image per step on each core (engines/conv_per_image.py).
        self.per_image = conv_per_image.usable(self, self.xp_of(first))
        self.keep_cols = self.keep_cols and not self.per_image
        self.chunk = self.num if self.keep_cols else self._chunk_for(col_image)
        self.img_chunk = self._chunk_for(img_image)
        self._cached = None
        self._choose_engine(first)

    def _choose_engine(self, first):
        """oneDNN when ``engines.selection`` picks it and it takes this configuration."""
        if selection.convolution_engine(self.layer_param, self.xp_of(first),
                                        first.dtype) != selection.ONEDNN:
            self.engine = None
            return
        self.engine = self.engine or ConvLayerEngine(self)
        if not self.engine.reshape():
            self.engine = None

    def _chunk_for(self, per_image):
        return max(1, min(self.num, CHUNK_BYTES // max(per_image, 1)))

    # -- building blocks, on a chunk of n images ----------------------------------------------
    def _weights_rows(self, xp):
        """W as (G, Co/G, kh*kw*Ci/G), rows in the (i, j, c) order of the columns."""
        w = self.blobs[0].xdata
        g, kh, kw = self.group, self.kernel[0], self.kernel[1]
        wk = self._wk.get(xp, (g, self.cg_out, kh, kw, self.cg_in), w.dtype)
        wk[...] = w.reshape(g, self.cg_out, self.cg_in, kh, kw).transpose(0, 1, 3, 4, 2)
        return wk.reshape(g, self.cg_out, kh * kw * self.cg_in)

    def _weights_flipped(self, xp):
        """W' as (G, Ci/G, kh*kw*Co/G): W'[c, (i, j, o)] = W[o, c, kh-1-i, kw-1-j]."""
        w = self.blobs[0].xdata
        g, kh, kw = self.group, self.kernel[0], self.kernel[1]
        wf = self._wf.get(xp, (g, self.cg_in, kh, kw, self.cg_out), w.dtype)
        wf[...] = w.reshape(g, self.cg_out, self.cg_in, kh, kw)[:, :, :, ::-1, ::-1] \
            .transpose(0, 2, 3, 4, 1)
        return wf.reshape(g, self.cg_in, kh * kw * self.cg_out)

    def _col_buffer(self, xp, n, length, channels, dtype, own):
        shape = (self.group, n * length, self.kernel[0] * self.kernel[1] * channels)
        return (self._own_col if own else cols.workspace("col")).get(xp, shape, dtype)

    def _columns(self, image, own=False):
        """im2col of ``image`` (n, Ci, Hi, Wi): (G, n*Ho*Wo, kh*kw*Ci/G)."""
        xp = self.xp_of(self.blobs[0])
        n = image.shape[0]
        g, (h, w) = self.group, self.img_hw
        col = self._col_buffer(xp, n, self.res_hw[0] * self.res_hw[1], self.cg_in, image.dtype,
                               own)
        return cols.im2col_nchw(image.reshape(n, g, self.cg_in, h, w), col, self.kernel,
                                self.stride, self.pad, self.dilation, self.res_hw)

    def _response(self, col, res, bias=None):
        """res (n, Co, Ho, Wo) = W @ col^T (+ bias)."""
        xp = self.xp_of(self.blobs[0])
        n, g = res.shape[0], self.group
        length = self.res_hw[0] * self.res_hw[1]
        rows = cols.workspace("rows").get(xp, (g, self.cg_out, n * length), res.dtype)
        xp.matmul(self._weights_rows(xp), col.transpose(0, 2, 1), out=rows)
        src = rows.reshape(g, self.cg_out, n, length).transpose(2, 0, 1, 3)
        dst = res.reshape(n, g, self.cg_out, length)
        if bias is None:
            dst[...] = src
        else:
            xp.add(src, bias.reshape(1, g, self.cg_out, 1), out=dst)

    def _response_rows(self, res):
        """The response (gradient) (n, Co, Ho, Wo) as rows (G, Co/G, n*Ho*Wo)."""
        xp = self.xp_of(self.blobs[0])
        n, g = res.shape[0], self.group
        length = self.res_hw[0] * self.res_hw[1]
        rows = cols.workspace("rows").get(xp, (g, self.cg_out, n, length), res.dtype)
        rows[...] = res.reshape(n, g, self.cg_out, length).transpose(1, 2, 0, 3)
        return rows.reshape(g, self.cg_out, n * length)

    def _accumulate_weight_diff(self, col, res_rows):
        """dW += res_rows @ col, back in W's (Co, Ci/G, kh, kw) order."""
        self._add_weight_diff_rows(self.xp_of(self.blobs[0]).matmul(res_rows, col))

    def _add_weight_diff_rows(self, dwk):
        """dW += dwk (G, Co/G, kh*kw*Ci/G), rows in the (i, j, c) order of the columns."""
        g, kh, kw = self.group, self.kernel[0], self.kernel[1]
        dw = self.blobs[0].xdiff.reshape(g, self.cg_out, self.cg_in, kh, kw)
        dw += dwk.reshape(g, self.cg_out, kh, kw, self.cg_in).transpose(0, 1, 4, 2, 3)

    def _add_weight_diff_flipped(self, dwf):
        """dW += dwf (G, Ci/G, kh*kw*Co/G), from flipped columns (``_accumulate_flipped``)."""
        g, kh, kw = self.group, self.kernel[0], self.kernel[1]
        dw = self.blobs[0].xdiff.reshape(g, self.cg_out, self.cg_in, kh, kw)
        dw += dwf.reshape(g, self.cg_in, kh, kw, self.cg_out)[:, :, ::-1, ::-1] \
            .transpose(0, 4, 1, 2, 3)

    def _accumulate_flipped(self, image, col):
        """dW += the weight gradient from the flipped columns of the response gradient.

        With colF[(n, p, q), (i', j', o)] = r'[n, o, p + i'd - fp, q + j'd - fp], fp = d(k-1) - p
        (the columns the image gradient is built from), substituting i' = k-1-i gives
        dW[o, c, i, j] = sum over (n, p, q) of a[n, c, p, q] * colF[(n, p, q), (k-1-i, k-1-j, o)]:
        one GEMM of the image rows with columns already in hand, so the image's own columns
        need not be built again in backward."""
        xp = self.xp_of(self.blobs[0])
        n, g = image.shape[0], self.group
        h, w = self.img_hw
        rows = cols.workspace("x_rows").get(xp, (g, self.cg_in, n, h * w), image.dtype)
        rows[...] = image.reshape(n, g, self.cg_in, h * w).transpose(1, 2, 0, 3)
        self._add_weight_diff_flipped(xp.matmul(rows.reshape(g, self.cg_in, n * h * w), col))

    def _image_from_response(self, res, img, image=None):
        """img (n, Ci, Hi, Wi) = the transpose of the convolution applied to res. With
        ``image`` (the convolution's input for these n items, flipped case only) the
        weight gradient is accumulated from the same columns (see ``_accumulate_flipped``)."""
        xp = self.xp_of(self.blobs[0])
        n, g = res.shape[0], self.group
        (h, w), (oh, ow) = self.img_hw, self.res_hw
        kh, kw = self.kernel
        if self.flipped:
            col = self._col_buffer(xp, n, h * w, self.cg_out, res.dtype, own=False)
            cols.im2col_nchw(res.reshape(n, g, self.cg_out, oh, ow), col, self.kernel, (1, 1),
                             self.flip_pad, self.dilation, (h, w))
            rows = cols.workspace("img_rows").get(xp, (g, self.cg_in, n * h * w), res.dtype)
            xp.matmul(self._weights_flipped(xp), col.transpose(0, 2, 1), out=rows)
            img.reshape(n, g, self.cg_in, h * w)[...] = \
                rows.reshape(g, self.cg_in, n, h * w).transpose(2, 0, 1, 3)
            if image is not None:
                self._accumulate_flipped(image, col)
            return
        # Strided: columns W^T @ res, then summed back to the pixels they came from.
        col = self._col_buffer(xp, n, oh * ow, self.cg_in, res.dtype, own=False)
        xp.matmul(self._response_rows(res).transpose(0, 2, 1), self._weights_rows(xp), out=col)
        ph, pw = self.pad
        padded = cols.workspace("padded").get(xp, (g, n, h + 2 * ph, w + 2 * pw, self.cg_in),
                                              res.dtype)
        cols.col2im(col, padded, self.kernel, self.stride, self.dilation, self.res_hw)
        img.reshape(n, g, self.cg_in, h, w)[...] = \
            padded[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 4, 2, 3)

    def _chunks(self, size=None):
        size = size or self.chunk
        for a in range(0, self.num, size):
            yield slice(a, min(self.num, a + size))

    def _batch(self, arr, shape_hw, channels):
        return arr.reshape((self.num, channels) + tuple(shape_hw))

    def _bias(self):
        return self.blobs[1].xdata if self.bias_term else None

    def backward(self, top, propagate_down, bottom):
        if self.engine is not None:
            return self.engine.backward(top, propagate_down, bottom)
        want_w = self.param_propagate_down[0]
        # Last pair first: its columns are still in the buffer from forward.
        for i in reversed(range(len(top))):
            self._accumulate_bias_diff(top[i].xdiff)
            if want_w or propagate_down[i]:
                self._backward_pair(i, top[i], bottom[i], want_w, propagate_down[i])

    def _top_spatial(self):
        """H*W of a top: spelt out, as -1 cannot be inferred for an empty batch."""
        return self.out_hw[0] * self.out_hw[1]

    def _accumulate_bias_diff(self, diff):
        """db += the top diff summed over batch and space."""
        if self.bias_term and self.param_propagate_down[1]:
            d3 = diff.reshape(self.num, self.num_output, self._top_spatial())
            self.blobs[1].xdiff[...] += d3.sum(axis=(0, 2))


@register("Convolution")
class ConvolutionLayer(_ConvolutionBase):
    """top = W * bottom + b, with Caffe's kernel/stride/pad/dilation/group settings."""

    def _output_size(self, size, d):
        return cols.conv_output_size(size, self.kernel[d], self.stride[d], self.pad[d],
                                     self.dilation[d])

    def forward(self, bottom, top):
        if self.engine is not None:
            return self.engine.forward(bottom, top)
        for i, (b, t) in enumerate(zip(bottom, top)):
            if self.per_image:
                bias = self._bias()
                conv_per_image.forward(self, self._grouped(b.xdata, self.in_hw, self.conv_in),
                                 self._grouped(t.xdata, (self.out_hw[0] * self.out_hw[1],),
                                               self.conv_out),
                                 None if bias is None else bias.reshape(self.group, -1))
                continue
            x = self._batch(b.xdata, self.img_hw, self.conv_in)
            y = self._batch(t.xdata, self.res_hw, self.conv_out)
            for s in self._chunks():
                self._response(self._columns(x[s], own=self.keep_cols), y[s], self._bias())
            self._cached = i if self.keep_cols else None

    def _backward_pair(self, i, top, bottom, want_w, want_x):
        if self.per_image:
            self._backward_per_image(top, bottom, want_w, want_x)
            return
        x = self._batch(bottom.xdata, self.img_hw, self.conv_in)
        dy = self._batch(top.xdiff, self.res_hw, self.conv_out)
        if want_w and want_x and self.flipped and self._cached != i:
            # dW from the image gradient's columns: the input is not im2col'ed again.
            dx = self._batch(bottom.xdiff, self.img_hw, self.conv_in)
            for s in self._chunks(self.img_chunk):
                self._image_from_response(dy[s], dx[s], image=x[s])
            self._cached = None
            return
        if want_w and self._cached == i:    # columns kept from forward (whole batch)
            col = self._col_buffer(self.xp_of(self.blobs[0]), self.num,
                                   self.res_hw[0] * self.res_hw[1], self.cg_in,
                                   dy.dtype, own=True)
            self._accumulate_weight_diff(col, self._response_rows(dy))
        elif want_w:
            for s in self._chunks():
                self._accumulate_weight_diff(self._columns(x[s], own=self.keep_cols),
                                             self._response_rows(dy[s]))
        self._cached = None
        if want_x:
            self._image_gradient(top, bottom)

    def _image_gradient(self, top, bottom):
        """bottom's diff from top's, through the whole-batch path in chunks."""
        dy = self._batch(top.xdiff, self.res_hw, self.conv_out)
        dx = self._batch(bottom.xdiff, self.img_hw, self.conv_in)
        for s in self._chunks(self.img_chunk):
            self._image_from_response(dy[s], dx[s])

    def _grouped(self, arr, spatial, channels):
        """(N, G, C/G, *spatial) view of a contiguous blob array."""
        return arr.reshape((self.num, self.group, channels // self.group) + tuple(spatial))

    def _backward_per_image(self, top, bottom, want_w, want_x):
        x = self._grouped(bottom.xdata, self.in_hw, self.conv_in)
        dy = self._grouped(top.xdiff, self.out_hw, self.conv_out)
        flip = want_x and self.flipped
        if want_w or flip:
            dx = self._grouped(bottom.xdiff, (self.in_hw[0] * self.in_hw[1],),
                               self.conv_in) if flip else None
            conv_per_image.weight_and_image_gradients(self, x, dy, dx, want_w, flip)
        if want_x and not flip:     # strided: col2im through the whole-batch path
            self._image_gradient(top, bottom)


@register("Deconvolution")
class DeconvolutionLayer(_ConvolutionBase):
    """The transpose of Convolution: top = W^T * bottom + b, output size s(H-1) + d(k-1)+1 - 2p;
    weights of shape (C, num_output/group, kh, kw)."""
    reverse = True

    def _output_size(self, size, d):
        return cols.deconv_output_size(size, self.kernel[d], self.stride[d], self.pad[d],
                                       self.dilation[d])

    def forward(self, bottom, top):
        if self.engine is not None:
            return self.engine.forward(bottom, top)
        for b, t in zip(bottom, top):
            x = self._batch(b.xdata, self.res_hw, self.conv_out)
            y = self._batch(t.xdata, self.img_hw, self.conv_in)
            for s in self._chunks(self.img_chunk):
                self._image_from_response(x[s], y[s])
            if self.bias_term:
                t3 = t.xdata.reshape(self.num, self.num_output, self._top_spatial())
                t3 += self.blobs[1].xdata.reshape(1, -1, 1)

    def _backward_pair(self, i, top, bottom, want_w, want_x):
        dy = self._batch(top.xdiff, self.img_hw, self.conv_in)
        x = self._batch(bottom.xdata, self.res_hw, self.conv_out)
        dx = self._batch(bottom.xdiff, self.res_hw, self.conv_out)
        for s in self._chunks():
            col = self._columns(dy[s])
            if want_w:
                self._accumulate_weight_diff(col, self._response_rows(x[s]))
            if want_x:
                self._response(col, dx[s])

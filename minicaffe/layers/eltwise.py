"""Eltwise (eltwise_param): elementwise PROD, SUM (with coefficients) or MAX of the bottoms."""
from ..errors import ShapeError
from ..layer import Layer, register, shape_text
from ..proto import caffe_pb2
from .scratch import reuse

EltwiseOp = caffe_pb2.EltwiseParameter


@register("Eltwise")
class EltwiseLayer(Layer):
    """Element-wise PROD, SUM (with one coefficient per bottom) or MAX of the bottoms."""
    min_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        self.op = p.operation
        if len(p.coeff) not in (0, len(bottom)):
            self.fail(f"eltwise_param has {len(p.coeff)} coeff values for {len(bottom)} bottoms "
                      f"(give one per bottom blob, or none)")
        if self.op == EltwiseOp.PROD and len(p.coeff):
            self.fail("coefficients (coeff) are only allowed for operation SUM")
        if self.op not in (EltwiseOp.PROD, EltwiseOp.SUM, EltwiseOp.MAX):
            self.fail(f"unknown eltwise operation {self.op}")
        self.coeffs = [float(c) for c in p.coeff] or [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad
        self.max_idx = None

    def reshape(self, bottom, top):
        s0 = tuple(bottom[0].shape)
        for i, b in enumerate(bottom[1:], 1):
            if tuple(b.shape) != s0:
                self.fail(f"all bottoms must have the same shape: bottom 0 has shape "
                          f"{shape_text(s0)}, bottom {i} has shape {shape_text(b.shape)}",
                          ShapeError)
        top[0].reshape(s0)
        if self.op == EltwiseOp.MAX:
            x = bottom[0].xdata
            self.max_idx = reuse(self.max_idx, s0, x, dtype=self.xp_of(bottom[0]).int32)

    def forward(self, bottom, top):
        xp = self.xp_of(bottom[0])
        out = top[0].xdata
        if self.op == EltwiseOp.PROD:
            xp.multiply(bottom[0].xdata, bottom[1].xdata, out=out)
            for b in bottom[2:]:
                out *= b.xdata
        elif self.op == EltwiseOp.SUM:
            c = self.coeffs
            if c[0] == 1.0:
                if out is not bottom[0].xdata:
                    out[...] = bottom[0].xdata
            else:
                xp.multiply(bottom[0].xdata, c[0], out=out)
            for ci, b in zip(c[1:], bottom[1:]):
                if ci == 1.0:
                    out += b.xdata
                else:
                    out += ci * b.xdata
        else:
            # Caffe's rule: between bottoms 0 and 1 a tie goes to bottom 1; a later bottom wins
            # only where it is strictly greater than the running maximum.
            mask = self.max_idx
            a, b = bottom[0].xdata, bottom[1].xdata
            first = a > b
            mask[...] = 1
            mask[first] = 0
            xp.copyto(out, xp.where(first, a, b))
            for i, bl in enumerate(bottom[2:], 2):
                gt = bl.xdata > out
                xp.copyto(out, bl.xdata, where=gt)
                mask[gt] = i

    def backward(self, top, propagate_down, bottom):
        xp = self.xp_of(top[0])
        tdiff = top[0].xdiff
        tdata = top[0].xdata
        for i, (b, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            bd = b.xdiff
            if self.op == EltwiseOp.PROD:
                if self.stable_prod_grad:
                    others = [o for j, o in enumerate(bottom) if j != i]
                    bd[...] = others[0].xdata
                    for o in others[1:]:
                        bd *= o.xdata
                else:
                    xp.divide(tdata, b.xdata, out=bd)
                bd *= tdiff
            elif self.op == EltwiseOp.SUM:
                if self.coeffs[i] == 1.0:
                    bd[...] = tdiff
                else:
                    xp.multiply(tdiff, self.coeffs[i], out=bd)
            else:
                xp.multiply(tdiff, self.max_idx == i, out=bd)

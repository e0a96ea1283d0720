"""A call after each layer's backward, standing in for Caffe's ``Net::add_after_backward``
(pycaffe's ``net.after_backward``): the data-parallel code starts a gradient bucket as soon as
its layers are done.

The hook wraps each back-propagating layer's ``backward`` on the instance, so the Net's own
loop is untouched. With ``iter_size`` > 1 only the last of the accumulating passes reports:
the gradients are final only then.
"""


class AfterBackward:
    def __init__(self, net, callback, iter_size=1):
        self.callback = callback
        self.iter_size = int(iter_size)
        self.passes = 0
        running = [i for i in range(len(net.layers)) if net.layer_need_backward(i)]
        self.first = running[-1] if running else None   # the layer each backward starts at
        for li in running:
            self._wrap(li, net.layers[li])

    def _wrap(self, li, layer):
        inner = layer.backward

        def backward(top, propagate_down, bottom):
            if li == self.first:
                self.passes += 1
            inner(top, propagate_down, bottom)
            if self.passes == self.iter_size:
                self.callback(li)
        layer.backward = backward

    def reset(self):
        """Before an iteration's passes."""
        self.passes = 0

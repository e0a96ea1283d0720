"""y = 2 x as a layer (dL/dx = 2 dL/dy): a closed-form layer that test_net registers as a
native type and test_python_layer's user module extends as a Python layer."""
from minicaffe.layer import Layer


class Doubling(Layer):
    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].xdata[...] = 2 * bottom[0].xdata

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].xdiff[...] = 2 * top[0].xdiff

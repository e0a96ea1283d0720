"""Compute engines behind the layers: alternative implementations of a layer's arithmetic.

A layer's own module holds the reference implementation (NumPy/CuPy through the array
module); an engine here is a faster path for one device that must agree with it, chosen per
layer at setup and falling back to the reference when it cannot serve.

* ``conv_per_image``: Convolution on NumPy arrays one image at a time per core;
* ``cpu_threads``: the split of such work over the cores, BLAS held to one thread meanwhile.
"""

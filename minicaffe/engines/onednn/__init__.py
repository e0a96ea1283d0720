"""oneDNN (the library behind PyTorch's CPU convolutions) as a CPU convolution engine.

``available()`` says whether the library can be loaded; ``Convolution`` is one configuration
with ``forward``, ``backward_data`` and ``backward_weights`` on NCHW float32 NumPy arrays;
``conv_layer.ConvLayerEngine`` runs a Convolution/Deconvolution layer on it.
"""
from .library import OneDNNError, OneDNNUnavailable, available, load
from .convolution import Convolution

__all__ = ["Convolution", "OneDNNError", "OneDNNUnavailable", "available", "load"]

"""Caffe's convolution geometry: kernel, stride, pad and dilation read from a
ConvolutionParameter (Convolution, Deconvolution and Im2col share these rules)."""


def _pair(layer, p, name, default, h_field=None, w_field=None):
    """A (h, w) setting from a repeated field (given once or once per spatial axis) or from the
    explicit ``*_h``/``*_w`` fields (Caffe's rules)."""
    values = list(getattr(p, name))
    if h_field and (p.HasField(h_field) or p.HasField(w_field)):
        if values:
            layer.fail(f"either {name} or {h_field}/{w_field} should be specified; not both")
        return int(getattr(p, h_field)), int(getattr(p, w_field))
    if not values:
        if default is None:
            layer.fail(f"{name} (or {h_field} and {w_field}) is required")
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    layer.fail(f"{name} must be specified once, or once per spatial dimension "
               f"(given {len(values)} times for 2 spatial dimensions)")


def read_geometry(layer, p, bottom):
    """Set ``layer.axis``, ``num_spatial``, ``kernel``, ``stride``, ``pad`` and ``dilation``
    from a ConvolutionParameter ``p`` (Convolution, Deconvolution and Im2col share these)."""
    try:
        layer.axis = bottom.canonical_axis_index(p.axis)
    except IndexError:
        layer.fail(f"axis {p.axis} is out of range for bottom shape {tuple(bottom.shape)}")
    layer.num_spatial = bottom.num_axes - layer.axis - 1
    if layer.num_spatial != 2:
        layer.fail(f"only 2-D spatial input (..., C, H, W from axis {p.axis}) is supported; "
                   f"bottom shape {tuple(bottom.shape)} has {layer.num_spatial} spatial axes")
    layer.kernel = _pair(layer, p, "kernel_size", None, "kernel_h", "kernel_w")
    layer.stride = _pair(layer, p, "stride", 1, "stride_h", "stride_w")
    layer.pad = _pair(layer, p, "pad", 0, "pad_h", "pad_w")
    layer.dilation = _pair(layer, p, "dilation", 1)
    if min(layer.kernel) <= 0:
        layer.fail(f"filter dimensions must be nonzero, got kernel {layer.kernel}")
    if min(layer.stride) <= 0:
        layer.fail(f"stride must be positive, got {layer.stride}")
    if min(layer.dilation) <= 0:
        layer.fail(f"dilation must be positive, got {layer.dilation}")


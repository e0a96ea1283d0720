"""Tile and Crop: a blob repeated along an axis, or cut to another blob's shape."""
from ..errors import ShapeError
from ..layer import Layer, register, shape_text


@register("Tile")
class TileLayer(Layer):
    """Repeat the bottom ``tiles`` times along ``axis`` (whole blocks, like numpy.tile): the
    top's ``axis`` is ``tiles`` times the bottom's, its other axes the bottom's."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.refuse_in_place(bottom, top)
        p = self.layer_param.tile_param
        if not p.HasField("tiles"):
            self.fail("tile_param.tiles must be specified")
        if p.tiles <= 0:
            self.fail(f"tile_param.tiles must be positive, got {p.tiles}")
        self.tiles = int(p.tiles)

    def reshape(self, bottom, top):
        b = bottom[0]
        axis = self.canonical_axis(b, self.layer_param.tile_param.axis, "tile_param.axis")
        s = tuple(b.shape)
        self.outer = b.count_range(0, axis)
        self.inner = b.count_range(axis)
        top[0].reshape(s[:axis] + (s[axis] * self.tiles,) + s[axis + 1:])

    def forward(self, bottom, top):
        t = top[0].xdata.reshape(self.outer, self.tiles, self.inner)
        t[...] = bottom[0].xdata.reshape(self.outer, 1, self.inner)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp_of(bottom[0])
        td = top[0].xdiff.reshape(self.outer, self.tiles, self.inner)
        xp.sum(td, axis=1, out=bottom[0].xdiff.reshape(self.outer, self.inner))


# ---------------------------------------------------------------------------------------------
@register("Crop")
class CropLayer(Layer):
    """Crop bottom 0 to the shape of bottom 1 on the axes from ``axis`` on, at ``offset``."""
    exact_num_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.crop_param
        start = self.canonical_axis(bottom[0], p.axis, "crop_param.axis")
        if len(p.offset) > 1 and start + len(p.offset) != bottom[0].num_axes:
            self.fail(f"crop_param gives {len(p.offset)} offsets but {bottom[0].num_axes - start} "
                      f"axes (from axis {start} of bottom shape {shape_text(bottom[0].shape)}) are "
                      f"cropped; give one offset per cropped axis, or a single one")

    def reshape(self, bottom, top):
        p = self.layer_param.crop_param
        b0, b1 = bottom
        nax = b0.num_axes
        start = self.canonical_axis(b0, p.axis, "crop_param.axis")
        if b1.num_axes < nax:
            self.fail(f"the reference bottom 1 of shape {shape_text(b1.shape)} has fewer axes than "
                      f"bottom 0 of shape {shape_text(b0.shape)}", ShapeError)
        shape, index = [], []
        for i in range(nax):
            off, size = 0, b0.shape[i]
            if i >= start:
                size = b1.shape[i]
                if len(p.offset) == 1:
                    off = int(p.offset[0])
                elif len(p.offset) > 1:
                    off = int(p.offset[i - start])
                if b0.shape[i] - off < size:
                    self.fail(f"the crop of axis {i} is out of bounds: size {size} at offset "
                              f"{off} does not fit bottom 0 of shape {shape_text(b0.shape)} "
                              f"(bottom 1 has shape {shape_text(b1.shape)})", ShapeError)
            shape.append(size)
            index.append(slice(off, off + size))
        self.index = tuple(index)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].xdata[...] = bottom[0].xdata[self.index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bd = bottom[0].xdiff
            bd[...] = 0
            bd[self.index] = top[0].xdiff

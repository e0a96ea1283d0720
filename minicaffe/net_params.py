"""A net's parameter blobs, one entry per (layer, blob index), and Caffe's sharing rules
(Net::AppendParam): a ParamSpec ``name`` seen before makes the blob share its owner's data
and diff, so the owner's lr/decay multipliers govern the shared blob's update."""
from .errors import ShapeError
from .proto import caffe_pb2


class NetParams:
    def __init__(self):
        self.blobs = []            # every parameter blob, one entry per (layer, index)
        self.owner = []            # index into blobs of the owner, or -1
        self.display_names = []
        self.names_index = {}
        self.layer_indices = []
        self.specs = []

    def __len__(self):
        return len(self.blobs)

    def append(self, li, layer, pi, spec):
        """Add parameter ``pi`` of ``layer`` (layer index ``li``), sharing it if named before."""
        name = spec.name
        idx = len(self.blobs)
        self.layer_indices.append((li, pi))
        self.specs.append(spec)
        self.display_names.append(name or str(idx))
        if not name or name not in self.names_index:
            if name:
                self.names_index[name] = idx
            self.owner.append(-1)
            self.blobs.append(layer.blobs[pi])
            return
        owner = self.names_index[name]
        self.owner.append(owner)
        owner_blob = self.blobs[owner]
        this_blob = layer.blobs[pi]
        strict = spec.share_mode != caffe_pb2.ParamSpec.PERMISSIVE
        if strict and tuple(owner_blob.shape) != tuple(this_blob.shape):
            raise ShapeError(f"layer '{layer.name}': cannot share param '{name}': owner shape "
                             f"{tuple(owner_blob.shape)}, this shape {tuple(this_blob.shape)}")
        if not strict and owner_blob.count != this_blob.count:
            raise ShapeError(f"layer '{layer.name}': cannot share param '{name}': owner count "
                             f"{owner_blob.count}, this count {this_blob.count}")
        if tuple(owner_blob.shape) == tuple(this_blob.shape):
            layer.blobs[pi] = owner_blob
        else:
            this_blob.share_data(owner_blob)
            this_blob.share_diff(owner_blob)
        self.blobs.append(layer.blobs[pi])

    def learnable(self):
        """Owned parameter blobs with their ParamSpec (lr_mult, decay_mult)."""
        return [(b, s) for b, s, o in zip(self.blobs, self.specs, self.owner) if o < 0]

    def rebind(self, layers):
        """Point every entry at the blob its layer holds now (after the layers' blobs were
        replaced, as ``Net.share_with`` does)."""
        self.blobs = [layers[li].blobs[pi] for li, pi in self.layer_indices]

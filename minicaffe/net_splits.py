"""Automatic Split layers (Caffe's InsertSplits): a blob that feeds several layers, or feeds
one and carries a loss weight, gets a Split layer with one top per consumer, named as Caffe
names them, so that each consumer's gradient is summed back into the blob."""
from .errors import LayerError
from .proto import caffe_pb2


def split_layer_name(layer_name, blob_name, blob_idx):
    return f"{blob_name}_{layer_name}_{blob_idx}_split"


def split_blob_name(layer_name, blob_name, blob_idx, split_idx):
    return f"{blob_name}_{layer_name}_{blob_idx}_split_{split_idx}"


def insert_splits(param):
    last_top = {}
    source_of = {}
    consumers = {}
    loss_weight = {}
    for i, lp in enumerate(param.layer):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise LayerError(f"layer '{lp.name}': unknown bottom blob '{name}' (bottom "
                                 f"index {j}); no earlier layer produces it")
            src = last_top[name]
            source_of[(i, j)] = src
            consumers[src] = consumers.get(src, 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            src = last_top[lp.top[j]]
            loss_weight[src] = lp.loss_weight[j]
            if lp.loss_weight[j]:
                consumers[src] = consumers.get(src, 0) + 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    next_split = {}
    for i, lp0 in enumerate(param.layer):
        lp = out.layer.add()
        lp.CopyFrom(lp0)
        for j in range(len(lp.bottom)):
            src = source_of[(i, j)]
            if consumers.get(src, 0) > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                lp.bottom[j] = split_blob_name(param.layer[src[0]].name, lp.bottom[j], src[1], k)
        for j, name in enumerate(lp0.top):
            n = consumers.get((i, j), 0)
            if n > 1:
                w = loss_weight.get((i, j), 0.0)
                sp = out.layer.add()
                sp.name = split_layer_name(lp0.name, name, j)
                sp.type = "Split"
                sp.bottom.append(name)
                for k in range(n):
                    sp.top.append(split_blob_name(lp0.name, name, j, k))
                    if w:
                        sp.loss_weight.append(w if k == 0 else 0.0)
                if w:
                    lp.ClearField("loss_weight")
                    next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out

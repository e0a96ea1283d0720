#!/usr/bin/env python3
"""Generate models/cifar10_bn/train_val.prototxt with NetSpec (pycaffe style).

    python models/cifar10_bn/make_train_val.py            # rewrite train_val.prototxt
    python models/cifar10_bn/make_train_val.py -          # print it instead

Three conv blocks, each conv (no bias) followed by in-place BatchNorm (statistics, never
learned: lr_mult 0 on its three blobs) and a learned per-channel Scale and Bias, then ReLU and
pooling; an InnerProduct classifier. The two Data layers share the name "cifar" and the tops
data/label, one per phase, so the TEST one is built by a second NetSpec and put second.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


from minicaffe.net_spec import NetSpec, layers as L, params as P  # noqa: E402
from minicaffe.proto import caffe_pb2  # noqa: E402

DATA = "data/cifar10"


def data_layer(phase, source, batch_size):
    return L.Data(name="cifar", include=dict(phase=phase),
                  transform_param=dict(mean_file=f"{DATA}/mean.binaryproto"),
                  source=source, batch_size=batch_size, backend=P.Data.LMDB, ntop=2)


def conv(bottom, num_output, std):
    return L.Convolution(bottom, param=[dict(lr_mult=1)], num_output=num_output, pad=2,
                         kernel_size=5, stride=1, bias_term=False,
                         weight_filler=dict(type="gaussian", std=std))


def bn_scale_bias(n, k, blob):
    """In-place BatchNorm + Scale + Bias on ``blob``, named bn<k>, scale<k>, bias<k>."""
    n[f"bn{k}"] = L.BatchNorm(blob, param=[dict(lr_mult=0)] * 3, in_place=True)
    n[f"scale{k}"] = L.Scale(n[f"bn{k}"], axis=1, num_axes=1, in_place=True)
    n[f"bias{k}"] = L.Bias(n[f"scale{k}"], axis=1, num_axes=1, in_place=True)
    return n[f"bias{k}"]


def make_net():
    n = NetSpec()
    n.data, n.label = data_layer(caffe_pb2.TRAIN, f"{DATA}/cifar10_train_lmdb", 100)

    n.conv1 = conv(n.data, 32, 0.0001)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.relu1 = L.ReLU(bn_scale_bias(n, 1, n.pool1), in_place=True)

    n.conv2 = conv(n.relu1, 32, 0.01)
    n.relu2 = L.ReLU(bn_scale_bias(n, 2, n.conv2), in_place=True)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.AVE, kernel_size=3, stride=2)

    n.conv3 = conv(n.pool2, 64, 0.01)
    n.relu3 = L.ReLU(bn_scale_bias(n, 3, n.conv3), in_place=True)
    n.pool3 = L.Pooling(n.relu3, pool=P.Pooling.AVE, kernel_size=3, stride=2)

    n.ip1 = L.InnerProduct(n.pool3, param=[dict(lr_mult=1, decay_mult=250),
                                           dict(lr_mult=0.2, decay_mult=0)],
                           num_output=10, weight_filler=dict(type="gaussian", std=0.01),
                           bias_filler=dict(type="constant"))
    n.accuracy = L.Accuracy(n.ip1, n.label, include=dict(phase=caffe_pb2.TEST))
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
    train = n.to_proto()

    t = NetSpec()
    t.data, t.label = data_layer(caffe_pb2.TEST, f"{DATA}/cifar10_test_lmdb", 1000)
    test_data = t.to_proto().layer[0]

    net = caffe_pb2.NetParameter(name="CIFAR10_BN")
    net.layer.extend([train.layer[0], test_data] + list(train.layer[1:]))
    return net


def make_text():
    return str(make_net())


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "train_val.prototxt")
    text = make_text()
    if out == "-":
        sys.stdout.write(text)
    else:
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}")

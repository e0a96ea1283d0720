"""The example nets as the benchmarks build them: Data layers replaced by Input layers
holding random images, so data loading is excluded from the timings."""
import os

import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODELS = os.path.join(ROOT, "models")
CIFAR10_BN = os.path.join(MODELS, "cifar10_bn", "train_val.prototxt")
CIFAR10_BN_DEPLOY = os.path.join(MODELS, "cifar10_bn", "deploy.prototxt")
RESNET20 = os.path.join(MODELS, "cifar10_resnet20", "train_val.prototxt")
TRAIN_VAL = {"cifar10_bn": CIFAR10_BN, "resnet20": RESNET20}   # the benchmarks' nets by name


def quiet_logs():
    import logging
    logging.getLogger("minicaffe").setLevel(logging.WARNING)


def input_net_param(model, batch, phase, drop=("Data",)):
    """``model``'s NetParameter for ``phase`` with its Data layers replaced by one Input
    layer giving ``data`` (batch, 3, 32, 32) and ``label`` (batch,); layers of the types in
    ``drop`` are left out."""
    from minicaffe.io.prototxt import read_prototxt
    from minicaffe.net_state import filter_net
    from minicaffe.proto import caffe_pb2
    full = read_prototxt(model, caffe_pb2.NetParameter())
    full.state.phase = phase
    param = filter_net(full)
    out = caffe_pb2.NetParameter(name=param.name)
    out.state.phase = phase
    inp = out.layer.add(name="input", type="Input", top=["data", "label"])
    inp.input_param.shape.add(dim=[batch, 3, 32, 32])
    inp.input_param.shape.add(dim=[batch])
    for lp in param.layer:
        if lp.type not in drop:
            out.layer.add().CopyFrom(lp)
    return out


def deploy_param(deploy, batch):
    """``deploy`` (TEST phase) with its Input layer reshaped to ``batch`` images."""
    from minicaffe.io.prototxt import read_prototxt
    from minicaffe.proto import caffe_pb2
    param = read_prototxt(deploy, caffe_pb2.NetParameter())
    for lp in param.layer:
        if lp.type == "Input":
            lp.input_param.shape[0].dim[0] = batch
    param.state.phase = caffe_pb2.TEST
    return param


def fill_inputs(net, seed=0):
    """Random images (pixel-like spread) and labels into the net's input blobs."""
    rng = np.random.default_rng(seed)
    data = net.blobs["data"].data
    data[...] = rng.standard_normal(data.shape, dtype=np.float32) * 60.0
    if "label" in net.blobs:
        label = net.blobs["label"].data
        label[...] = rng.integers(0, 10, label.shape)


def make_solver(net_param=None, net_path=None, weight_decay=0.0):
    """A plain SGD solver (lr 0.001, momentum 0.9, fixed) on a net parameter or file."""
    from minicaffe.proto import caffe_pb2
    from minicaffe.solvers import SGDSolver
    sp = caffe_pb2.SolverParameter(base_lr=0.001, momentum=0.9, weight_decay=weight_decay,
                                   lr_policy="fixed", max_iter=10 ** 7, random_seed=1701,
                                   display=0, solver_mode=caffe_pb2.SolverParameter.CPU)
    if net_param is not None:
        sp.train_net_param.CopyFrom(net_param)
    else:
        sp.train_net = net_path
    return SGDSolver(sp)

"""The models/cifar10_bn network in PyTorch, the reference of tools/benchmark.py (CPU) and
tools/gpu_benchmark.py (GPU). Benchmarks only: torch is never a minicaffe dependency.

Caffe's layers map one to one: ceil-mode pooling, BatchNorm with moving-average factor 0.999
(momentum 0.001) plus its learned affine (Caffe's Scale + Bias), no convolution bias; weights
drawn with the prototxt's gaussian std. Module names are the prototxt's layer names, so
per-layer rows line up.
"""


def cifar_bn_net(nn):
    """The network as a named ``nn.Sequential`` (``nn`` is ``torch.nn``)."""
    import torch
    net = nn.Sequential()
    for name, mod in [
            ("conv1", nn.Conv2d(3, 32, 5, padding=2, bias=False)),
            ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("bn1", nn.BatchNorm2d(32, momentum=0.001)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(32, 32, 5, padding=2, bias=False)),
            ("bn2", nn.BatchNorm2d(32, momentum=0.001)), ("relu2", nn.ReLU()),
            ("pool2", nn.AvgPool2d(3, 2, ceil_mode=True)),
            ("conv3", nn.Conv2d(32, 64, 5, padding=2, bias=False)),
            ("bn3", nn.BatchNorm2d(64, momentum=0.001)), ("relu3", nn.ReLU()),
            ("pool3", nn.AvgPool2d(3, 2, ceil_mode=True)),
            ("flatten", nn.Flatten()), ("ip1", nn.Linear(1024, 10))]:
        net.add_module(name, mod)
    with torch.no_grad():
        for name, std in (("conv1", 1e-4), ("conv2", 1e-2), ("conv3", 1e-2), ("ip1", 1e-2)):
            getattr(net, name).weight.normal_(0, std)
    return net

"""The example nets in PyTorch, the reference side of the CPU and GPU benchmarks.

torch is imported only inside these functions: it is never a minicaffe dependency. Caffe's
layers map one to one: ceil-mode pooling, BatchNorm with moving-average factor 0.999
(momentum 0.001, eps 1e-5) plus its learned affine (Caffe's Scale + Bias, or Scale with
bias_term), no convolution bias; weights drawn as the prototxt's fillers. In the CIFAR-10 BN
net the module names are the prototxt's layer names, so per-layer rows line up.
"""
import importlib.metadata
import time

from .harness import layer_sample


def installed_version():
    """The installed torch's version, read without importing it into this process."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def cifar_bn_net():
    """models/cifar10_bn as a named ``nn.Sequential``."""
    import torch
    import torch.nn as nn
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


def batch_norm(nn, channels):
    """Caffe's BatchNorm + Scale(bias_term) with its default moving-average fraction."""
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.001)


def resnet20_net():
    """models/cifar10_resnet20: conv-BN-ReLU, three stages of three basic blocks (16, 32, 64
    channels, stride 2 into stages 2 and 3, 1x1 conv + BN projection shortcuts there), global
    average pooling, a 10-way linear layer; MSRA (fan-in) weights as the prototxt's."""
    import math

    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = batch_norm(nn, cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = batch_norm(nn, cout)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          batch_norm(nn, cout))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return torch.relu(h + (x if self.proj is None else self.proj(x)))

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), batch_norm(nn, 16), nn.ReLU()]
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for b in range(3):
            layers.append(Block(cin, width, 2 if stage and not b else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
    return net


TWINS = {"cifar10_bn": cifar_bn_net, "resnet20": resnet20_net}   # by minicaffe net name


class TorchNet:
    """A training iteration, an eval forward and per-layer times of ``net`` in PyTorch.

    ``weight_decay`` follows the minicaffe solver it is set against; ``softmax`` adds the
    deploy net's softmax to the eval forward; ``threads`` sets torch's intra-op threads."""

    def __init__(self, net, device="cpu", channels_last=False, batch=100, weight_decay=0.0,
                 input_scale=1.0, softmax=False, threads=None):
        import torch
        self.torch, self.F = torch, torch.nn.functional
        if threads is not None:
            torch.set_num_threads(threads)
        torch.manual_seed(1701)
        self.device, self.softmax, self.input_scale = device, softmax, input_scale
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net().to(device).to(memory_format=self.fmt)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.001, momentum=0.9,
                                   weight_decay=weight_decay)
        self.x = torch.randn(batch, 3, 32, 32, device=device).contiguous(
            memory_format=self.fmt) * input_scale
        self.y = torch.randint(0, 10, (batch,), device=device)
        self.x_eval = None

    def train_step(self):
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        self.F.cross_entropy(self.net(self.x), self.y).backward()
        self.opt.step()

    def eval_forward(self, batch):
        torch = self.torch
        if self.x_eval is None or self.x_eval.shape[0] != batch:
            self.x_eval = torch.randn(batch, 3, 32, 32, device=self.device).contiguous(
                memory_format=self.fmt)
        self.net.eval()
        with torch.inference_mode():
            out = self.net(self.x_eval)
            if self.softmax:
                self.F.softmax(out, dim=1)

    def per_layer(self):
        """Forward and backward of each module on its own (graph cut between modules; the
        first computes no input gradient), the loss as the last row; flatten counts into
        the layer after it (ip1)."""
        F = self.F
        self.net.train()
        mods = list(self.net.named_children()) + [("loss", lambda z: F.cross_entropy(z, self.y))]
        ins, outs, tf = [], [], []
        h = self.x
        for i, (_, m) in enumerate(mods):
            inp = h.detach().requires_grad_(i > 0)
            t0 = time.perf_counter()
            h = m(inp)
            tf.append(time.perf_counter() - t0)
            ins.append(inp)
            outs.append(h)
        tb = [0.0] * len(mods)
        g = None
        for i in reversed(range(len(mods))):
            t0 = time.perf_counter()
            outs[i].backward(g)
            tb[i] = time.perf_counter() - t0
            g = ins[i].grad
        self.net.zero_grad(set_to_none=True)
        keys = ["ip1" if name == "flatten" else name for name, _ in mods]
        return layer_sample(keys, tf, tb)

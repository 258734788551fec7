"""Image classification networks for the tests and benchmarks, written from their papers so that
nothing needs torchvision at run time: ResNet-18 and ResNet-50 (He et al. 2016, "Deep Residual
Learning for Image Recognition"; ResNet-50 as torchvision's v1.5, whose bottleneck strides on
its 3×3 convolution rather than the first 1×1), ResNeXt-50 32×4d (Xie et al. 2017, "Aggregated
Residual Transformations for Deep Neural Networks": the bottleneck's 3×3 convolution in 32
groups of 4 channels per 64 of width) and MobileNetV2 (Sandler et al. 2018, "MobileNetV2:
Inverted Residuals and Linear Bottlenecks", width multiplier 1).

The modules are named as torchvision names them and their parameters have the same shapes, so
``model.load_state_dict(torchvision_model.state_dict())`` works, and they run the same
operations in the same order (convolution, batch norm, ReLU; the residual sum, then its ReLU;
the global average pooling, flatten, classifier), so both give identical outputs on the same
weights. tests/test_vision.py checks both against torchvision when it is installed.

    vision_model(name, num_classes=1000, seed=0, random_bn=False)  the nn.Module, seeded
    randomize_batchnorm(model, seed=0)   non-trivial BN statistics and affine parameters
    vision_layers(name, image_size=224)  every convolution and the classifier: its geometry
    vision_flops(name, image_size=224)   forward FLOPs per image, 2 per multiply-add
    FLOPS_224                            those counts at 224 × 224, per model

This module imports torch; the benchmark group that uses it (networks.py) imports it only
when it runs."""

from collections import namedtuple

import torch
from torch import nn

VISION_MODELS = ("resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2")

#: Forward FLOPs of one 224 × 224 image with 1000 classes (2 per multiply-add, every
#: convolution and the classifier; batch norm, activations, pooling and additions not counted).
FLOPS_224 = {"resnet18": 3_628_146_688, "resnet50": 8_178_368_512, "resnext50_32x4d": 8_460_959_744,
             "mobilenet_v2": 601_548_544}

#: The residual networks: block kind, blocks per stage, groups, width per group.
_RESNETS = {"resnet18": ("basic", (2, 2, 2, 2), 1, 64),
            "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
            "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4)}
_STAGE_PLANES = (64, 128, 256, 512)
_EXPANSION = {"basic": 1, "bottleneck": 4}

#: MobileNetV2's inverted residual stages (Sandler et al., table 2): expansion t, output
#: channels c, repeats n, stride s of the first repeat.
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))
_MOBILENET_STEM, _MOBILENET_LAST, _MOBILENET_DROPOUT = 32, 1280, 0.2


def _conv(cin, cout, kernel, stride=1, groups=1):
    """A bias-free convolution padded to keep the size at stride 1 (every one of these networks')."""
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)


def _shortcut(cin, cout, stride):
    """The projection shortcut (a strided 1×1 convolution and batch norm) where the block changes
    the size or the channels; None (identity) elsewhere."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions (the first strided) and the shortcut: ResNet-18 and -34's block."""

    def __init__(self, cin, planes, stride=1, groups=1, width_per_group=64):
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("the basic block has no groups: groups=1 and width_per_group=64 only")
        self.conv1, self.bn1 = _conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
        self.downsample = _shortcut(cin, planes, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1×1 down to the width, 3×3 (strided, grouped for ResNeXt), 1×1 up to 4 × planes, and the
    shortcut. The width is planes × width_per_group / 64 × groups: ResNet-50's is planes,
    ResNeXt-50 32×4d's is 2 × planes."""

    def __init__(self, cin, planes, stride=1, groups=1, width_per_group=64):
        super().__init__()
        width = planes * width_per_group // 64 * groups
        cout = planes * _EXPANSION["bottleneck"]
        self.conv1, self.bn1 = _conv(cin, width, 1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride, groups), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv(width, cout, 1), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """The stem (7×7/2 convolution, batch norm, ReLU, 3×3/2 max pooling), four stages of blocks
    at 64, 128, 256 and 512 planes (each stage but the first halves the size in its first
    block), global average pooling and a Linear classifier."""

    def __init__(self, block, stages, num_classes=1000, groups=1, width_per_group=64):
        super().__init__()
        block_class = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
        self.conv1, self.bn1 = _conv(3, 64, 7, 2), nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for i, (planes, blocks) in enumerate(zip(_STAGE_PLANES, stages)):
            layers = []
            for b in range(blocks):
                layers.append(block_class(cin, planes, 2 if b == 0 and i > 0 else 1, groups, width_per_group))
                cin = planes * _EXPANSION[block]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ConvBNReLU6(nn.Sequential):
    """Convolution, batch norm, ReLU6 as one Sequential (items 0, 1, 2, as torchvision names them)."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1):
        super().__init__(_conv(cin, cout, kernel, stride, groups), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: a 1×1 expansion to t × the input channels (absent when t = 1), a 3×3
    depthwise convolution (strided), a linear 1×1 projection with batch norm and no activation,
    and the input added back when the block keeps the size and the channels."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        layers = [ConvBNReLU6(cin, hidden, 1)] if expansion != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden), _conv(hidden, cout, 1),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """A 3×3/2 stem to 32 channels, the inverted residual stages, a 1×1 convolution to 1280
    channels, global average pooling, dropout (0.2) and a Linear classifier."""

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [ConvBNReLU6(3, _MOBILENET_STEM, 3, 2)], _MOBILENET_STEM
        for t, c, n, s in _MOBILENET_V2:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, _MOBILENET_LAST, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(_MOBILENET_DROPOUT), nn.Linear(_MOBILENET_LAST, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _check_name(name):
    if name not in VISION_MODELS:
        raise ValueError(f"name must be one of {', '.join(VISION_MODELS)}, got {name!r}")


def vision_model(name, num_classes=1000, seed=0, random_bn=False):
    """The network ``name`` (one of VISION_MODELS) as an nn.Module in training mode (call
    ``.eval()`` for inference), float32, on the CPU, its weights drawn from ``seed`` alone
    (PyTorch's global random state is neither read nor changed): convolutions Kaiming normal
    (fan out, ReLU gain), batch norm weight 1, bias 0, running mean 0 and variance 1, the
    classifier normal with std 0.01 and bias 0. ``random_bn=True``: then
    :func:`randomize_batchnorm` with the same seed, so that batch norm is not an identity."""
    _check_name(name)
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    with torch.device("meta"):  # no default initialization: every tensor is set below
        if name == "mobilenet_v2":
            model = MobileNetV2(num_classes)
        else:
            block, stages, groups, width = _RESNETS[name]
            model = ResNet(block, stages, num_classes, groups, width)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # running mean 0, variance 1, count 0; weight 1, bias 0
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
                nn.init.zeros_(m.bias)
    if random_bn:
        randomize_batchnorm(model, seed)
    return model


def randomize_batchnorm(model, seed=0):
    """Gives every BatchNorm2d of ``model`` random running statistics and affine parameters, from
    ``seed`` alone: mean normal (std 0.1), variance uniform in [0.5, 2], weight uniform in
    [0.5, 1.5], bias normal (std 0.1). Folding batch norm into a convolution, or skipping it,
    then changes the result, which the identity statistics of a fresh model would hide.
    Returns the model (changed in place)."""
    generator = torch.Generator().manual_seed(seed + 0x5EED)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0.0, 0.1, generator=generator)
    return model


#: One convolution or the classifier (kernel 1, sizes 1) of a network, for an image of a given
#: size: its module's name in the model, channels, square kernel, stride, padding, groups, and
#: the square input and output sizes.
Layer = namedtuple("Layer", "name in_channels out_channels kernel stride padding groups in_size out_size")


def _out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def vision_layers(name, image_size=224, num_classes=1000):
    """Every convolution of ``name`` in forward order, then the classifier, as Layer tuples for
    an ``image_size`` × ``image_size`` input, worked out from the architecture (not by running
    the model: tests/test_vision.py checks the two agree)."""
    _check_name(name)
    layers = []

    def conv(module, cin, cout, kernel, stride, size, groups=1):
        out = _out(size, kernel, stride, kernel // 2)
        layers.append(Layer(module, cin, cout, kernel, stride, kernel // 2, groups, size, out))
        return out

    if name == "mobilenet_v2":
        size = conv("features.0.0", 3, _MOBILENET_STEM, 3, 2, image_size)
        cin, index = _MOBILENET_STEM, 1
        for t, c, n, s in _MOBILENET_V2:
            for i in range(n):
                prefix, hidden, j = f"features.{index}.conv", cin * t, 0
                if t != 1:
                    conv(f"{prefix}.0.0", cin, hidden, 1, 1, size)
                    j = 1
                size = conv(f"{prefix}.{j}.0", hidden, hidden, 3, s if i == 0 else 1, size, groups=hidden)
                conv(f"{prefix}.{j + 1}", hidden, c, 1, 1, size)
                cin, index = c, index + 1
        conv(f"features.{index}.0", cin, _MOBILENET_LAST, 1, 1, size)
        layers.append(Layer("classifier.1", _MOBILENET_LAST, num_classes, 1, 1, 0, 1, 1, 1))
        return layers
    block, stages, groups, width_per_group = _RESNETS[name]
    size = conv("conv1", 3, 64, 7, 2, image_size)
    size = _out(size, 3, 2, 1)  # max pooling
    cin = 64
    for i, (planes, blocks) in enumerate(zip(_STAGE_PLANES, stages)):
        for b in range(blocks):
            prefix, stride = f"layer{i + 1}.{b}", 2 if b == 0 and i > 0 else 1
            cout = planes * _EXPANSION[block]
            if block == "basic":
                out = conv(f"{prefix}.conv1", cin, planes, 3, stride, size)
                conv(f"{prefix}.conv2", planes, planes, 3, 1, out)
            else:
                width = planes * width_per_group // 64 * groups
                conv(f"{prefix}.conv1", cin, width, 1, 1, size)
                out = conv(f"{prefix}.conv2", width, width, 3, stride, size, groups)
                conv(f"{prefix}.conv3", width, cout, 1, 1, out)
            if stride != 1 or cin != cout:
                conv(f"{prefix}.downsample.0", cin, cout, 1, stride, size)
            cin, size = cout, out
    layers.append(Layer("fc", cin, num_classes, 1, 1, 0, 1, 1, 1))
    return layers


def layer_flops(layer):
    """One Layer's FLOPs per image: 2 per multiply-add (bias additions not counted)."""
    return (2 * layer.out_channels * (layer.in_channels // layer.groups) * layer.kernel ** 2
            * layer.out_size ** 2)


def vision_flops(name, image_size=224, num_classes=1000):
    """Forward FLOPs of ``name`` per image: its convolutions and classifier, 2 per multiply-add."""
    return sum(layer_flops(layer) for layer in vision_layers(name, image_size, num_classes))

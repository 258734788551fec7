"""brgemm.bench.vision: the test and benchmark networks. Against torchvision when it can be
imported (same state_dict keys and shapes, identical outputs on the same weights; skipped
without it), and always: the FLOP counts against a count made by running the model with
forward hooks on every convolution and Linear, and the seeded initialization."""

import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
from brgemm.bench import vision  # noqa: E402  (imports torch)

#: The two operators torchvision's Python side registers fake kernels for on import
#: (torchvision/_meta_registrations.py); their schemas as its C++ sources define them
#: (csrc/ops/nms.cpp, csrc/ops/quantized/cpu/qnms_kernel.cpp).
TORCHVISION_SCHEMAS = {"nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                       "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"}
_schema_libraries = []  # the torch.library.Library objects must outlive the import


def _has_operator(name):
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except Exception:
        return False


def _import_torchvision():
    """torchvision, or None. A torchvision whose C++ operators do not load against this torch
    (a build for another version) still has pure-Python model definitions: they import once
    the two operator schemas its import needs are defined here first."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchvision
        return torchvision
    except ImportError:
        return None
    except Exception:
        pass
    try:
        for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[module]  # what the failed import left half done
        for name, schema in TORCHVISION_SCHEMAS.items():
            if not _has_operator(name):
                library = torch.library.Library("torchvision", "FRAGMENT")
                library.define(name + schema)
                _schema_libraries.append(library)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchvision
            import torchvision.models  # noqa: F401
        return torchvision
    except Exception:
        return None


@pytest.fixture(scope="module")
def torchvision():
    tv = _import_torchvision()
    if tv is None:
        pytest.skip("torchvision cannot be imported (pip install torchvision --no-deps)")
    return tv


@pytest.mark.parametrize("name", vision.VISION_MODELS)
def test_state_dict_and_outputs_match_torchvision(torchvision, name):
    ours = vision.vision_model(name, num_classes=100, seed=1, random_bn=True).eval()
    theirs = getattr(torchvision.models, name)(num_classes=100).eval()
    mine, its = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(its)
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in its.items()}
    theirs.load_state_dict(mine)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, expected = ours(x), theirs(x)
    assert y.shape == (2, 100)
    assert torch.equal(y, expected)
    # And the other way: torchvision's own initialization loads into ours.
    fresh = getattr(torchvision.models, name)(num_classes=100).eval()
    ours.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        assert torch.equal(ours(x), fresh(x))


def test_a_training_step_matches_torchvision(torchvision):
    """Training mode (batch statistics, the running averages updated) and the gradients."""
    ours = vision.vision_model("resnet18", num_classes=10, random_bn=True)
    theirs = torchvision.models.resnet18(num_classes=10)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1, 2, 3, 4])
    for model in (ours, theirs):
        torch.nn.functional.cross_entropy(model(x), target).backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(ours.named_buffers(), theirs.buffers()):
        assert torch.equal(b, c), name


def _hooked_flops(model, image_size, batch=2):
    """{module name: FLOPs per image} of every Conv2d and Linear, from the shapes a forward pass
    really produces (on the meta device: shapes without arithmetic), 2 per multiply-add."""
    flops, handles = {}, []

    def hook(name):
        def count(module, args, out):
            if isinstance(module, torch.nn.Conv2d):
                kh, kw = module.kernel_size
                per_output = module.in_channels // module.groups * kh * kw
            else:
                per_output = module.in_features
            flops[name] = 2 * out.numel() * per_output // batch
        return count

    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            handles.append(module.register_forward_hook(hook(name)))
    model.to("meta").eval()
    with torch.no_grad():
        model(torch.empty(batch, 3, image_size, image_size, device="meta"))
    for h in handles:
        h.remove()
    return flops


@pytest.mark.parametrize("name", vision.VISION_MODELS)
@pytest.mark.parametrize("image_size", [224, 97])
def test_flops_match_a_count_by_forward_hooks(name, image_size):
    hooked = _hooked_flops(vision.vision_model(name), image_size)
    layers = vision.vision_layers(name, image_size)
    assert [layer.name for layer in layers] == list(hooked)  # every layer, in forward order
    assert {layer.name: vision.layer_flops(layer) for layer in layers} == hooked
    assert vision.vision_flops(name, image_size) == sum(hooked.values())
    if image_size == 224:
        assert vision.FLOPS_224[name] == sum(hooked.values())


def test_the_layers_describe_the_modules():
    model = vision.vision_model("resnext50_32x4d")
    modules = dict(model.named_modules())
    for layer in vision.vision_layers("resnext50_32x4d"):
        m = modules[layer.name]
        if isinstance(m, torch.nn.Linear):
            assert (m.in_features, m.out_features) == (layer.in_channels, layer.out_channels)
            continue
        assert (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups) == (
            layer.in_channels, layer.out_channels, (layer.kernel,) * 2, (layer.stride,) * 2, (layer.padding,) * 2,
            layer.groups)
    assert modules["layer1.0.conv2"].groups == 32 and modules["layer1.0.conv2"].in_channels == 128
    # ResNet v1.5: the bottleneck strides on its 3×3 convolution.
    resnet50 = dict(vision.vision_model("resnet50").named_modules())
    assert resnet50["layer2.0.conv1"].stride == (1, 1) and resnet50["layer2.0.conv2"].stride == (2, 2)


def test_initialization_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    a, b = vision.vision_model("resnet18", seed=3), vision.vision_model("resnet18", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    c = vision.vision_model("resnet18", seed=4)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert a.training
    bn = a.layer1[0].bn1
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.running_var, torch.ones(64))
    assert torch.equal(bn.bias, torch.zeros(64)) and torch.equal(bn.running_mean, torch.zeros(64))
    std = a.layer1[0].conv1.weight.std().item()  # Kaiming normal, fan out: sqrt(2 / (64·9))
    assert std == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    assert torch.equal(a.fc.bias, torch.zeros(1000)) and a.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)

    randomized = vision.vision_model("resnet18", seed=3, random_bn=True)
    assert torch.equal(randomized.conv1.weight, a.conv1.weight)
    bn = randomized.layer1[0].bn1
    assert not torch.equal(bn.running_mean, torch.zeros(64)) and not torch.equal(bn.weight, torch.ones(64))
    assert bn.running_var.min() >= 0.5 and bn.running_var.max() <= 2.0
    assert vision.randomize_batchnorm(a, seed=3) is a
    for key, value in a.state_dict().items():
        assert torch.equal(value, randomized.state_dict()[key]), key


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="name must be one of"):
        vision.vision_model("vgg16")
    with pytest.raises(ValueError, match="num_classes"):
        vision.vision_model("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="name must be one of"):
        vision.vision_flops("resnet101")
    assert vision.vision_model("mobilenet_v2", num_classes=7).classifier[1].out_features == 7

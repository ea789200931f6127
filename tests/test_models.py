import pytest
import torch

from conftest import has_shared
from models import build_model, list_models

# published parameter counts (ResNet paper / torchvision model cards)
PUBLISHED_PARAMS = [
    ("resnet20", 10, 32, 0.27e6, 0.005e6),
    ("resnet56", 10, 32, 0.85e6, 0.005e6),
    ("resnet18", 1000, 224, 11.69e6, 0.005e6),
    ("resnet50", 1000, 224, 25.56e6, 0.005e6),
]


@pytest.mark.parametrize("name,classes,size,published,tol", PUBLISHED_PARAMS)
def test_parameter_count_equals_published(name, classes, size, published, tol):
    model = build_model(name, num_classes=classes, image_size=size)
    assert abs(sum(p.numel() for p in model.parameters()) - published) <= tol


def test_lenet_parameter_counts_match_caffe():
    assert sum(p.numel() for p in build_model("lenet5", num_classes=10, in_channels=1, image_size=28).parameters()) == 431080
    assert sum(p.numel() for p in build_model("lenet300_100", num_classes=10, in_channels=1, image_size=28).parameters()) == 266610


SMALL = ["lenet5", "lenet300_100", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34",
         "vgg_small", "vgg16", "vgg19"]


@pytest.mark.parametrize("name", SMALL)
def test_small_image_backbones_forward(name):
    chans, size = (1, 28) if name.startswith("lenet") else (3, 32)
    model = build_model(name, num_classes=7, in_channels=chans, image_size=size).eval()
    assert model(torch.zeros(2, chans, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", ["alexnet", "mobilenet_v2", "densenet121", "googlenet", "vgg16", "resnet18"])
def test_imagenet_backbones_build_without_download(name):
    model = build_model(name, num_classes=1000, image_size=224)
    assert sum(p.numel() for p in model.parameters()) > 1e6


def test_cifar_resnet18_uses_3x3_stem_without_maxpool():
    model = build_model("resnet18", num_classes=10, image_size=32)
    assert model.conv1.kernel_size == (3, 3) and not hasattr(model, "maxpool")
    assert sum(p.numel() for p in model.parameters()) == 11173962   # the widely quoted 11.17M


def test_timm_prefix_builds_a_timm_model():
    model = build_model("timm:resnet10t", num_classes=5, image_size=64)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_registry_lists_every_required_backbone():
    assert set(SMALL + ["resnet50", "alexnet", "mobilenet_v2", "densenet121"]) <= set(list_models())


@pytest.mark.skipif(not has_shared("pretrained/cifar10"), reason="../shared/data/pretrained not present")
def test_pretrained_resnet20_loads_and_predicts(monkeypatch):
    from conftest import SHARED_DATA
    monkeypatch.setenv("DATA_ROOT", SHARED_DATA)
    model = build_model("resnet20", num_classes=10, pretrained=True).eval()
    assert model.fc.weight.shape == (10, 64)
    # the file's own weights, not random init: a second load is identical and the BN stats are trained
    assert not torch.allclose(model.bn1.running_var, torch.ones(16))


def test_missing_pretrained_names_path(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        build_model("resnet20", num_classes=10, pretrained=True)

"""The Caffe LeNet init (models/lenet.py, init=caffe): xavier FAN_IN weights, zero biases, bias lr x2."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from engine.optim import build_optimizer
from models import build_model


@pytest.mark.parametrize("name", ["lenet5", "lenet300_100"])
def test_caffe_init_xavier_zero_bias(name):
    torch.manual_seed(0)
    m = build_model(name, num_classes=10, in_channels=1, image_size=28, init="caffe")
    for layer in m.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            bound = math.sqrt(3.0 / layer.weight[0].numel())
            assert float(layer.weight.detach().abs().max()) <= bound
            assert float(layer.weight.detach().abs().max()) > 0.95 * bound        # uniform over the whole range
            # U(-a, a): mean |w| = a / 2
            assert float(layer.weight.detach().abs().mean()) == pytest.approx(bound / 2, rel=0.1)
            assert float(layer.bias.detach().abs().max()) == 0.0 and layer.bias_lr_mult == 2.0


def test_caffe_bias_lr_mult_group():
    m = build_model("lenet5", num_classes=10, in_channels=1, image_size=28, init="caffe")
    opt = build_optimizer(m, OmegaConf.create({"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False,
                                               "weight_decay": 5e-4}))
    lrs = sorted((g["lr"], len(g["params"])) for g in opt.param_groups)
    assert lrs == [(0.01, 4), (0.02, 4)]
    assert all(g["weight_decay"] == 5e-4 for g in opt.param_groups)      # Caffe decay_mult 1 on biases
    plain = build_model("lenet5", num_classes=10, in_channels=1, image_size=28)
    assert len(build_optimizer(plain, OmegaConf.create({"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False,
                                                        "weight_decay": 5e-4})).param_groups) == 1


def test_unknown_init_rejected():
    with pytest.raises(ValueError, match="init"):
        build_model("lenet5", num_classes=10, in_channels=1, image_size=28, init="kaiming")

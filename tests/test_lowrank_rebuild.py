"""A finished low-rank model rebuilds from its method state (what evaluate.py does): fresh backbone ->
``load_state_dict`` -> ``transform`` -> weights give the same outputs and the same counted complexity."""
import pytest
import torch
from omegaconf import OmegaConf

from core.complexity import measure
from methods import RunContext, Stage, build_method
from models import build_model


def _ctx(loader=None):
    return RunContext(num_classes=10, in_channels=3, image_size=16, device=torch.device("cpu"), train_loader=loader)


@pytest.mark.parametrize("cfg,stage", [
    ({"name": "tt_admm", "family": "lowrank", "target_ratio": 2.0, "layout": "general",
      "stages": [{"name": "admm", "admm": True}, {"name": "finetune", "decompose": True}]},
     Stage("finetune", params={"decompose": True})),
    ({"name": "cc", "family": "lowrank", "com_ratio": 0.4, "com_ops": ["pruning", "td"]},
     Stage("finetune", params={"compress": True})),
])
def test_rebuild_from_method_state(cfg, stage):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    method = build_method(OmegaConf.create(cfg))
    model = method.transform(build_model("resnet20", num_classes=10), _ctx([(x, y)]))
    model = method.on_stage_start(stage, model, _ctx([(x, y)]))
    model.eval()
    fresh = build_method(OmegaConf.create(cfg))
    fresh.load_state_dict(method.state_dict())
    rebuilt = fresh.transform(build_model("resnet20", num_classes=10), _ctx())
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt(x), model(x), atol=1e-5)
    assert measure(rebuilt, (3, 16, 16)).macs == measure(model, (3, 16, 16)).macs < measure(
        build_model("resnet20", num_classes=10), (3, 16, 16)).macs

"""Analysis experiments and reference files fit together; the committed rows and the claims of
results/reference/{xgradcam,unit_ablation}.yaml are judged by tests/test_repro.py (enforced claims) and
reported by ``python evaluate.py report``."""
import os

import pytest
import yaml


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("paper", ["xgradcam", "unit_ablation"])
def test_experiments_compose_and_cite_existing_entries(compose, paper):
    import glob

    from omegaconf import OmegaConf

    from engine.config import validate

    with open(os.path.join(ROOT, "results", "reference", f"{paper}.yaml")) as f:
        keys = {e["key"] for e in yaml.safe_load(f)["entries"]}
    files = sorted(glob.glob(os.path.join(ROOT, "conf", "experiment", paper, "*.yaml")))
    assert files
    for path in files:
        cfg = compose([f"experiment={paper}/{os.path.basename(path)[:-5]}"])
        validate(cfg)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        assert cfg.method.family == "analysis" and cfg.paper == paper
        assert cfg.reference.split(":")[1] in keys, f"{path}: reference {cfg.reference} is not an entry of {paper}.yaml"

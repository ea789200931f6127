"""evaluate.py's inputs: the current DATA_ROOT over the checkpoint's stored data folder, overrides that agree with
the checkpoint, random weights only when asked."""
import glob
import os

import pytest
import torch
from omegaconf import OmegaConf

from engine.config import ConfigError
from engine.evaluator import evaluate_checkpoint, merge_checkpoint_config
from engine.runner import run

TINY = ["data=synthetic", "data.train_size=32", "data.test_size=16", "data.image_size=8", "data.in_channels=1",
        "data.mean=[0.5]", "data.std=[0.25]", "model=lenet300_100", "trainer.epochs=1", "trainer.batch_size=16"]


def test_a_checkpoint_is_read_with_the_current_data_root(compose):
    cfg = compose([], config_name="evaluate")
    saved = OmegaConf.to_container(compose(["data.root=/old/machine/data"]), resolve=True)
    merged = merge_checkpoint_config(cfg, saved, data_overridden=False)
    assert merged.data.root == cfg.paths.data_root == os.environ["DATA_ROOT"]


def test_a_checkpoint_takes_agreeing_overrides_and_its_own_old_keys_and_names_a_conflict(compose):
    trained = compose(TINY)
    top1 = run(trained)["top1"]
    (final,) = glob.glob(os.path.join(trained.paths.output_dir, "**", "final.pt"), recursive=True)
    cfg = compose(TINY + [f"checkpoint={final}"], config_name="evaluate")
    assert evaluate_checkpoint(cfg, overridden=["model", "data", "checkpoint"])["top1"] == top1
    blob = torch.load(final, weights_only=True)
    blob["config"]["method"]["retired_key"] = 1        # stored by an older version of conf/method/baseline.yaml
    torch.save(blob, final)
    assert evaluate_checkpoint(cfg, overridden=["checkpoint"])["top1"] == top1
    conflict = r"model.name: checkpoint .*final.pt was trained with model.name='lenet300_100', not 'lenet5'"
    with pytest.raises(ConfigError, match=conflict):
        evaluate_checkpoint(compose(TINY + [f"checkpoint={final}", "model=lenet5"], config_name="evaluate"),
                            overridden=["model.name", "checkpoint"])


def test_random_weights_are_evaluated_only_when_asked(compose):
    with pytest.raises(ConfigError, match="allow_untrained=true"):
        evaluate_checkpoint(compose(TINY, config_name="evaluate"))
    metrics = evaluate_checkpoint(compose(TINY + ["allow_untrained=true"], config_name="evaluate"))
    assert metrics["extra"]["evaluated"] == "lenet300_100 pretrained=False" and 0.0 <= metrics["top1"] <= 100.0

"""Re-evaluate a checkpoint (or local pretrained weights), recompute complexity, write a results row.

    python evaluate.py checkpoint=outputs/<run>/final.pt
    python evaluate.py model=resnet20 model.pretrained=true data=cifar10_jpeg
    python evaluate.py report            # regenerate results/reports/ from the CSVs and references
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    from engine.evaluator import evaluate_checkpoint

    overrides = HydraConfig.get().overrides.task
    data_overridden = any(o.split("=")[0].lstrip("+~") in ("data", "experiment") for o in overrides)
    return float(evaluate_checkpoint(cfg, data_overridden=data_overridden)["top1"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from engine.report import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    main()

"""Re-evaluate a checkpoint (or local pretrained weights), recompute complexity, write a results row.

    python evaluate.py checkpoint=outputs/<run>/final.pt
    python evaluate.py model=resnet20 model.pretrained=true data=cifar10_jpeg
    python evaluate.py report            # regenerate results/reports/ from the CSVs and references
    python evaluate.py experiment=xgradcam/cifar10_jpeg_resnet20   # analysis methods (family: analysis)
    python evaluate.py method=unit_ablation checkpoint=outputs/<run>/final.pt data=mnist

A bad input ends with one line ``error: <message>`` and exit code 2 (``HYDRA_FULL_ERROR=1`` shows the traceback).
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from engine.errors import exits_on_bad_input


def analyse(cfg: DictConfig) -> float:
    """Methods of family ``analysis`` analyse a model (pretrained, or ``checkpoint=``) instead of evaluating it."""
    from omegaconf import open_dict

    from engine.analysis import print_metrics, run_analysis

    with open_dict(cfg):
        if cfg.get("checkpoint"):
            cfg.method.checkpoint = cfg.checkpoint
    metrics = run_analysis(cfg)
    print_metrics(metrics)
    return float(metrics.get("top1", 0.0))


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exits_on_bad_input
def main(cfg: DictConfig) -> float:
    from engine.evaluator import evaluate_checkpoint

    if cfg.method.get("family") == "analysis":
        return analyse(cfg)

    overridden = [o.split("=")[0].lstrip("+~") for o in HydraConfig.get().overrides.task]
    return float(evaluate_checkpoint(cfg, overridden)["top1"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from engine.report import main as report_main

        sys.exit(report_main(sys.argv[2:]))
    main()

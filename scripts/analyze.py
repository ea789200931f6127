"""Run an analysis method (family ``analysis``: xgradcam, unit_ablation) on a composed config.

    python scripts/analyze.py experiment=xgradcam/cifar10_jpeg_resnet20
    python scripts/analyze.py method=unit_ablation model=resnet20 model.pretrained=true data=cifar10_jpeg
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.analysis import cli  # noqa: E402

if __name__ == "__main__":
    cli()

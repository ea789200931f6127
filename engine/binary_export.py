"""A run's checkpoint as a binary export (the file format: methods/common/binary_export.py), and back.

    python -m engine.binary_export <checkpoint> <out>     # final.pt of a run -> <out> (.crbin)

The export's header holds the run config and the method's ``structure_state()`` (a structure chosen during training:
NASB's searched genotype); ``load_export`` rebuilds the model from both and loads the packed weights into it.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn as nn
from omegaconf import OmegaConf

from engine import checkpoint
from engine.runner import transformed_model
from methods import Method
from methods.common.binary_export import export_binary, load_binary_export, read_export


def rebuild_model(config: dict, method_state: dict | None = None) -> tuple[nn.Module, Method]:
    """(model, method): backbone + method transform of a run config (as engine/runner.py builds it), untrained, on
    the CPU; with the method's saved state where its structure was chosen during training."""
    cfg = OmegaConf.create(config)
    return transformed_model(cfg, int(cfg.data.num_classes), int(cfg.data.in_channels), int(cfg.data.image_size),
                             torch.device("cpu"), method_state)


def export_checkpoint(checkpoint_path: str, out: str) -> dict:
    """Export a run's ``final.pt`` (model weights + the run config); returns ``export_binary``'s byte accounting."""
    blob = checkpoint.load(checkpoint_path)
    if "config" not in blob:
        raise ValueError(f"{checkpoint_path} has no run config; export a run's final.pt")
    model, method = rebuild_model(blob["config"], blob.get("method"))   # e.g. NASB's searched genotype
    checkpoint.load_weights(model, blob, checkpoint_path, str((blob["config"].get("model") or {}).get("name")))
    model.eval()
    return export_binary(model, out, config=blob["config"], method_structure=method.structure_state())


def load_export(path: str, packed: bool | None = None) -> nn.Module:
    """An export loaded into the model rebuilt from its header's run config (``packed``: as ``load_binary_export``)."""
    header, _ = read_export(path)
    if not header.get("config"):
        raise ValueError(f"{path} holds no run config; load it into the model with "
                         f"methods.common.binary_export.load_binary_export(path, model)")
    model, _ = rebuild_model(header["config"], header.get("method_structure") or None)
    return load_binary_export(path, model, packed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.binary_export", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a run's final.pt")
    ap.add_argument("out", help="output file (e.g. model.crbin)")
    args = ap.parse_args(argv)
    acct = export_checkpoint(args.checkpoint, args.out)
    print(json.dumps(acct, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What DCFF's fusion does to inherited (pretrained) weights, before any training: test accuracy of the fused
model at several temperatures, against the dense model and the L1-kept compact model at the same widths.

    python scripts/dcff_fusion_probe.py experiment=dcff/cifar10_jpeg_resnet56_reduced [+probe.test_images=2000]

Writes results/measurements/dcff_fusion_probe.csv (one row per model/temperature). At T = 1 the inter-similarity
rows are near uniform, so every fused filter is close to the mean filter of its layer; as T grows P becomes
one-hot and the fused model equals the DCFF-selected channels of the dense model.
"""
import csv
import os
import sys

import hydra
import torch
from omegaconf import OmegaConf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import build_data  # noqa: E402
from engine.evaluation import evaluate  # noqa: E402
from engine.runner import apply_pretrained_normalization, build_backbone, transformed_model  # noqa: E402
from methods.common.channel_pruning import channel_groups, counts_from_rates, filter_l1, prune_channels, top_k  # noqa: E402
from methods.dcff import fused_layers  # noqa: E402

OUT = "results/measurements/dcff_fusion_probe.csv"
TEMPERATURES = (1.0, 10.0, 100.0, 1000.0, 10000.0)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg) -> None:
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    apply_pretrained_normalization(cfg)
    n_test = int(OmegaConf.select(cfg, "probe.test_images", default=2000))
    cfg.data.test_subset = n_test
    data = build_data(cfg.data, batch_size=256, device="cpu", eval_batch_size=256)
    dense = build_backbone(cfg, data.num_classes, data.in_channels, data.image_size).eval()
    rows = [{"model": "dense", "temperature": "", "top1": evaluate(dense, data.test, "cpu")["top1"]}]

    spec = channel_groups(dense)
    counts = counts_from_rates(dense, cfg.method.cprate, spec)
    l1 = prune_channels(dense, {n: top_k(filter_l1(dense, spec[n]), k).tolist() for n, k in counts.items()}, spec)
    rows.append({"model": "l1_compact", "temperature": "", "top1": evaluate(l1.eval(), data.test, "cpu")["top1"]})

    fused, method = transformed_model(cfg, data.num_classes, data.in_channels, data.image_size, torch.device("cpu"),
                                      train_loader=data.train, test_loader=data.test, seed=0)
    fused.eval()
    for t in TEMPERATURES:
        for m in fused_layers(fused).values():
            m.refresh(t)
        rows.append({"model": f"dcff_fused_init_{method.init}", "temperature": t,
                     "top1": evaluate(fused, data.test, "cpu")["top1"]})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["experiment", "model", "temperature", "top1", "test_images"],
                                lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({"experiment": cfg.name, **r, "test_images": n_test})
            print(f"{r['model']:>24} T={r['temperature']!s:>8}  top1 {r['top1']:.2f}")


if __name__ == "__main__":
    main()

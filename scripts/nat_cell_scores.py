"""How a trained NAT super-net scores cells: the input cell, the input with one op type swapped for another, and
cells of the search's input sampler (what its weights were trained on), by the shared-weight accuracy NAT's
derivation uses (methods/nat.py shared_weight_accuracy, all nodes concatenated) on the run's derivation images.

    python scripts/nat_cell_scores.py experiment=nat/cifar10_jpeg_resblock_nat seed=0 \\
        +probe.checkpoint=outputs/<run>/stage0-search/trained.pt [+probe.uniform_cells=20]

The checkpoint is a search stage's (its ``model`` entry holds the super-net); the super-net, the input cell and the
derivation images are built by the method itself (methods/nat.py), as the run built them. Appends one row per cell to
results/measurements/nat_cell_scores.csv. It answers why an input cell scores low: a cell far below the uniform
cells' range is outside what the super-net was trained on, and the swap that lifts it names the reason
(docs/nat.md: the ResNet-block cell's null edges).
"""
import os
import statistics
import sys

import hydra
import torch
from omegaconf import OmegaConf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import build_data  # noqa: E402
from engine import checkpoint  # noqa: E402
from engine.results import append_measurements  # noqa: E402
from engine.runner import transformed_model  # noqa: E402
from methods.nat import sample_input_cell, shared_weight_accuracy  # noqa: E402
from models.nat_cells import full_concat  # noqa: E402

OUT = "results/measurements/nat_cell_scores.csv"
#: (op, replacement) swaps tried on every edge of the input cell that holds ``op`` (both cell types)
SWAPS = (("null", "skip_connect"), ("null", "conv_3x3"), ("conv_3x3", "sep_conv_3x3"), ("conv_3x3", "max_pool_3x3"),
         ("sep_conv_3x3", "max_pool_3x3"), ("skip_connect", "null"))
FIELDS = ["experiment", "seed", "checkpoint", "cell", "score", "heldout_images"]


def swap_op(edges, op: str, new: str) -> list:
    """``edges`` with every ``op`` replaced by ``new``."""
    return [[new if o == op else o, f, t] for o, f, t in edges]


def cells_to_score(genotype: dict, steps: int, n_uniform: int, seed: int,
                   with_null: bool = False) -> list[tuple[str, dict]]:
    """(label, cell) pairs: the input, each applicable swap, then ``n_uniform`` cells of the search's input sampler
    (labelled ``uniform i``, or ``uniform_null i`` when null is drawn too), all scored with every node concatenated."""
    full = full_concat(steps)

    def cell(normal, reduce):
        return {"normal": normal, "reduce": reduce, "normal_concat": full, "reduce_concat": full}

    out = [("input", cell(genotype["normal"], genotype["reduce"]))]
    present = {o for kind in ("normal", "reduce") for o, _, _ in genotype[kind]}
    for op, new in SWAPS:
        if op in present:
            out.append((f"input {op}->{new}", cell(swap_op(genotype["normal"], op, new),
                                                    swap_op(genotype["reduce"], op, new))))
    gen = torch.Generator().manual_seed(int(seed))
    sampler = "uniform_null" if with_null else "uniform"
    out += [(f"{sampler} {i}", sample_input_cell(steps, gen, with_null)) for i in range(n_uniform)]
    return out


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg) -> None:
    ckpt = OmegaConf.select(cfg, "probe.checkpoint")
    if not ckpt or not os.path.isfile(ckpt):
        raise SystemExit(f"error: +probe.checkpoint={ckpt!r} is not a file; give a NAT search stage's checkpoint "
                         f"(outputs/<run>/stage0-search/trained.pt)")
    seed = int(cfg.seed)
    data = build_data(cfg.data, batch_size=int(cfg.trainer.batch_size), device="cpu", seed=seed)
    supernet, method = transformed_model(cfg, data.num_classes, data.in_channels, data.image_size,
                                         torch.device("cpu"), train_loader=data.train, test_loader=data.test,
                                         seed=seed)
    supernet.load_state_dict(checkpoint.load(ckpt)["model"])
    heldout = method.derivation_loader(data.train, data.test, seed)
    with_null = cfg.method.get("search_inputs") == "uniform_null"
    n_uniform = int(OmegaConf.select(cfg, "probe.uniform_cells", default=20))
    rows = []
    for label, c in cells_to_score(method.target, len(method.target["normal"]) // 2, n_uniform, 123, with_null):
        score = shared_weight_accuracy(supernet, heldout, c, "cpu")
        rows.append({"experiment": cfg.name, "seed": seed, "checkpoint": ckpt, "cell": label, "score": round(score, 5),
                     "heldout_images": len(heldout.labels)})
        if label.startswith("input"):
            print(f"{label:>32}  {score:.3f}")
    uni = [r["score"] for r in rows if not r["cell"].startswith("input")]
    if len(uni) > 1:
        print(f"{len(uni)} {'uniform_null' if with_null else 'uniform'} cells: mean {statistics.mean(uni):.3f} "
              f"sd {statistics.stdev(uni):.3f} range {min(uni):.3f}-{max(uni):.3f}")
    append_measurements(OUT, FIELDS, rows)


if __name__ == "__main__":
    main()

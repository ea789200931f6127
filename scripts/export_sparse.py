"""Write a masked run's effective weights (W * T, exact zeros) as a plain backbone state dict.

    python scripts/export_sparse.py outputs/mnist_lenet5/<run>/final.pt /tmp/dns_lenet5.pt

The result loads into the plain backbone (``trainer.init_checkpoint=...``); mask, DNS-statistics and INQ
buffers are dropped. INQ with ``method.keep_zeros=true`` turns the zeros back into frozen pruned entries.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine import checkpoint  # noqa: E402

MASK_BUFFERS = ("weight_mask", "bias_mask", "dns_stats", "dns_ready", "quant_mask", "quant_n1", "quant_bits")


def export(src: str, dst: str) -> dict:
    blob = checkpoint.load(src)
    state = checkpoint.unwrap_state_dict(blob)
    out = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf in MASK_BUFFERS:
            continue
        mask = state.get(f"{prefix}.{leaf}_mask") if leaf in ("weight", "bias") else None
        out[key] = value * mask if mask is not None else value
    # the run's data config travels along, so a run continuing from the export keeps its input normalisation
    data_config = blob["config"].get("data") if isinstance(blob, dict) and "config" in blob else None
    torch.save({"model": out, **({"data_config": data_config} if data_config else {})}, dst)
    nz = sum(int((v != 0).sum()) for k, v in out.items() if k.endswith((".weight", ".bias")))
    return {"tensors": len(out), "nonzero_weights_biases": nz}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(export(sys.argv[1], sys.argv[2]))

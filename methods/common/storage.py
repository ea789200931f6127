"""Storage accounting for pruned and/or quantized conv+fc layers, as weight-compression papers count it.

- Dense parameters: weights + biases of conv and fc layers (dns.md "Counting"); compression ratio =
  total / nonzero (431,080 / 3,993 = 107.96x for the released DNS LeNet-5).
- Bits per weight: each layer's declared ``weight_bits`` (INQ: b bits, 1 of them flagging zero).
- Dense quantized size: every weight at ``weight_bits``, biases at 32 (``dense_storage_ratio``).
- Sparse + quantized size: every stored entry carries its value (``weight_bits`` for weights, 32 bits for
  biases, which INQ leaves in floating point) plus a relative index of ``index_bits`` bits, the
  compressed-sparse convention of Deep Compression (Han et al. 2016): the gap from the previous stored
  entry is written in ``index_bits`` bits, and a gap larger than ``2**index_bits`` costs filler (zero)
  entries. The INQ paper prints ratios for DNS+INQ (Table 5) without stating its index convention, so
  this number is ours, with the convention recorded beside it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from methods.common.masks import MASKABLE

DEFAULT_INDEX_BITS = {"conv": 8, "fc": 5}   # Deep Compression's AlexNet choice: 8-bit conv, 5-bit fc indices


def _effective(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = module.weight
    if getattr(module, "weight_mask", None) is not None:
        w = w * module.weight_mask
    b = module.bias
    if b is not None and getattr(module, "bias_mask", None) is not None:
        b = b * module.bias_mask
    return w.detach(), None if b is None else b.detach()


def sparse_entries(values: torch.Tensor, index_bits: int) -> int:
    """Stored entries (nonzeros + fillers) of a flattened tensor under ``index_bits``-bit relative indices."""
    pos = torch.nonzero(values.flatten() != 0).flatten()
    if pos.numel() == 0:
        return 0
    gaps = torch.diff(pos, prepend=pos.new_tensor([-1]))      # >= 1
    span = 2 ** index_bits
    fillers = torch.div(gaps - 1, span, rounding_mode="floor")   # gap g needs ceil(g/span) - 1 fillers
    return int(pos.numel() + fillers.sum())


@torch.no_grad()
def storage_report(model: nn.Module, index_bits: dict | int | None = None) -> dict:
    """Per-layer and total nonzeros, compression ratio, bits per weight and sparse+quantized size."""
    if index_bits is None:
        index_bits = DEFAULT_INDEX_BITS
    if isinstance(index_bits, int):
        index_bits = {"conv": index_bits, "fc": index_bits}
    missing = {"conv", "fc"} - set(index_bits)
    if missing:
        raise KeyError(f"index_bits needs keys 'conv' and 'fc' (missing {sorted(missing)})")
    layers = {}
    total = nonzero = storage_bits = weight_count = 0
    weighted_bits = dense_bits = 0
    for name, m in model.named_modules():
        if not isinstance(m, MASKABLE):
            continue
        w, b = _effective(m)
        kind = "fc" if isinstance(m, nn.Linear) else "conv"
        k = int(index_bits[kind])
        wbits = int(getattr(m, "weight_bits", 32))
        nz = int((w != 0).sum()) + (int((b != 0).sum()) if b is not None else 0)
        n = w.numel() + (b.numel() if b is not None else 0)
        bits = sparse_entries(w, k) * (wbits + k) + (sparse_entries(b, k) * (32 + k) if b is not None else 0)
        layers[name] = {"params": n, "nonzero": nz, "remaining_pct": 100.0 * nz / n, "weight_bits": wbits,
                        "storage_bits": bits}
        total += n
        nonzero += nz
        storage_bits += bits
        weight_count += w.numel()
        weighted_bits += w.numel() * wbits
        dense_bits += w.numel() * wbits + (b.numel() * 32 if b is not None else 0)
    return {
        "params_conv_fc": total,
        "nonzero_conv_fc": nonzero,
        "remaining_pct": 100.0 * nonzero / total if total else 0.0,
        "compression_ratio": total / nonzero if nonzero else float("inf"),
        "bits_per_weight": weighted_bits / weight_count if weight_count else 0.0,
        "sparse_storage_bits": storage_bits,
        "sparse_storage_ratio": 32 * total / storage_bits if storage_bits else float("inf"),
        "dense_storage_bits": dense_bits,                       # every weight at its bits, no index
        "dense_storage_ratio": 32 * total / dense_bits if dense_bits else float("inf"),
        "storage_convention": f"relative-index CSR (Han et al. 2016): value bits + index bits "
                              f"(conv {index_bits['conv']}, fc {index_bits['fc']}) per stored entry, "
                              f"fillers for gaps > 2^index_bits; biases 32-bit; dense baseline 32 bits/param",
        "layers": layers,
    }


def storage_metrics(model: nn.Module, index_bits: dict | int | None = None) -> dict:
    """``storage_report`` flattened for a results row: totals, plus nonzeros and remaining % per layer
    (``remaining_pct_<layer>`` columns are what the DNS reference entries compare)."""
    rep = storage_report(model, index_bits)
    out = {k: v for k, v in rep.items() if k != "layers"}
    out["remaining_pct_by_layer"] = {n: round(v["remaining_pct"], 4) for n, v in rep["layers"].items()}
    out["nonzero_by_layer"] = {n: v["nonzero"] for n, v in rep["layers"].items()}
    out.update({f"remaining_pct_{n.replace('.', '_')}": round(v["remaining_pct"], 4) for n, v in rep["layers"].items()})
    return out

"""Complexity accounting from the model itself: params, MACs, FLOPs, BOPs, OPs, size, sparsity.

Counted layers: every ``nn.Conv1d/2d/3d`` and ``nn.Linear`` (subclasses included), measured by forward
hooks at the given input size. Conventions (recorded in ``COUNTER``):

- MACs: multiply-accumulates of counted layers; BN, bias adds, activations and pooling are not counted.
- Each layer declares ``weight_bits`` and ``act_bits`` (bits of its input activations), default 32.
  A layer with both at 32 is floating point: it adds its MACs to ``fp_macs``. Any other layer adds
  ``MACs * weight_bits * act_bits`` to BOPs (so a 1-bit x 1-bit layer adds its MACs).
- FLOPs = 2 * fp_macs. OPs = fp_macs + BOPs / 64: the binary-network literature's OPs (Bi-Real, ReActNet,
  IR-Net, ...), which count the floating-point part as MACs ("FLOPs" in those papers) and 64 binary ops per
  word; Bi-Real ResNet-18 at 224 px: BOPs 1.68e9, FP MACs 1.39e8, OPs 1.63e8. For a model without binary
  layers OPs = MACs. (Counter v1 used 2 * fp_macs + BOPs / 64, twice the literature's FP part.)
- Params: all parameters. Size in bits: weights of counted layers at ``weight_bits``; everything else
  (biases, BN, other parameters) at 32.
- Sparsity: share of zero entries in counted layers' effective weights (``weight * weight_mask`` where a
  layer holds a ``weight_mask`` buffer, likewise ``bias_mask``); ``nonzero_params`` counts nonzero weights and biases of counted
  layers plus all other parameters.
Paper-specific conventions (thop's BN terms, "FLOPs" meaning MACs) are applied on top of these raw
numbers where references are compared, never by changing this counter.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

COUNTER = "compress-repro/hooks-v2: conv+linear MACs; bn/bias/act/pool uncounted; bops=macs*wb*ab; ops=fp_macs+bops/64"
OPS_CONVENTION = "binary literature: OPs = FP MACs + BOPs/64 (Bi-Real / ReActNet); FLOPs = 2 * FP MACs"
COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class LayerCost:
    name: str
    kind: str
    shape: str
    params: int
    weight_bits: int
    act_bits: int
    macs: int
    bops: int
    nonzero: int
    out_shape: str


@dataclass
class Complexity:
    params: int
    macs: int
    fp_macs: int
    flops: int
    bops: int
    ops: float
    size_bits: int
    sparsity: float
    nonzero_params: int
    input_res: str
    counter: str = COUNTER
    layers: list[LayerCost] = field(default_factory=list)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("layers")
        out["counted_layers"] = len(self.layers)
        return out


def effective_weight(module: nn.Module) -> torch.Tensor:
    mask = getattr(module, "weight_mask", None)
    return module.weight if mask is None else module.weight * mask


def effective_bias(module: nn.Module) -> torch.Tensor | None:
    mask = getattr(module, "bias_mask", None)
    return module.bias if mask is None or module.bias is None else module.bias * mask


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * (output.numel() // output.shape[-1] // output.shape[0])
    kernel = 1
    for k in module.kernel_size:
        kernel *= k
    per_output = (module.in_channels // module.groups) * kernel
    return per_output * output.numel() // output.shape[0]


@torch.no_grad()
def measure(model: nn.Module, input_shape: tuple[int, ...]) -> Complexity:
    """Count ``model`` on one input of ``input_shape`` (C, H, W) — per image, batch 1."""
    costs: dict[nn.Module, LayerCost] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(module, inputs, output):
        wb, ab = int(getattr(module, "weight_bits", 32)), int(getattr(module, "act_bits", 32))
        macs = _layer_macs(module, output)
        weight = effective_weight(module)
        bias = effective_bias(module)
        nonzero = int((weight != 0).sum()) + (int((bias != 0).sum()) if bias is not None else 0)
        prev = costs.get(module)
        macs_total = macs + (prev.macs if prev else 0)   # a layer called twice counts twice
        costs[module] = LayerCost(
            name=names.get(module, "?"), kind=type(module).__name__, shape="x".join(map(str, module.weight.shape)),
            params=sum(p.numel() for p in module.parameters(recurse=False)), weight_bits=wb, act_bits=ab,
            macs=macs_total, bops=0 if (wb == 32 and ab == 32) else macs_total * wb * ab, nonzero=nonzero,
            out_shape="x".join(map(str, output.shape[1:])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COUNTED)]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    layers = list(costs.values())   # order of execution
    counted_ids = {id(m) for m in costs}
    params = sum(p.numel() for p in model.parameters())
    fp_macs = sum(c.macs for c in layers if c.weight_bits == 32 and c.act_bits == 32)
    bops = sum(c.bops for c in layers)
    size_bits = 0
    zeros, weights = 0, 0
    nonzero_params = 0
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if id(m) in counted_ids:
            wb = int(getattr(m, "weight_bits", 32))
            size_bits += m.weight.numel() * wb + sum(p.numel() * 32 for p in own if p is not m.weight)
            w = effective_weight(m)
            zeros += int((w == 0).sum())
            weights += w.numel()
            nonzero_params += costs[m].nonzero + sum(p.numel() for p in own if p is not m.weight and p is not m.bias)
        else:
            size_bits += sum(p.numel() * 32 for p in own)
            nonzero_params += sum(p.numel() for p in own)
    macs = sum(c.macs for c in layers)
    return Complexity(params=params, macs=macs, fp_macs=fp_macs, flops=2 * fp_macs, bops=bops,
                      ops=fp_macs + bops / 64, size_bits=size_bits,
                      sparsity=zeros / weights if weights else 0.0, nonzero_params=nonzero_params,
                      input_res="x".join(map(str, input_shape)), layers=layers)


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def format_table(c: Complexity) -> str:
    """The per-layer table printed at run start (bits, params, MACs, BOPs, nonzero share)."""
    head = f"{'layer':<32} {'type':<14} {'weight':<14} {'out':<12} {'w/a bits':>8} {'params':>9} {'MACs':>9} {'BOPs':>9} {'nz%':>6}"
    lines = [head, "-" * len(head)]
    for l in c.layers:
        nz = 100.0 * l.nonzero / l.params if l.params else 0.0
        lines.append(f"{l.name[:32]:<32} {l.kind[:14]:<14} {l.shape[:14]:<14} {l.out_shape[:12]:<12} "
                     f"{l.weight_bits:>3}/{l.act_bits:<4} {_fmt(l.params):>9} {_fmt(l.macs):>9} {_fmt(l.bops):>9} {nz:>6.1f}")
    lines.append("-" * len(head))
    lines.append(f"params {_fmt(c.params)} | MACs {_fmt(c.macs)} (fp {_fmt(c.fp_macs)}) | FLOPs {_fmt(c.flops)} | "
                 f"BOPs {_fmt(c.bops)} | OPs {_fmt(c.ops)} | size {c.size_bits / 8 / 2**20:.3f} MiB | "
                 f"sparsity {100 * c.sparsity:.2f}% | input {c.input_res}")
    lines.append(f"counter: {c.counter}")
    if c.bops:
        lines.append(f"OPs convention: {OPS_CONVENTION}")
    return "\n".join(lines)

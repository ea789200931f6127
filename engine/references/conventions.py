"""Counting conventions: our raw counter (``core/complexity.py``) plus a paper's declared convention (thop
0.0.31 / thop 0.1.1 / ptflops / own) as forward hooks over BN, bias, activation and pooling layers; the paper's
rounding when a recount is called exact."""
from __future__ import annotations

from engine.references.schema import COUNTERS, PARAMS_CONVENTIONS, Conventions, ReferenceError

def convention_terms(model, input_shape: tuple[int, ...], counter: str, bn_counted: bool | None = None) -> dict:
    """Element operations a counter adds on top of conv/linear MACs, measured with forward hooks.

    Rules (per counter, from its source, module types only; functional calls such as ``F.relu`` are not
    seen by hooks, as in the counters themselves):

    - ``thop-0.0.31``: +1 per conv output element when the conv has a bias; BatchNorm 2 per input element;
      AvgPool 1 per output element; AdaptiveAvgPool (kernel + 1) per output element; ReLU, MaxPool 0.
    - ``thop-0.1.1``: conv bias not counted; BatchNorm 2 per input element, ×2 when affine; pooling as 0.0.31.
    - ``ptflops``: +1 per conv output element with bias; BatchNorm 1 per input element, ×2 when affine;
      ReLU-family 1 per output element; every pooling 1 per input element; Linear bias 1 per output element
      (ptflops' module hooks: equal to ptflops 0.7.5 with ``count_functional=False``).
    - ``own`` / ``unknown``: nothing added (conv + linear MACs only).

    ``bn_counted=False`` drops the BatchNorm term, ``True`` keeps it (``None``: the counter's rule).
    Returns {"bias", "bn", "act", "pool", "total"} in operations per image.
    """
    import torch
    import torch.nn as nn

    terms = {"bias": 0, "bn": 0, "act": 0, "pool": 0}
    if counter not in COUNTERS:
        raise ReferenceError(f"counter {counter!r}: unknown; allowed: {list(COUNTERS)}")
    if counter in ("own", "unknown"):
        return {**terms, "total": 0}
    acts = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU)
    pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
             nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
             nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)

    def hook(m, inputs, out):
        x = inputs[0]
        if isinstance(m, nn.modules.conv._ConvNd):
            if m.bias is not None and counter in ("thop-0.0.31", "ptflops"):
                terms["bias"] += out.numel()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            per = {"thop-0.0.31": 2, "thop-0.1.1": 4 if m.affine else 2, "ptflops": 2 if m.affine else 1}[counter]
            terms["bn"] += per * x.numel()
        elif isinstance(m, nn.Linear):
            if m.bias is not None and counter == "ptflops":
                terms["bias"] += out.numel()
        elif isinstance(m, acts):
            if counter == "ptflops" or (counter.startswith("thop") and isinstance(m, nn.LeakyReLU)):
                terms["act"] += out.numel()
        elif isinstance(m, pools):
            if counter == "ptflops":
                terms["pool"] += x.numel()
            elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
                terms["pool"] += out.numel()
            elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
                kernel = 1.0
                for i_dim, o_dim in zip(x.shape[2:], out.shape[2:]):
                    kernel *= i_dim / o_dim if counter == "thop-0.1.1" else i_dim // o_dim
                terms["pool"] += int((kernel + 1) * out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if bn_counted is False:
        terms["bn"] = 0
    terms["total"] = sum(terms.values())
    return terms


def convention_params(model, params: str) -> int:
    """Parameter count under a paper's ``conventions.params``."""
    import torch.nn as nn
    if params == "all":
        return sum(p.numel() for p in model.parameters())
    counted = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    total = sum(m.weight.numel() for m in counted)
    if params == "conv_fc_weights_biases":
        total += sum(m.bias.numel() for m in counted if m.bias is not None)
    elif params != "conv_fc_weights":
        raise ReferenceError(f"conventions.params {params!r}: unknown; allowed: {list(PARAMS_CONVENTIONS)}")
    return total


def convention_counts(model, input_shape: tuple[int, ...], conv: Conventions) -> dict:
    """Complexity of ``model`` the way the paper counts it, built on ``core.complexity.measure``.

    Returns ``params``, ``macs`` (conv/linear MACs + the counter's element ops), ``flops`` (``macs`` or
    ``2·macs`` per ``conventions.flops``; None for ``none``), ``raw_macs`` and the added ``terms``.
    """
    from core.complexity import measure
    raw = measure(model, tuple(input_shape))
    terms = convention_terms(model, tuple(input_shape), conv.counter, conv.bn_counted)
    macs = raw.macs + terms["total"]
    flops = {"macs": macs, "2macs": 2 * macs, "none": None}[conv.flops]
    return {"params": convention_params(model, conv.params), "macs": macs, "flops": flops,
            "raw_macs": raw.macs, "terms": terms, "bops": raw.bops, "ops": raw.ops, "size_bits": raw.size_bits}


def rounding_half_unit(value: float) -> float:
    """Half a unit of the last printed digit of ``value`` (314.59 -> 0.005; 108 -> 0.5)."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        return 0.0
    decimals = len(text.split(".")[1].rstrip("0")) if "." in text else 0
    return 0.5 * 10.0 ** (-decimals)


def exact_status(reported: float, ours: float, rel_tol: float = 0.01) -> str:
    """'exact' within the paper's rounding, 'within 1%' otherwise if close, else 'mismatch' (in ref units)."""
    if abs(ours - reported) <= rounding_half_unit(reported) + 1e-12 * max(1.0, abs(reported)):
        return "exact"
    if abs(ours - reported) <= rel_tol * abs(reported):
        return "within 1%"
    return "mismatch"

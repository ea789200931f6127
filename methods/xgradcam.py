"""XGrad-CAM (Fu et al., "Axiom-based Grad-CAM", BMVC 2020, arXiv 2008.02312) with its baselines
Grad-CAM and Grad-CAM++, on any registered backbone and target layer, by hooks. Family ``analysis``:
it trains nothing; ``analyze`` scores a (pretrained or checkpointed) model, and optionally a
compressed copy of it beside the original, and ``report`` writes the rows, tables, grids and markdown
(``python scripts/analyze.py method=xgradcam ...`` runs both; docs/analysis.md).

Paper note: /work/shared/papers/xgradcam.md. Notation: A_k(i, j) is channel k of the target layer's
output, S_c the pre-softmax logit of class c (argmax by default, as in the official code).

Equations (each is a function below, named as in the note's "Algorithm" section):

- ``xgradcam_weights`` — XGrad-CAM weight (verified in the official code and both libraries):
      alpha_k^c = sum_ij [ A_k(i,j) / (sum_mn A_k(m,n) + eps) ] * dS_c/dA_k(i,j)
  eps = 1e-6 in the official code, 1e-7 in pytorch-grad-cam (``method.eps``).
- ``gradcam_weights`` — Grad-CAM weight: alpha_k^c = (1/Z) sum_ij dS_c/dA_k(i,j).
- ``gradcampp_weights`` — Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19 with the exponential
  score), in pytorch-grad-cam's form: a_ij = g^2 / (2 g^2 + sum_mn A * g^3 + 1e-6) where g != 0,
  alpha_k = sum_ij relu(g_ij) * a_ij.
- ``cam_map`` — CAM family map M_c = sum_k alpha_k^c A_k (pre-ReLU); displayed map: ReLU,
  bilinear resize to the input, min-max scaling (``methods.common.cam.upsample_maps``).
- ``linear_part`` — the key identity (Eq. 5 per the official ``Proof_verify.py``): for a network that
  is piecewise linear after the target layer, S_c(A) = sum_k sum_ij dS_c/dA_k(i,j) A_k(i,j) + eps_b,
  eps_b = sum over downstream biases and eval-BN shifts of (dS_c/db) b, measured on its own from the gradients
  at the downstream modules' outputs (``methods.common.cam.downstream_bias_term``), so the identity is a test:
  ``identity_residual`` = |S_c - linear part - eps_b| / |S_c| is ~0 only where the network after the layer is
  piecewise linear.
- ``conservation_error`` — Conservation axiom S_c(A) = sum_ij M_c(i,j); per image
  |S_c - sum_ij M_c| / |S_c| on the pre-ReLU, pre-resize map (the note's proposed measure), plus the
  same against S_c - eps_b (the independently measured bias term removed): XGrad-CAM's map sums to the linear
  part, so this error is ~0 exactly where the identity holds, and grows where the network is not
  piecewise linear downstream of the layer.
- ``sensitivity_error`` — Sensitivity axiom S_c(A) - S_c(A with A_k := 0) = alpha_k sum_ij A_k(i,j);
  per image mean_k |drop_k - alpha_k sum_ij A_k| / |S_c|, and the Pearson correlation over k of the
  two sides (the note's "Small-scale signal" (b)).

The protocol (conservation / sensitivity as error measures, deletion/insertion as faithfulness) is
the note's proposal, not the paper's (whose numbers are unavailable). Deletion/insertion (RISE) are
library-style metrics and are labelled so in every output.
"""
from __future__ import annotations

import csv
import os

import numpy as np
import torch
import torch.nn as nn

from methods import Method, register_method
from methods.common.analysis import save_small_png
from methods.common.cam import (default_layer, deletion_insertion, downstream_bias_term, logits_with_each_channel_zeroed,
                                scores_and_taps, upsample_maps)

TARGETS = ("predicted", "label")


# ---- the weights --------------------------------------------------------------------------------
def xgradcam_weights(acts: torch.Tensor, grads: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """XGrad-CAM: alpha_k = sum_ij A_k(i,j) / (sum_mn A_k(m,n) + eps) * dS/dA_k(i,j). (B,K,H,W) -> (B,K)."""
    return (grads * acts).sum((2, 3)) / (acts.sum((2, 3)) + eps)


def gradcam_weights(acts: torch.Tensor, grads: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Grad-CAM: alpha_k = mean_ij dS/dA_k(i,j)."""
    return grads.mean((2, 3))


def gradcampp_weights(acts: torch.Tensor, grads: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Grad-CAM++ (closed form of Eq. 19 with exp(S)), as pytorch-grad-cam computes it."""
    g2 = grads ** 2
    g3 = g2 * grads
    a = g2 / (2 * g2 + acts.sum((2, 3), keepdim=True) * g3 + eps)
    a = torch.where(grads != 0, a, torch.zeros_like(a))
    return (grads.clamp_min(0) * a).sum((2, 3))


CAM_METHODS = {"xgradcam": xgradcam_weights, "gradcam": gradcam_weights, "gradcampp": gradcampp_weights}


def cam_weights(method: str, acts: torch.Tensor, grads: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    if method not in CAM_METHODS:
        raise ValueError(f"method.methods: unknown CAM method '{method}'; allowed: {sorted(CAM_METHODS)}")
    if method == "gradcampp":
        return gradcampp_weights(acts, grads)
    return CAM_METHODS[method](acts, grads, eps)


def cam_map(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """M_c = sum_k alpha_k A_k, pre-ReLU, at the layer's resolution: (B,K),(B,K,H,W) -> (B,H,W)."""
    return (weights[:, :, None, None] * acts).sum(1)


# ---- the axioms ---------------------------------------------------------------------------------
def linear_part(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum_k sum_ij dS/dA_k(i,j) * A_k(i,j) per image: S_c minus the downstream-bias term (Eq. 5)."""
    return (grads * acts).flatten(1).sum(1)


def conservation_error(score: torch.Tensor, cam: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """|ref - sum_ij M_c(i,j)| / |S_c| per image; ref = S_c (the axiom) unless given (e.g. the linear part)."""
    ref = score if reference is None else reference
    return (ref - cam.flatten(1).sum(1)).abs() / score.abs().clamp_min(1e-12)


def sensitivity_terms(weights: torch.Tensor, acts: torch.Tensor, drops: torch.Tensor) -> torch.Tensor:
    """drop_k - alpha_k sum_ij A_k(i,j), (B, K): the residual of the Sensitivity axiom per channel."""
    return drops - weights * acts.sum((2, 3))


def sensitivity_error(score: torch.Tensor, weights: torch.Tensor, acts: torch.Tensor,
                      drops: torch.Tensor) -> torch.Tensor:
    """mean_k |[S_c(A) - S_c(A with A_k := 0)] - alpha_k sum_ij A_k| / |S_c| per image."""
    return sensitivity_terms(weights, acts, drops).abs().mean(1) / score.abs().clamp_min(1e-12)


def _rowwise_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-30), torch.full_like(den, float("nan")))


# ---- scoring a model over images -------------------------------------------------------------------
@torch.no_grad()
def channel_drops(model: nn.Module, x: torch.Tensor, layer: str, cls: torch.Tensor, channels: int) -> torch.Tensor:
    """S_c(A) - S_c(A with A_k := 0) for every image and channel k, (B, K)."""
    base = model(x).gather(1, cls[:, None])
    zeroed = logits_with_each_channel_zeroed(model, x, layer, channels)
    return base - zeroed.gather(2, cls[:, None, None].expand(-1, channels, 1))[..., 0]


def cam_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str], methods: list[str],
               target: str = "predicted", eps: float = 1e-6, batch_size: int = 100, sensitivity_images: int = 100,
               faithfulness_images: int = 100, steps: int = 16, keep_maps: int = 100, seed: int = 0,
               chunk: int = 512) -> dict:
    """Per-image axiom and faithfulness scores of each CAM method at each layer, plus kept maps.

    Returns ``{"per_image": {(method, layer): {metric: tensor(n)}}, "maps": {(method, layer):
    tensor(keep, H, W)}, "cls", "correct", "top1"}``. Sensitivity runs on the first
    ``sensitivity_images`` images (K extra forwards each), deletion/insertion on the first
    ``faithfulness_images`` (2 * (steps + 1) forwards per map); a ``random`` map ranks the pixels at
    random as the faithfulness floor.
    """
    for m in methods:
        if m not in CAM_METHODS:
            raise ValueError(f"method.methods: unknown CAM method '{m}'; allowed: {sorted(CAM_METHODS)}")
    if target not in TARGETS:
        raise ValueError(f"method.target must be one of {TARGETS}, got {target!r}")
    model.eval()
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    per: dict = {}
    maps: dict = {}
    classes, correct = [], []

    def add(key, metric, values):
        per.setdefault(key, {}).setdefault(metric, []).append(values.detach().float().cpu())

    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits, cls, taps = scores_and_taps(model, xb, layers, yb if target == "label" else None)
        score = logits.gather(1, cls[:, None])[:, 0]
        classes.append(cls.cpu())
        correct.append((logits.argmax(1) == yb).cpu())
        n_sens = max(0, min(sensitivity_images - start, xb.shape[0]))
        n_faith = max(0, min(faithfulness_images - start, xb.shape[0]))
        n_keep = max(0, min(keep_maps - start, xb.shape[0]))
        if n_faith:
            rand = torch.rand(n_faith, h, w, generator=gen).to(x.device)
            res = deletion_insertion(model, xb[:n_faith], rand, cls[:n_faith], steps=steps, chunk=chunk)
            add(("random", "input"), "deletion_auc", res["deletion_auc"])
            add(("random", "input"), "insertion_auc", res["insertion_auc"])
        for layer in layers:
            acts, grads = taps.acts[layer], taps.grads[layer]
            if acts.dim() != 4:
                raise ValueError(f"layer '{layer}' output has shape {tuple(acts.shape)}; CAMs need (B, K, H, W)")
            lin = linear_part(acts, grads)
            bias_term = downstream_bias_term(model, xb, layer, cls)
            drops = channel_drops(model, xb[:n_sens], layer, cls[:n_sens], acts.shape[1]) if n_sens else None
            for method in methods:
                key = (method, layer)
                wts = cam_weights(method, acts, grads, eps)
                cam = cam_map(wts, acts)
                add(key, "score", score)
                add(key, "bias_term", bias_term)
                add(key, "identity_residual", (score - lin - bias_term).abs() / score.abs().clamp_min(1e-12))
                add(key, "conservation_error", conservation_error(score, cam))
                add(key, "conservation_error_linear", conservation_error(score, cam, reference=score - bias_term))
                add(key, "negative_act_share", (acts < 0).flatten(1).float().mean(1))
                if drops is not None:
                    add(key, "sensitivity_error", sensitivity_error(score[:n_sens], wts[:n_sens], acts[:n_sens], drops))
                    add(key, "sensitivity_corr",
                        _rowwise_pearson(drops, wts[:n_sens] * acts[:n_sens].sum((2, 3))))
                if n_faith or n_keep:
                    up = upsample_maps(cam[:max(n_faith, n_keep)], (h, w))
                    if n_keep:
                        maps.setdefault(key, []).append(up[:n_keep].cpu())
                    if n_faith:
                        res = deletion_insertion(model, xb[:n_faith], up[:n_faith], cls[:n_faith], steps=steps,
                                                 chunk=chunk)
                        add(key, "deletion_auc", res["deletion_auc"])
                        add(key, "insertion_auc", res["insertion_auc"])
    per = {k: {m: torch.cat(v) for m, v in d.items()} for k, d in per.items()}
    maps = {k: torch.cat(v) for k, v in maps.items()}
    correct = torch.cat(correct)
    return {"per_image": per, "maps": maps, "cls": torch.cat(classes), "correct": correct,
            "top1": 100.0 * correct.float().mean().item(), "n": n}


def summarize(per_image: dict) -> dict:
    """{(method, layer): {metric: mean, metric_std: std, metric_n: n}} (NaNs, e.g. constant rows, dropped)."""
    out = {}
    for key, d in per_image.items():
        row = {}
        for metric, v in d.items():
            v = v[torch.isfinite(v)]
            row[metric] = float(v.mean()) if v.numel() else float("nan")
            row[metric + "_std"] = float(v.std()) if v.numel() > 1 else 0.0
            row[metric + "_n"] = int(v.numel())
        out[key] = row
    return out


def map_agreement(maps_a: dict, maps_b: dict) -> dict:
    """Mean per-image Pearson correlation between two models' displayed maps, per (method, layer)."""
    out = {}
    for key in maps_a.keys() & maps_b.keys():
        a, b = maps_a[key].flatten(1), maps_b[key].flatten(1)
        r = _rowwise_pearson(a, b)
        r = r[torch.isfinite(r)]
        out[key] = float(r.mean()) if r.numel() else float("nan")
    return out


# ---- reporting ----------------------------------------------------------------------------------
REPORT_METRICS = ("conservation_error", "conservation_error_linear", "sensitivity_error", "sensitivity_corr",
                  "deletion_auc", "insertion_auc")


def _fmt(v) -> str:
    return "nan" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.4g}"


def write_scores_csv(path: str, tables: dict[str, dict]) -> None:
    """Flat CSV: one line per model variant x method x layer, mean and std of every metric."""
    metrics = sorted({m for t in tables.values() for row in t.values() for m in row})
    with open(path, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["model_variant", "method", "layer", *metrics])
        for variant, table in tables.items():
            for (method, layer), row in sorted(table.items()):
                wr.writerow([variant, method, layer, *[row.get(m, "") for m in metrics]])


def _display(img: torch.Tensor) -> np.ndarray:
    img = img.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def render_grid(path: str, x: torch.Tensor, columns: list[tuple[str, torch.Tensor]], n: int = 8,
                title: str = "") -> None:
    """PNG grid: one row per image; first column the input, then one overlay per (label, maps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, x.shape[0], *[m.shape[0] for _, m in columns])
    cols = 1 + len(columns)
    fig, axes = plt.subplots(n, cols, figsize=(0.95 * cols, 0.95 * n + 0.5), squeeze=False)
    for i in range(n):
        img = _display(x[i])
        gray = img.ndim == 2
        axes[i, 0].imshow(img, cmap="gray" if gray else None)
        for j, (_, maps) in enumerate(columns, start=1):
            axes[i, j].imshow(img, cmap="gray" if gray else None)
            axes[i, j].imshow(maps[i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for j, label in enumerate(["input"] + [c for c, _ in columns]):
        axes[0, j].set_title(label, fontsize=5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=6)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.05)
    save_small_png(fig, path)
    plt.close(fig)


def write_report(path: str, title: str, tables: dict[str, dict], top1: dict[str, float], agreement: dict,
                 layers: list[str], grids: list[str], n_images: int, cfg_summary: str) -> None:
    lines = [f"# {title}", "", cfg_summary, "",
             "Conservation/sensitivity errors are relative to |S_c| (lower is better); `_linear` compares with the "
             "score minus the downstream-bias term (Eq. 5); sensitivity_corr is the per-image Pearson correlation "
             "over channels between the true drop S_c(A)-S_c(A\\A_k) and alpha_k*sum A_k (higher is better). "
             "Deletion (lower better) / insertion (higher better) AUCs are RISE library-style metrics, not the "
             "paper's; `random` is the random-order floor. Numbers: mean over images (± std).", "",
             "| model | top-1 on these images (%) |", "|---|---|"]
    lines += [f"| {v} | {t:.2f} |" for v, t in top1.items()]
    lines += ["", "| model | method | layer | " + " | ".join(REPORT_METRICS) + " |",
              "|---|---|---|" + "---|" * len(REPORT_METRICS)]
    for variant, table in tables.items():
        for (method, layer), row in sorted(table.items()):
            cells = []
            for m in REPORT_METRICS:
                cells.append(f"{_fmt(row[m])} ± {_fmt(row[m + '_std'])}" if m in row else "")
            lines.append(f"| {variant} | {method} | {layer} | " + " | ".join(cells) + " |")
    if agreement:
        lines += ["", "Map agreement between the two models (mean per-image Pearson r of the displayed maps):", "",
                  "| method | layer | r |", "|---|---|---|"]
        lines += [f"| {m} | {l} | {_fmt(r)} |" for (m, l), r in sorted(agreement.items())]
    lines += ["", *[f"![{os.path.basename(g)}]({os.path.basename(g)})" for g in grids], ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ---- the analysis: config check, computation, report --------------------------------------------
def check_config(m) -> None:
    known = {"name", "family", "methods", "layers", "target", "eps", "num_images", "batch_size", "sensitivity_images",
             "faithfulness_images", "steps", "grid_images", "compare", "checkpoint", "output_dir", "seed", "chunk",
             "stages"}
    unknown = set(m.keys()) - known
    if unknown:
        raise ValueError(f"method (xgradcam): unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    for meth in m.methods:
        if meth not in CAM_METHODS:
            raise ValueError(f"method.methods: unknown CAM method '{meth}'; allowed: {sorted(CAM_METHODS)}")
    if m.target not in TARGETS:
        raise ValueError(f"method.target must be one of {TARGETS}, got {m.target!r}")


def analyze(cfg, variants: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """``cam_scores`` of every model variant (``fp`` first) at ``method.layers`` (default: ``fp``'s last feature
    map): ``{"layers": [...], "scores": {variant: cam_scores(...)}}``."""
    m = cfg.method
    layers = list(m.layers) if m.get("layers") else [default_layer(variants["fp"], x[:1])]
    kw = dict(layers=layers, methods=list(m.methods), target=str(m.target), eps=float(m.eps),
              batch_size=int(m.batch_size), sensitivity_images=int(m.sensitivity_images),
              faithfulness_images=int(m.faithfulness_images), steps=int(m.steps),
              keep_maps=max(int(m.grid_images), int(m.faithfulness_images)), seed=int(m.get("seed", 0) or 0),
              chunk=int(m.get("chunk", 512) or 512))
    return {"layers": layers, "scores": {variant: cam_scores(net, x, y, **kw) for variant, net in variants.items()}}


def report(cfg, variants: dict[str, nn.Module], results: dict, x: torch.Tensor, out_dir: str, write_row) -> dict:
    """One row per model variant x method x layer (``write_row``), ``cam_scores.csv``, PNG grids and markdown in
    ``out_dir``. Returns summary metrics (``top1`` and ``<method>/<layer>/<metric>`` means) of the ``fp`` model."""
    m = cfg.method
    layers, scores = results["layers"], results["scores"]
    tables = {}
    for variant, res in scores.items():
        table = summarize(res["per_image"])
        tables[variant] = table
        for (method, layer), row in sorted(table.items()):
            write_row(variants[variant], method=method,
                      variant=f"{layer}" + ("" if variant == "fp" else f"|{variant}"), top1=round(res["top1"], 4),
                      extra={"analysis": "xgradcam", "layer": layer, "model_variant": variant, "n_images": res["n"],
                             "target": str(m.target), "eps": float(m.eps), "steps": int(m.steps),
                             "faithfulness_metric_source": "RISE (library-style, not the paper's)", **row})
    write_scores_csv(os.path.join(out_dir, "cam_scores.csv"), tables)

    compressed = [v for v in scores if v != "fp"]
    agreement = map_agreement(scores["fp"]["maps"], scores[compressed[0]]["maps"]) if compressed else {}
    grids = []
    for layer in layers:
        cols = []
        for meth in m.methods:
            for variant, res in scores.items():
                cols.append((f"{meth} {variant}", res["maps"][(meth, layer)]))
        path = os.path.join(out_dir, f"cam_grid_{layer.replace('.', '_')}.png")
        render_grid(path, x.cpu(), cols, n=int(m.grid_images), title=f"{cfg.model.name} {layer}")
        grids.append(path)
    top1 = {v: r["top1"] for v, r in scores.items()}
    given = dict(m.compare) if m.get("compare") else "given"
    summary = (f"Model `{cfg.model.name}` on {x.shape[0]} test images of `{cfg.data.name}` (spread evenly over the "
               f"split); layers {layers}; target class: {m.target}; sensitivity on "
               f"{min(int(m.sensitivity_images), x.shape[0])} images, deletion/insertion on "
               f"{min(int(m.faithfulness_images), x.shape[0])} images with {int(m.steps)} steps."
               + (f" Compressed copy: `{compressed[0]}` ({given})." if compressed else ""))
    write_report(os.path.join(out_dir, "xgradcam.md"), f"XGrad-CAM analysis: {os.path.basename(out_dir)}", tables,
                 top1, agreement, layers, grids, x.shape[0], summary)
    metrics = {"top1": top1["fp"]}
    for (method, layer), row in tables["fp"].items():
        for k in REPORT_METRICS:
            if k in row:
                metrics[f"{method}/{layer}/{k}"] = row[k]
    return metrics


@register_method("xgradcam")
class XGradCAM(Method):
    """``method=xgradcam``: analysis only (trains nothing); ``python scripts/analyze.py method=xgradcam ...``."""

    family = "analysis"

    def stages(self):
        raise ValueError("method=xgradcam is an analysis method (family 'analysis') and trains nothing: run "
                         "python scripts/analyze.py method=xgradcam ... (or python evaluate.py method=xgradcam ...), "
                         "not train.py")

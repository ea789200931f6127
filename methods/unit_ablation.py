"""Unit ablation (Zhou, Sun, Bau, Torralba, "Revisiting the Importance of Individual Units in CNNs
via Ablation", arXiv 1806.02891, 2018). Family ``analysis``: trains nothing.

Paper note: /work/shared/papers/unit_ablation.md (the protocol below is the note's reconstruction,
marked unverified there; only the qualitative findings of the abstract are verified).

For a target layer L with units (channels) u = 1..U and evaluation images with labels:

- ablation: unit u's output at L is forced to 0 by a forward hook (``methods.common.cam.channel_mask``);
  in BN nets zeroing the conv weights would not zero the unit (note, Recipe "Caution").
- ``accuracy_drops``: Delta_{u,k} = acc_k(full) - acc_k(u ablated) (top-1, class k's images), and the
  overall Delta_u = acc(full) - acc(u ablated), in percentage points.
- ``class_selectivity`` (Morcos et al. 2018 index): CSI_u = (mu_max - mu_-max) / (mu_max + mu_-max),
  mu_k = mean over class-k images of the unit's spatially averaged activation, mu_max = max_k mu_k,
  mu_-max = mean of the other mu_k. In [0, 1] for non-negative activations.
- ``class_correlation``: corr_{u,k} = Pearson over images between the unit's activation and the softmax
  probability of class k; the unit attribute is max_k corr_{u,k}.
- ``weight_l1``: sum |W| of the unit's incoming filter and of its outgoing weights (the paper's choice
  is unverified, so both).
- ``correlations``: across units, Pearson and Spearman (with a bootstrap CI) of every attribute with
  Delta_u (overall) and max_k Delta_{u,k} (class-specific), plus corr_{u,k} vs Delta_{u,k} over pairs.

The abstract's findings (verified, qualitative): ablating one unit barely changes overall accuracy but
can badly hurt specific classes; class selectivity predicts the overall drop poorly, and class-specific
drops well (together with other attributes).
"""
from __future__ import annotations

import csv
import os

import numpy as np
import torch
import torch.nn as nn

from methods import Method, register_method
from methods.common.analysis import bootstrap_ci, pearson, save_small_png, spearman
from methods.common.cam import LayerTaps, channel_mask, default_layer, get_module, logits_with_each_channel_zeroed

ATTRIBUTES = ("class_selectivity", "class_correlation", "weight_l1_in", "weight_l1_out", "mean_activation")
TARGETS = ("overall_drop", "max_class_drop", "selective_class_drop", "correlated_class_drop")


# ---- activations and ablations ---------------------------------------------------------------------
@torch.no_grad()
def unit_activations(model: nn.Module, x: torch.Tensor, layer: str, batch_size: int = 250):
    """(spatially averaged unit activations (N, U), logits (N, C)) of the un-ablated model."""
    acts, logits = [], []
    with LayerTaps(model, [layer], grads=False) as taps:
        for i in range(0, x.shape[0], batch_size):
            logits.append(model(x[i:i + batch_size]))
            a = taps.acts[layer]
            acts.append(a.flatten(2).mean(2) if a.dim() > 2 else a)
    return torch.cat(acts), torch.cat(logits)


@torch.no_grad()
def ablated_predictions(model: nn.Module, x: torch.Tensor, layer: str, units: int,
                        batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions (N,) of the intact model, predictions (N, U) with unit u zeroed, for every u)."""
    base, abl = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        with channel_mask(model, layer, None):
            base.append(model(xb).argmax(1))
        abl.append(logits_with_each_channel_zeroed(model, xb, layer, units).argmax(2))
    return torch.cat(base), torch.cat(abl)


@torch.no_grad()
def masked_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str, mask: torch.Tensor | None,
                    batch_size: int = 250) -> float:
    """Top-1 (%) with ``layer``'s output multiplied by ``mask`` (K,) (None = no hook)."""
    correct = 0
    with channel_mask(model, layer, mask):
        for i in range(0, x.shape[0], batch_size):
            correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / x.shape[0]


def per_class_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Top-1 (%) per class; ``pred`` (N,) or (N, U) -> (C,) or (U, C). Classes with no image give NaN."""
    p = pred if pred.dim() == 2 else pred[:, None]
    hit = (p == y[:, None]).double()                                  # (N, U)
    onehot = torch.nn.functional.one_hot(y, num_classes).double()     # (N, C)
    counts = onehot.sum(0)
    acc = 100.0 * (hit.T @ onehot) / counts.clamp_min(1)
    acc[:, counts == 0] = float("nan")
    return acc if pred.dim() == 2 else acc[0]


def accuracy_drops(base_pred: torch.Tensor, abl_pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """Delta_u (U,) overall and Delta_{u,k} (U, C) per class, in percentage points."""
    base_acc = 100.0 * (base_pred == y).double().mean()
    abl_acc = 100.0 * (abl_pred == y[:, None]).double().mean(0)
    base_k = per_class_accuracy(base_pred, y, num_classes)
    abl_k = per_class_accuracy(abl_pred, y, num_classes)
    return {"base_top1": float(base_acc), "base_class_acc": base_k, "overall_drop": base_acc - abl_acc,
            "class_drop": base_k[None, :] - abl_k}


# ---- unit attributes ---------------------------------------------------------------------------
def class_means(acts: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """mu_{k,u}: mean activation of unit u over class-k images, (C, U)."""
    onehot = torch.nn.functional.one_hot(y, num_classes).to(acts.dtype)
    return (onehot.T @ acts) / onehot.sum(0).clamp_min(1)[:, None]


def class_selectivity(acts: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSI_u = (mu_max - mu_-max) / (mu_max + mu_-max) and the argmax class, per unit (Morcos et al.)."""
    mu = class_means(acts, y, num_classes)                            # (C, U)
    mu_max, k_max = mu.max(0)
    mu_rest = (mu.sum(0) - mu_max) / (num_classes - 1)
    den = mu_max + mu_rest
    csi = torch.where(den != 0, (mu_max - mu_rest) / torch.where(den != 0, den, torch.ones_like(den)),
                      torch.full_like(den, float("nan")))
    return csi, k_max


def class_correlation(acts: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """corr_{u,k}: Pearson over images between unit u's activation and class k's softmax prob, (U, C)."""
    a = acts - acts.mean(0)
    p = probs - probs.mean(0)
    den = a.square().sum(0).sqrt()[:, None] * p.square().sum(0).sqrt()[None, :]
    num = a.T @ p
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.full_like(num, float("nan")))


def _weighted(modules):
    return [(n, m) for n, m in modules if isinstance(m, (nn.Conv2d, nn.Linear))]


def incoming_layer(model: nn.Module, layer: str, units: int) -> str | None:
    """The conv/linear whose output channels are the units: the layer itself, else the last one inside
    it with ``units`` outputs, else the last one before it (in module order) with ``units`` outputs."""
    mods = list(model.named_modules())
    target = get_module(model, layer)
    if isinstance(target, (nn.Conv2d, nn.Linear)):
        return layer
    inside = [n for n, m in _weighted(mods) if n.startswith(layer + ".") and _out(m) == units]
    if inside:
        return inside[-1]
    idx = [n for n, _ in mods].index(layer)
    before = [n for n, m in _weighted(mods[:idx]) if _out(m) == units]
    return before[-1] if before else None


def outgoing_layer(model: nn.Module, layer: str, units: int, spatial: int) -> str | None:
    """The first conv/linear after the layer (not inside it) that reads the units: a conv with
    ``units`` input channels, or a linear with ``units`` or ``units * H * W`` inputs."""
    mods = list(model.named_modules())
    idx = [n for n, _ in mods].index(layer)
    for n, m in _weighted(mods[idx + 1:]):
        if n.startswith(layer + "."):
            continue
        if _in(m) in (units, units * spatial):
            return n
    return None


def _out(m):
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _in(m):
    return m.in_channels if isinstance(m, nn.Conv2d) else m.in_features


def weight_l1(model: nn.Module, layer: str, units: int, spatial: int, incoming: str | None = None,
              outgoing: str | None = None) -> dict:
    """Sum |W| of each unit's incoming filter and outgoing weights, (U,) each (NaN when not found)."""
    inc = incoming or incoming_layer(model, layer, units)
    out = outgoing or outgoing_layer(model, layer, units, spatial)
    res = {"incoming_layer": inc, "outgoing_layer": out}
    nan = torch.full((units,), float("nan"))
    if inc:
        w = get_module(model, inc).weight.detach().cpu()
        res["weight_l1_in"] = w.abs().flatten(1).sum(1) if w.shape[0] == units else nan
    else:
        res["weight_l1_in"] = nan
    if out:
        w = get_module(model, out).weight.detach().cpu()
        if w.shape[1] == units:
            res["weight_l1_out"] = w.abs().transpose(0, 1).flatten(1).sum(1)
        else:                                                         # linear after flatten: (O, U*H*W)
            res["weight_l1_out"] = w.abs().reshape(w.shape[0], units, -1).sum((0, 2))
    else:
        res["weight_l1_out"] = nan
    return res


# ---- the analysis -------------------------------------------------------------------------------
def unit_analysis(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str, num_classes: int,
                  batch_size: int = 250, bootstrap: int = 1000, seed: int = 0,
                  incoming: str | None = None, outgoing: str | None = None) -> dict:
    """Everything for one model and layer: per-unit attributes and drops, Delta_{u,k}, correlations."""
    model.eval()
    acts, logits = unit_activations(model, x, layer, batch_size)
    units = acts.shape[1]
    with LayerTaps(model, [layer], grads=False) as taps, torch.no_grad():
        model(x[:1])
        shape = taps.acts[layer].shape
    spatial = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    base_pred, abl_pred = ablated_predictions(model, x, layer, units, batch_size)
    drops = accuracy_drops(base_pred.cpu(), abl_pred.cpu(), y.cpu(), num_classes)
    acts, probs, yc = acts.cpu().double(), logits.softmax(1).cpu().double(), y.cpu()
    csi, sel_class = class_selectivity(acts, yc, num_classes)
    corr = class_correlation(acts, probs)                              # (U, C)
    corr_filled = torch.nan_to_num(corr, nan=-2.0)
    corr_max, corr_class = corr_filled.max(1)
    l1 = weight_l1(model, layer, units, spatial, incoming, outgoing)
    class_drop = drops["class_drop"].double()
    unit_idx = torch.arange(units)
    table = {
        "unit": unit_idx.numpy(),
        "class_selectivity": csi.numpy(), "selective_class": sel_class.numpy(),
        "class_correlation": torch.where(corr_max > -2, corr_max, torch.nan).numpy(),
        "correlated_class": corr_class.numpy(),
        "weight_l1_in": l1["weight_l1_in"].double().numpy(), "weight_l1_out": l1["weight_l1_out"].double().numpy(),
        "mean_activation": acts.mean(0).numpy(),
        "overall_drop": drops["overall_drop"].double().numpy(),
        "max_class_drop": torch.nan_to_num(class_drop, nan=-1e9).max(1).values.numpy(),
        "max_drop_class": torch.nan_to_num(class_drop, nan=-1e9).argmax(1).numpy(),
        "selective_class_drop": class_drop[unit_idx, sel_class].numpy(),
        "correlated_class_drop": class_drop[unit_idx, corr_class].numpy(),
    }
    correlations = []
    for attr in ATTRIBUTES:
        for target in TARGETS:
            a, t = table[attr], table[target]
            ok = np.isfinite(a) & np.isfinite(t)
            if ok.sum() < 3:
                continue
            lo, hi = bootstrap_ci(a[ok], t[ok], spearman, n=bootstrap, seed=seed)
            correlations.append({"attribute": attr, "target": target, "n": int(ok.sum()),
                                 "pearson": pearson(a[ok], t[ok]), "spearman": spearman(a[ok], t[ok]),
                                 "spearman_ci_lo": lo, "spearman_ci_hi": hi})
    pair_a, pair_t = corr.numpy().ravel(), class_drop.numpy().ravel()
    ok = np.isfinite(pair_a) & np.isfinite(pair_t)
    if ok.sum() >= 3:
        correlations.append({"attribute": "class_correlation[u,k]", "target": "class_drop[u,k]", "n": int(ok.sum()),
                             "pearson": pearson(pair_a[ok], pair_t[ok]), "spearman": spearman(pair_a[ok], pair_t[ok]),
                             "spearman_ci_lo": float("nan"), "spearman_ci_hi": float("nan")})
    return {"layer": layer, "units": units, "n": int(x.shape[0]), "base_top1": drops["base_top1"],
            "base_class_acc": drops["base_class_acc"], "class_drop": class_drop, "table": table,
            "correlations": correlations, "incoming_layer": l1["incoming_layer"],
            "outgoing_layer": l1["outgoing_layer"]}


def summary_metrics(res: dict) -> dict:
    t = res["table"]
    out = {"base_top1": res["base_top1"], "units": res["units"], "n_images": res["n"],
           "mean_overall_drop": float(np.mean(t["overall_drop"])), "max_overall_drop": float(np.max(t["overall_drop"])),
           "share_units_overall_drop_lt_1pp": float(np.mean(t["overall_drop"] < 1.0)),
           "mean_max_class_drop": float(np.mean(t["max_class_drop"])),
           "max_max_class_drop": float(np.max(t["max_class_drop"])),
           "incoming_layer": res["incoming_layer"], "outgoing_layer": res["outgoing_layer"]}
    mo = out["mean_overall_drop"]
    out["ratio_max_class_to_overall"] = out["mean_max_class_drop"] / mo if mo > 0 else float("nan")
    for c in res["correlations"]:
        if c["attribute"] in ATTRIBUTES and c["target"] in ("overall_drop", "max_class_drop"):
            out[f"spearman_{c['attribute']}__{c['target']}"] = c["spearman"]
            out[f"pearson_{c['attribute']}__{c['target']}"] = c["pearson"]
    return out


# ---- outputs ------------------------------------------------------------------------------------
def write_csvs(out_dir: str, variant: str, res: dict) -> list[str]:
    t = res["table"]
    paths = [os.path.join(out_dir, f"units_{variant}.csv"), os.path.join(out_dir, f"class_drops_{variant}.csv"),
             os.path.join(out_dir, f"correlations_{variant}.csv")]
    with open(paths[0], "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(list(t))
        for i in range(res["units"]):
            wr.writerow([t[k][i] for k in t])
    with open(paths[1], "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        cd = res["class_drop"].numpy()
        wr.writerow(["unit", *[f"class_{k}" for k in range(cd.shape[1])]])
        for u in range(cd.shape[0]):
            wr.writerow([u, *cd[u]])
    with open(paths[2], "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["attribute", "target", "n", "pearson", "spearman", "spearman_ci_lo",
                                           "spearman_ci_hi"], lineterminator="\n")
        wr.writeheader()
        wr.writerows(res["correlations"])
    return paths


def plot_unit_analysis(path: str, res: dict, title: str) -> None:
    """Scatter of each attribute vs overall and max-class drop, and the Delta_{u,k} heat map."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = res["table"]
    fig, axes = plt.subplots(2, len(ATTRIBUTES) + 1, figsize=(2.0 * (len(ATTRIBUTES) + 1), 4.0))
    rho = {(c["attribute"], c["target"]): c["spearman"] for c in res["correlations"]}
    for j, attr in enumerate(ATTRIBUTES):
        for i, target in enumerate(("overall_drop", "max_class_drop")):
            ax = axes[i, j]
            ax.scatter(t[attr], t[target], s=4)
            ax.set_title(f"rho={rho.get((attr, target), float('nan')):.2f}", fontsize=6)
            ax.tick_params(labelsize=5)
            if i == 1:
                ax.set_xlabel(attr, fontsize=6)
            if j == 0:
                ax.set_ylabel(f"{target} (pp)", fontsize=6)
    cd = res["class_drop"].numpy()
    order = np.argsort(-np.nan_to_num(cd, nan=-1e9).max(1))
    gs = axes[0, -1].get_gridspec()
    axes[0, -1].remove()
    axes[1, -1].remove()
    ax = fig.add_subplot(gs[:, -1])
    im = ax.imshow(cd[order], aspect="auto", cmap="magma")
    ax.set_xlabel("class", fontsize=6)
    ax.set_ylabel("unit (sorted by max drop)", fontsize=6)
    ax.tick_params(labelsize=5)
    cb = fig.colorbar(im, ax=ax)
    cb.ax.tick_params(labelsize=5)
    ax.set_title("class drop (pp)", fontsize=6)
    fig.suptitle(title, fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.97, bottom=0.12, top=0.88, wspace=0.45, hspace=0.4)
    save_small_png(fig, path)
    plt.close(fig)


def importance_shift(a: dict, b: dict, top: int = 10) -> dict:
    """How unit importance moves between two models with the same units (FP vs compressed)."""
    out = {}
    for target in ("overall_drop", "max_class_drop"):
        x, y = a["table"][target], b["table"][target]
        out[f"spearman_{target}"] = spearman(x, y)
        k = min(top, len(x))
        out[f"top{k}_overlap_{target}"] = len(set(np.argsort(-x)[:k]) & set(np.argsort(-y)[:k])) / k
    for attr in ("class_selectivity", "weight_l1_in", "weight_l1_out"):
        out[f"spearman_{attr}"] = spearman(a["table"][attr], b["table"][attr])
    return out


def plot_shift(path: str, a: dict, b: dict, labels: tuple[str, str]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.2))
    for ax, target in zip(axes, ("overall_drop", "max_class_drop")):
        x, y = a["table"][target], b["table"][target]
        ax.scatter(x, y, s=5)
        lim = [min(x.min(), y.min()), max(x.max(), y.max())]
        ax.plot(lim, lim, "k--", lw=0.5)
        ax.set_xlabel(f"{labels[0]} {target} (pp)", fontsize=6)
        ax.set_ylabel(f"{labels[1]} (pp)", fontsize=6)
        ax.set_title(f"rho={spearman(x, y):.2f}", fontsize=6)
        ax.tick_params(labelsize=5)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.2, top=0.88, wspace=0.45)
    save_small_png(fig, path)
    plt.close(fig)


def _f(v) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.3g}"


def write_report(path: str, title: str, results: dict[str, dict], shift: dict | None, images: list[str],
                 context: str) -> None:
    lines = [f"# {title}", "", context, "",
             "Drops are in percentage points of top-1 on the analysed images (Delta = intact - ablated). The "
             "protocol is the paper note's reconstruction (unverified); correlations are across units.", "",
             "| model | layer | units | top-1 | mean overall drop | max overall drop | units < 1pp | "
             "mean max-class drop | max max-class drop |", "|---|---|---|---|---|---|---|---|---|"]
    for variant, res in results.items():
        s = summary_metrics(res)
        lines.append(f"| {variant} | {res['layer']} | {res['units']} | {s['base_top1']:.2f} | "
                     f"{_f(s['mean_overall_drop'])} | {_f(s['max_overall_drop'])} | "
                     f"{100 * s['share_units_overall_drop_lt_1pp']:.0f}% | {_f(s['mean_max_class_drop'])} | "
                     f"{_f(s['max_max_class_drop'])} |")
    lines += ["", "Spearman rho (95% bootstrap CI over units) of unit attributes with the drops:", "",
              "| model | attribute | vs overall drop | vs max-class drop |", "|---|---|---|---|"]
    for variant, res in results.items():
        by = {(c["attribute"], c["target"]): c for c in res["correlations"]}
        for attr in ATTRIBUTES:
            cells = []
            for target in ("overall_drop", "max_class_drop"):
                c = by.get((attr, target))
                cells.append(f"{_f(c['spearman'])} [{_f(c['spearman_ci_lo'])}, {_f(c['spearman_ci_hi'])}]"
                             if c else "n/a")
            lines.append(f"| {variant} | {attr} | {cells[0]} | {cells[1]} |")
        pair = by.get(("class_correlation[u,k]", "class_drop[u,k]"))
        if pair:
            lines.append(f"| {variant} | corr[u,k] vs drop[u,k] (pairs) | | {_f(pair['spearman'])} |")
    if shift:
        lines += ["", "Importance shift, full precision vs compressed (same units):", "",
                  "| quantity | value |", "|---|---|"]
        lines += [f"| {k} | {_f(v)} |" for k, v in shift.items()]
    lines += ["", *[f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in images], ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ---- the analysis: config check, computation, report ----------------------------------------------
KNOWN_KEYS = {"name", "family", "layer", "num_images", "batch_size", "bootstrap", "compare", "checkpoint",
              "output_dir", "seed", "incoming_layer", "outgoing_layer", "stages"}


def check_config(m) -> None:
    unknown = set(m.keys()) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"method (unit_ablation): unknown keys {sorted(unknown)}; allowed: {sorted(KNOWN_KEYS)}")


def analyze(cfg, variants: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """``unit_analysis`` of every model variant (``fp`` first) at ``method.layer`` (default: ``fp``'s last feature
    map): ``{variant: unit_analysis(...)}``."""
    m = cfg.method
    layer = str(m.layer) if m.get("layer") else default_layer(variants["fp"], x[:1])
    kw = dict(batch_size=int(m.batch_size), bootstrap=int(m.bootstrap),
              seed=int(m.get("seed", 0) or 0), incoming=m.get("incoming_layer"), outgoing=m.get("outgoing_layer"))
    return {v: unit_analysis(net, x, y, layer, num_classes, **kw) for v, net in variants.items()}


def report(cfg, variants: dict[str, nn.Module], results: dict, x: torch.Tensor, out_dir: str, write_row) -> dict:
    """One row per model variant (``write_row``), its CSVs and plot, the importance shift between the two
    variants and the markdown report in ``out_dir``. Returns summary metrics of the ``fp`` model (``top1`` first)."""
    layer = results["fp"]["layer"]
    images = []
    for variant, res in results.items():
        s = summary_metrics(res)
        write_row(variants[variant], method="unit_ablation",
                  variant=layer + ("" if variant == "fp" else f"|{variant}"), top1=round(res["base_top1"], 4),
                  extra={"analysis": "unit_ablation", "layer": layer, "model_variant": variant, **s})
        write_csvs(out_dir, variant, res)
        p = os.path.join(out_dir, f"unit_ablation_{variant}.png")
        plot_unit_analysis(p, res, f"{cfg.model.name} {layer} ({variant}, {res['n']} images)")
        images.append(p)
    shift = None
    if len(results) == 2:
        a, b = results.values()
        shift = importance_shift(a, b)
        p = os.path.join(out_dir, "unit_importance_shift.png")
        plot_shift(p, a, b, tuple(results))
        images.append(p)
    context = (f"Model `{cfg.model.name}`, layer `{layer}` ({results['fp']['units']} units), {x.shape[0]} test "
               f"images of `{cfg.data.name}` (spread evenly over the split); incoming weights "
               f"`{results['fp']['incoming_layer']}`, outgoing `{results['fp']['outgoing_layer']}`."
               + (f" Compressed copy: `{list(results)[1]}`." if shift else ""))
    write_report(os.path.join(out_dir, "unit_ablation.md"), f"Unit ablation: {os.path.basename(out_dir)}", results,
                 shift, images, context)
    metrics = {"top1": results["fp"]["base_top1"],
               **{k: v for k, v in summary_metrics(results["fp"]).items() if isinstance(v, float)}}
    if shift:
        metrics.update({f"shift/{k}": v for k, v in shift.items()})
    return metrics


@register_method("unit_ablation")
class UnitAblation(Method):
    """``method=unit_ablation``: analysis only (trains nothing); run by ``python scripts/analyze.py
    method=unit_ablation ...``."""

    family = "analysis"

    def stages(self):
        raise ValueError("method=unit_ablation is an analysis method (family 'analysis') and trains nothing: run "
                         "python scripts/analyze.py method=unit_ablation ... (or python evaluate.py "
                         "method=unit_ablation ...), not train.py")

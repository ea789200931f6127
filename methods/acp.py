"""ACP: Automatic Channel Pruning via Clustering and Swarm Intelligence Optimization (Chang et al., arXiv 2101.06407).

Paper note: ../shared/papers/acp.md ("Algorithm", "Recipe", "Official code notes"); docs/acp.md. Official code:
JingfeiChang/ACP-Automatic-Channel-Pruning (particle_cifar.py); goldens in tests/golden/acp/. The steps, by name:

1. **Feature collection** (``collect_features``): the pretrained net runs on a fixed sample of ``cluster_images``
   images (eval mode, no augmentation); each pruned conv's *output* (before BN) is averaged over the images,
   giving per channel c a vector f_c in R^{HW}.
2. **Layer-wise clustering** (``cluster_count``): DBSCAN on {f_c} with cosine distance 1 - cos, radius ``eps`` and
   ``min_samples`` 5; kept count n_l = #clusters + #noise points (one representative per cluster plus every map
   that joins none).
3. **Population initialisation** (``init_population``): x_{i,l} = clip(int(n_l + i * s_{i,l}), 1, C_l) with
   s_{i,l} drawn from {-1, 0, 1}, i = 0..swarm-1; velocities v_{i,l} ~ U(-v_max, v_max).
4. **PSO search** (``pso_move``, ``pso_velocity``, ``inertia``, ``pso_search``), per cycle t and particle i, in
   order (asynchronous: particle i+1 already sees particle i's gbest):
   - k dimensions ``dims`` drawn at random (``sample_dims``; the code draws randint(0, D-1, k): with replacement
     and never the last layer, ``dim_range: official``);
   - **position**: x_l <- int(x_l + 2 * v_l) for l in dims, clipped below at 1; above C_l the code sets C_l - 1
     (``clip: official``; ``paper``: C_l);
   - **velocity**: v_j <- chi * (w_t * v_j + c1 R (pbest_j - x_j) + c2 R (gbest_j - x_j)), clipped to +-v_max, with
     chi = 0.729, c1 = c2 = 2, one R ~ U(0, 1) per particle and cycle, x the position before the move and
     **inertia** w_t = 0.5 (T - t) / 20 + 0.4 (T = 8 cycles: 0.6 -> 0.425);
     ``velocity: paper`` (default) updates the moved dimensions j in dims; ``velocity: official`` keeps the code's
     quirk (j = 0..k-1 whatever dims were moved, so the velocities of the other layers never change);
   - **fitness** (``ACP.fitness``): the candidate inherits the pretrained weights (kept filters chosen at random
     from the first C_l - 1, ``select_rule: random`` as the code; ``l1``: largest L1 norm), is fine-tuned for a
     few SGD steps and scored by top-1 on ``search_split``: ``heldout`` (default: a fixed held-out part of the
     training data, ``methods/common/heldout.py``; the fine-tune uses the rest) or ``test`` (the official code:
     clustering images and fitness from the test set); then pbest_i and gbest are updated (strictly better).
5. **Retraining** of gbest on the channel-surgery core (``prune_channels``), from its fitness-trained weights
   (``final_init: gbest``, the code's) or from the inherited ones (``inherit``) or from scratch.

Controls (``allocation``): ``cluster`` (the clustering widths n_l, no search; scaled by one factor to gbest's FLOPs
when ``match_flops: search``) and ``uniform`` (one inner rate at gbest's FLOPs); both go through the same single
fitness fine-tune and retraining, so every arm trains its final structure for the same steps. Their FLOPs target
comes from the search of the same seed, cached under ``search_cache`` (run once, shared by the arms).

Detectors (``data.task=detection``, SSD backbones; docs/detection.md "Pruning"): clustering is unchanged (hooks on
the producer convs of the inner/plain groups, i.e. the chain convs, in eval mode); the fitness fine-tune minimises
the detector's loss dict and scores mAP@0.5. A file dataset has no held-out split: ``search_split=test`` (the
official variant) is required, and the default stops naming it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.complexity import measure
from methods import Method, register_method
from core.atomic_files import save_tensors
from methods.common.channel_pruning import (apply_channel_config, channel_groups, filter_l1,
                                            prune_channels, reinit_rule, reinitialize, top_k)
from methods.common.heldout import heldout_split
from methods.common.pruning_report import compression_report

VELOCITY = ("paper", "official")
DIM_RANGE = ("official", "all")
CLIP = ("official", "paper")
SEARCH_SPLIT = ("heldout", "test")
SELECT_RULE = ("random", "l1")
FINAL_INIT = ("gbest", "inherit", "scratch")
ALLOCATION = ("pso", "cluster", "uniform")
MATCH_FLOPS = ("search", "none")


# ---------------------------------------------------------------------------------------------------
# 1-2. feature collection and clustering
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def collect_features(model: nn.Module, convs: list[str], images: torch.Tensor, batch_size: int = 100
                     ) -> dict[str, torch.Tensor]:
    """f_{l,c}: each conv's output (before BN) averaged over ``images``, flattened to (C_l, H*W)."""
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_m, _inp, out):
            s = out.detach().double().sum(0)
            sums[name] = s if name not in sums else sums[name] + s
        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in convs]
    was = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {n: (sums[n] / len(images)).flatten(1).float().cpu() for n in convs}


def cluster_count(features: torch.Tensor | np.ndarray, eps: float, min_samples: int = 5) -> int:
    """n_l = #clusters + #noise points of DBSCAN (cosine distance, radius ``eps``) on the rows of ``features``."""
    from sklearn.cluster import DBSCAN

    x = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float32)
    labels = DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="cosine").fit(x).labels_
    clusters = len(set(labels.tolist()) - {-1})
    noise = int((labels == -1).sum())
    return clusters + noise


# ---------------------------------------------------------------------------------------------------
# 3-4. population and PSO
# ---------------------------------------------------------------------------------------------------
def init_population(n: list[int], max_ch: list[int], s: torch.Tensor, v: torch.Tensor):
    """x_{i,l} = clip(int(n_l + i s_{i,l}), 1, C_l); ``s`` (swarm, D) in {-1, 0, 1}, ``v`` the initial velocities."""
    x = [[min(max(int(n[l] + i * int(s[i, l])), 1), max_ch[l]) for l in range(len(n))] for i in range(s.shape[0])]
    return x, [[float(a) for a in row] for row in v]


def draw_init(generator: torch.Generator, swarm: int, dims: int, v_max: float):
    s = torch.randint(-1, 2, (swarm, dims), generator=generator)
    v = torch.rand(swarm, dims, generator=generator, dtype=torch.float64) * 2 * v_max - v_max
    return s, v


def inertia(cycle: int, cycles: int = 8) -> float:
    """w_t = 0.5 (T - t) / 20 + 0.4."""
    return 0.5 * (cycles - cycle) / 20 + 0.4


def sample_dims(generator: torch.Generator, d: int, k: int, dim_range: str = "official") -> list[int]:
    """k dimensions with replacement; ``official``: from 0..D-2 (numpy randint(0, D-1, k)); ``all``: 0..D-1."""
    hi = d - 1 if dim_range == "official" else d
    return torch.randint(0, max(1, hi), (k,), generator=generator).tolist()


def pso_move(x: list[int], v: list[float], dims, max_ch: list[int], step: float = 2.0, clip: str = "official"):
    """x_l <- int(x_l + step v_l) for l in dims; below 1 -> 1; above C_l -> C_l - 1 (official) or C_l (paper)."""
    out = list(x)
    for l in dims:
        p = int(x[l] + step * v[l])
        if p < 1:
            p = 1
        if p > max_ch[l]:
            p = max_ch[l] - 1 if clip == "official" else max_ch[l]
        out[l] = p
    return out


def pso_velocity(v, x, pbest, gbest, w: float, r: float, dims, c1: float = 2.0, c2: float = 2.0,
                 chi: float = 0.729, v_max: float = 2.0, variant: str = "paper"):
    """v_j <- clip(chi (w v_j + c1 R (pbest_j - x_j) + c2 R (gbest_j - x_j)), +-v_max) for j in dims (``paper``) or
    for j = 0..len(dims)-1 (``official``: the code's loop index)."""
    out = list(v)
    idx = dims if variant == "paper" else range(len(dims))
    for j in idx:
        u = chi * (w * v[j] + c1 * r * (pbest[j] - x[j]) + c2 * r * (gbest[j] - x[j]))
        out[j] = max(-v_max, min(v_max, u))
    return out


def pso_cycle(state: dict, cycle: int, fitness, generator: torch.Generator, max_ch: list[int], p: dict,
              draws: dict | None = None) -> dict:
    """One search cycle over the swarm (particles in order), updating ``state`` in place:
    x, v, fit, pbest, pbest_fit, gbest, gbest_fit. ``draws`` (tests) gives the dims and R per particle."""
    w = inertia(cycle, p["cycles"])
    for i in range(len(state["x"])):
        if draws is None:
            dims = sample_dims(generator, len(max_ch), p["k"], p["dim_range"])
            r = float(torch.rand((), generator=generator, dtype=torch.float64))
        else:
            dims, r = draws["dims"][i], draws["R"][i]
        x, v = state["x"][i], state["v"][i]
        moved = pso_move(x, v, dims, max_ch, p["step"], p["clip"])
        state["v"][i] = pso_velocity(v, x, state["pbest"][i], state["gbest"], w, r, dims, p["c1"], p["c2"],
                                     p["chi"], p["v_max"], p["velocity"])
        f = fitness(moved)
        if f > state["pbest_fit"][i]:
            state["pbest"][i], state["pbest_fit"][i] = list(moved), f
        if f > state["gbest_fit"]:
            state["gbest"], state["gbest_fit"] = list(moved), f
        state["x"][i], state["fit"][i] = moved, f
    return state


def init_state(n, max_ch, fitness, s, v) -> dict:
    """Initial swarm, each particle scored; pbest = the particle, gbest = the best (first of equals)."""
    x, vel = init_population(n, max_ch, s, v)
    state = {"x": x, "v": vel, "fit": [], "pbest": [list(a) for a in x], "pbest_fit": [], "gbest": None,
             "gbest_fit": float("-inf"), "cycle": 0}
    for xi in x:
        f = fitness(xi)
        state["fit"].append(f)
        state["pbest_fit"].append(f)
        if f > state["gbest_fit"]:
            state["gbest"], state["gbest_fit"] = list(xi), f
    return state


# ---------------------------------------------------------------------------------------------------
# weights of a candidate
# ---------------------------------------------------------------------------------------------------
def select_channels(model, spec, widths: dict[str, int], rule: str, generator: torch.Generator) -> dict:
    """Kept indices per group: ``random`` (the code: a random sorted draw from the first C-1 channels) or ``l1``."""
    keep = {}
    for n, k in widths.items():
        c = spec[n].width
        if k >= c:
            continue
        if rule == "random":
            keep[n] = sorted(torch.randperm(c - 1, generator=generator)[:k].tolist())
        else:
            keep[n] = top_k(filter_l1(model, spec[n]), k).tolist()
    return keep


def reset_norms(model: nn.Module) -> nn.Module:
    """The code's loaders copy conv (and fc) weights only: every BN starts fresh (weight 1, bias 0, stats 0/1)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
    return model


def _share(flops_of, widths_of, target, lo, hi, iters=40):
    """Bisection on a monotone scalar (larger -> more FLOPs) to reach ``target`` FLOPs from below."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flops_of(widths_of(mid)) <= target else (lo, mid)
    return lo


@register_method("acp")
class ACP(Method):
    family = "prune"
    supports_detection = True

    def __init__(self, cfg):
        super().__init__(cfg)
        for key, allowed, default in (("velocity", VELOCITY, "paper"), ("dim_range", DIM_RANGE, "official"),
                                      ("clip", CLIP, "official"), ("search_split", SEARCH_SPLIT, "heldout"),
                                      ("select_rule", SELECT_RULE, "random"), ("final_init", FINAL_INIT, "gbest"),
                                      ("allocation", ALLOCATION, "pso"), ("match_flops", MATCH_FLOPS, "search"),
                                      ("control_select", ("search", "l1", "random"), "search")):
            if cfg.get(key, default) not in allowed:
                raise ValueError(f"method.{key}={cfg.get(key)!r}; choose one of {allowed}")
        self.reinit = reinit_rule(cfg)
        self.config = None
        self.search: dict = {}
        self._dense = None
        self._input_shape = None
        self._gbest_weights = None

    # ---- config ------------------------------------------------------------------------------------
    def _p(self) -> dict:
        c = self.cfg
        pso = c.get("pso") or {}
        return {"swarm": int(pso.get("swarm", 10)), "cycles": int(pso.get("cycles", 8)), "k": int(pso.get("k", 8)),
                "step": float(pso.get("step", 2.0)), "c1": float(pso.get("c1", 2.0)), "c2": float(pso.get("c2", 2.0)),
                "chi": float(pso.get("chi", 0.729)), "v_max": float(pso.get("v_max", 2.0)),
                "velocity": c.get("velocity", "paper"), "dim_range": c.get("dim_range", "official"),
                "clip": c.get("clip", "official")}

    def _search_key(self, ctx, model) -> str:
        keys = ("eps", "min_samples", "cluster_images", "pso", "fitness", "velocity", "dim_range", "clip",
                "search_split", "heldout_size", "select_rule", "inherit_bn")
        from omegaconf import OmegaConf
        node = {k: (OmegaConf.to_container(self.cfg[k]) if OmegaConf.is_config(self.cfg.get(k)) else self.cfg.get(k))
                for k in keys}
        sig = [float(sum(p.detach().double().sum() for p in model.parameters())),
               sum(p.numel() for p in model.parameters())]
        text = json.dumps({"cfg": node, "seed": ctx.seed, "model": sig, "classes": ctx.num_classes,
                           "train": getattr(ctx.train_loader, "num_samples", None)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ---- data --------------------------------------------------------------------------------------
    def _splits(self, ctx):
        fcfg = self.cfg.get("fitness") or {}
        if self.cfg.get("search_split", "heldout") == "test":
            fit = ctx.train_loader
            if fcfg.get("batch_size") and hasattr(ctx.train_loader, "images"):
                fit, _ = heldout_split(ctx.train_loader, 1, int(fcfg["batch_size"]))
            return fit, ctx.test_loader
        return heldout_split(ctx.train_loader, int(self.cfg.get("heldout_size", 5000)), fcfg.get("batch_size"))

    def _cluster_images(self, loader, ctx) -> torch.Tensor:
        n = int(self.cfg.get("cluster_images", 200))
        xs = torch.cat([x for x, _ in loader])      # eval loaders: normalised, no augmentation, in order
        if n > len(xs):
            raise ValueError(f"method.cluster_images={n}: the {self.cfg.get('search_split')} split has {len(xs)}")
        idx = torch.randperm(len(xs), generator=self.generator)[:n]
        return xs[idx.to(xs.device)].to(ctx.device)

    # ---- fitness -----------------------------------------------------------------------------------
    def candidate(self, widths: dict[str, int], rule: str | None = None) -> nn.Module:
        """The candidate with inherited pretrained weights (``select_rule``; ``inherit_bn: false`` = the code)."""
        spec = channel_groups(self._dense)
        rule = rule or self.cfg.get("select_rule", "random")
        keep = select_channels(self._dense, spec, widths, rule, self.generator)
        model = prune_channels(self._dense, keep, spec)
        if not self.cfg.get("inherit_bn", False):
            reset_norms(model)
        return model

    def train_and_score(self, model: nn.Module, fit_loader, score_loader, ctx) -> float:
        """A short SGD fine-tune on ``fit_loader`` (the same batches for every candidate), top-1 on ``score_loader``.

        A detector (``score_loader.task == "detection"``): the fine-tune minimises the sum of its loss dict and the
        score is mAP@0.5 (``map50`` of ``ctx.evaluate``: engine/detection.py) on ``score_loader``."""
        detection = getattr(score_loader, "task", "classification") == "detection"
        fcfg = self.cfg.get("fitness") or {}
        steps = int(fcfg.get("steps", 0)) or int(fcfg.get("epochs", 3)) * len(fit_loader)
        opt = torch.optim.SGD(model.parameters(), lr=float(fcfg.get("lr", 0.1)),
                              momentum=float(fcfg.get("momentum", 0.9)),
                              weight_decay=float(fcfg.get("weight_decay", 1e-4)))
        model.to(ctx.device).train()
        done, epoch = 0, 0
        while done < steps:
            fit_loader.set_epoch(epoch)
            for x, y in fit_loader:
                opt.zero_grad(set_to_none=True)
                if detection:     # the detector's loss dict (SSD: localisation + classification), summed
                    sum(model(x.to(ctx.device), [{k: v.to(ctx.device) for k, v in t.items()} for t in y]).values()
                        ).backward()
                else:
                    F.cross_entropy(model(x.to(ctx.device)), y.to(ctx.device)).backward()
                opt.step()
                done += 1
                if done >= steps:
                    break
            epoch += 1
        if detection:
            score = float(ctx.evaluate(model, score_loader)["map50"])
            model.train()
            return score
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in score_loader:
                correct += int((model(x.to(ctx.device)).argmax(1) == y.to(ctx.device)).sum())
                total += len(y)
        model.train()
        return 100.0 * correct / max(1, total)

    # ---- the search --------------------------------------------------------------------------------
    def _run_search(self, model, ctx, names, max_ch) -> dict:
        path = os.path.join(self.cfg.get("search_cache") or os.path.join(getattr(ctx, "out_dir", "."), "acp"),
                            f"search-{self._search_key(ctx, model)}.pt")
        saved = torch.load(path, weights_only=False) if os.path.exists(path) else None
        if saved is not None and saved.get("done"):
            return saved
        fit_loader, score_loader = self._splits(ctx)
        p = self._p()
        if saved is None:
            images = self._cluster_images(score_loader, ctx)
            feats = collect_features(self._dense.to(ctx.device), self._convs(names), images)
            eps = float(self.cfg.get("eps", 0.007))
            n = [cluster_count(feats[c], eps, int(self.cfg.get("min_samples", 5))) for c in self._convs(names)]
            saved = {"n": n, "names": names, "max_ch": max_ch, "done": False, "evals": 0,
                     "history": [], "generator": None}
        else:
            self.generator.set_state(saved["generator"])
        best = {"fit": float(saved.get("gbest_fit", float("-inf"))), "state": saved.get("gbest_weights")}

        def fitness(x):
            model_c = self.candidate(dict(zip(names, x)))
            f = self.train_and_score(model_c, fit_loader, score_loader, ctx)
            saved["evals"] += 1
            if f > best["fit"]:
                best["fit"], best["state"] = f, {k: v.detach().cpu().clone() for k, v in model_c.state_dict().items()}
            return f

        allocation = self.cfg.get("allocation", "pso")
        if "state" not in saved:
            if allocation == "pso":
                s, v = draw_init(self.generator, p["swarm"], len(names), p["v_max"])
                saved["state"] = init_state(saved["n"], max_ch, fitness, s, v)
            else:                             # controls: only the FLOPs target of the same seed's search is needed
                saved["state"] = None
            saved.update(gbest_weights=best["state"], gbest_fit=best["fit"], generator=self.generator.get_state())
            save_tensors(saved, path)
        while allocation == "pso" and saved["state"]["cycle"] < p["cycles"]:
            st = saved["state"]
            pso_cycle(st, st["cycle"], fitness, self.generator, max_ch, p)
            st["cycle"] += 1
            saved["history"].append({"cycle": st["cycle"], "gbest_fit": st["gbest_fit"], "gbest": list(st["gbest"]),
                                     "mean_fit": sum(st["fit"]) / len(st["fit"])})
            saved.update(gbest_weights=best["state"], gbest_fit=best["fit"], generator=self.generator.get_state())
            save_tensors(saved, path)
        saved["done"] = True
        save_tensors(saved, path)
        return saved

    def _convs(self, names):
        """The conv whose output is clustered for each group (its first producer)."""
        spec = channel_groups(self._dense)
        return [spec[n].producers[0] for n in names]

    def _control_widths(self, saved, names, max_ch, ctx) -> list[int]:
        """``cluster``: n_l (scaled to the search's gbest FLOPs); ``uniform``: one rate at those FLOPs."""
        allocation = self.cfg.get("allocation")
        shape = self._input_shape
        flops_of = lambda w: measure(apply_channel_config(self._dense, dict(zip(names, w))), shape).flops  # noqa: E731
        target = None
        if self.cfg.get("match_flops", "search") == "search":
            search_cfg = copy.deepcopy(self.cfg)
            search_cfg.allocation = "pso"
            ref = ACP(search_cfg)
            ref.generator.manual_seed(ctx.seed)
            ref._dense, ref._input_shape = self._dense, shape
            found = ref._run_search(self._dense, ctx, names, max_ch)
            target = flops_of(found["state"]["gbest"])
            self.search["target_flops"] = target
        if allocation == "cluster":
            if target is None:
                return list(saved["n"])
            scale = lambda a: [min(max(int(round(a * n)), 1), c) for n, c in zip(saved["n"], max_ch)]  # noqa: E731
            hi = max(c / max(n, 1) for n, c in zip(saved["n"], max_ch))
            return scale(_share(flops_of, scale, target, 0.0, hi))
        if target is None:
            raise ValueError("method.allocation=uniform needs method.match_flops=search (a FLOPs target)")
        widths = lambda keep: [min(c, max(1, int(c * keep))) for c in max_ch]  # noqa: E731
        return widths(_share(flops_of, widths, target, 0.0, 1.0))

    # ---- hooks -------------------------------------------------------------------------------------
    def transform(self, model, ctx):
        self._input_shape = (ctx.in_channels, ctx.image_size, ctx.image_size)
        self._dense = copy.deepcopy(model)
        if self.config is not None:           # evaluate.py (state loaded first): the structure only
            return apply_channel_config(model, self.config)
        spec = channel_groups(model)
        names = spec.names("inner") + spec.names("plain")
        if not names:
            raise ValueError("acp: the model has no prunable inner/plain channel groups")
        max_ch = [spec[n].width for n in names]
        saved = self._run_search(model, ctx, names, max_ch) if self.cfg.get("allocation", "pso") == "pso" \
            else self._run_controls(model, ctx, names, max_ch)
        if saved.get("state"):
            widths, self._gbest_weights = saved["state"]["gbest"], saved.get("gbest_weights")
        else:
            widths = saved["widths"]
            self._gbest_weights = saved.get("gbest_weights")
        config = {n: int(k) for n, k in zip(names, widths) if int(k) < spec[n].width}
        init = self.cfg.get("final_init", "gbest")
        if init == "gbest" and self._gbest_weights is not None:   # (controls: their own fitness-trained weights)
            compact = apply_channel_config(model, config)
            compact.load_state_dict(self._gbest_weights)
        else:
            compact = self.candidate(dict(zip(names, widths)))
            if init == "scratch":
                reinitialize(compact, self.generator, self.reinit)
        self.config = compact.channel_config
        hist = saved.get("history") or []
        self.search.update({"cluster_counts": list(saved["n"]), "widths": [int(k) for k in widths],
                            "eps": float(self.cfg.get("eps", 0.007)), "fitness_evals": saved.get("evals", 0),
                            "gbest_fitness": saved.get("gbest_fit"), "gbest_history": [h["gbest_fit"] for h in hist],
                            "mean_fitness_history": [h["mean_fit"] for h in hist],
                            "cluster_flops": measure(apply_channel_config(model, {
                                n: k for n, k in zip(names, saved["n"]) if k < spec[n].width}),
                                self._input_shape).flops})
        if saved.get("state"):
            st = saved["state"]
            moved = sum(a != b for a, b in zip(st["gbest"], saved["n"]))
            self.search.update(gbest_dims_changed=moved)
        return compact

    def _run_controls(self, model, ctx, names, max_ch) -> dict:
        """Clustering counts (no search), the control's widths, one fitness fine-tune of that structure."""
        cache = os.path.join(self.cfg.get("search_cache") or os.path.join(getattr(ctx, "out_dir", "."), "acp"),
                             f"control-{self.cfg.get('allocation')}-{self.cfg.get('control_select', 'search')}-"
                             f"{self._search_key(ctx, model)}.pt")
        if os.path.exists(cache):
            return torch.load(cache, weights_only=False)
        fit_loader, score_loader = self._splits(ctx)
        images = self._cluster_images(score_loader, ctx)
        feats = collect_features(self._dense.to(ctx.device), self._convs(names), images)
        n = [cluster_count(feats[c], float(self.cfg.get("eps", 0.007)), int(self.cfg.get("min_samples", 5)))
             for c in self._convs(names)]
        saved = {"n": n, "state": None, "evals": 1, "history": []}
        widths = self._control_widths(saved, names, max_ch, ctx)
        rule = self.cfg.get("control_select", "search")
        cand = self.candidate(dict(zip(names, widths)), None if rule == "search" else rule)
        f = self.train_and_score(cand, fit_loader, score_loader, ctx)
        saved.update(widths=widths, gbest_fit=f, gbest_weights={k: v.detach().cpu().clone()
                                                               for k, v in cand.state_dict().items()})
        save_tensors(saved, cache)
        return saved

    def metrics(self, model):
        out = {"channel_config": self.config, "allocation": self.cfg.get("allocation", "pso"),
               "velocity": self.cfg.get("velocity", "paper"), "search_split": self.cfg.get("search_split", "heldout"),
               "select_rule": self.cfg.get("select_rule", "random"), **self.search}
        if self._dense is not None and self._input_shape is not None:
            out.update(compression_report(self._dense, model, self._input_shape, self.cfg.get("latency")))
        return out

    def state_dict(self):
        return {**super().state_dict(), "config": self.config, "search": self.search}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.config = state.get("config")
        self.search = dict(state.get("search") or {})

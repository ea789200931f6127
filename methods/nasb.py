"""``method=nasb``: NASB, Neural Architecture Search for Binary CNNs (Zhu, Al-Ars, Hofstee, arXiv 2020).

Notes: ../shared/papers/nasb.md. Verified (abstract only): NASB searches an architecture "suitable for
binarization" with low overhead, motivated by the accumulation error of binarization in the forward pass and the
gradient mismatch in the backward pass, and beats hand-designed single and multiple binary CNNs on ImageNet.
EVERYTHING BELOW IS A HYPOTHESIS: the paper's search space, search algorithm, objective and retraining recipe are
not known. We use the DARTS formulation (Liu, Simonyan, Yang, ICLR 2019), first order, on a cell space of binary
ops with the shortcut and downsampling choices the abstract's motives point at (models/nasb.py, where the ops and
the network skeleton are described). Only the single-binary (1W1A) setting is built; the multiple-binary variant
is not.

Equations (names as in DARTS; each a function of this file):

- **Continuous relaxation** (:func:`mixed_op_weights`, :func:`mixed_op`): on every edge (j -> i)
  o_bar(x) = sum_o softmax(alpha)_o * o(x), with one alpha row per edge, shared by all cells of a type (normal,
  reduce). Node i = sum_{j<i} o_bar_ji(h_j); the cell's output is its last node (models/nasb.py).
- **Bilevel optimisation, first order** (:meth:`NASB.after_step` -> :func:`arch_step`): the weights w take the
  engine's optimizer step on a training batch, w <- w - eta grad_w L_train(w, alpha) (alpha's gradient is dropped
  before that step, :meth:`NASB.after_backward`); then alpha takes an Adam step on a batch of the held-out split,
  alpha <- alpha - xi grad_alpha L_val(w, alpha) (DARTS: Adam lr 3e-4, betas (0.5, 0.999), weight decay 1e-3; the
  training subset is split in halves, ``search.arch_split``). alpha batches are drawn with replacement by the
  method's generator, with the run's crop/flip augmentation. DARTS alternates alpha then w per batch; we do w then
  alpha (the same equations, shifted by half a step).
- **Binarisation in the search**: every binary conv of every candidate op binarises its weights and input
  activations during the search (the method's ``binary:`` spec; default Bi-Real's: ApproxSign activations,
  magnitude-aware sign weights with the clipped STE). Supernet BNs are affine-free (DARTS).
- **Derivation** (:func:`derive_genotype`): per node, the ``edges_per_node`` (k) incoming edges with the largest
  max_{o != none} softmax(alpha)_o are kept (ties: the lower input index), each with its argmax op excluding
  ``none`` (ties: the earlier op). DARTS keeps k = 2 of 4-node cells with two inputs; our cells have one input and
  two nodes, and k = 1 (a chain; the Bi-Real block is one such genotype).
- **Retraining**: the derived network (models/nasb.py NASBNet, affine BN, fresh init seeded by the run seed) is
  trained from scratch in the ``retrain`` stage. The genotype is written to ``<run dir>/nasb_derived.yaml``, a model
  config: ``model=nasb_cell model.genotype=<that file>`` (or the file copied into conf/model/) builds it again.

``genotype:`` picks where the trained architecture comes from: ``search`` (model=nasb_supernet, stages search ->
retrain), ``random`` (a uniform draw from the supernet's space by the run seed: the baseline that isolates the
search) or ``model`` (model=nasb_cell's own genotype, e.g. the hand-designed Bi-Real cell, conf/model/nasb_bireal.yaml).

Mechanism signals (the row's ``extra``): how far alpha moved from its init, the softmax weights at the end, the
genotype derived after each search epoch and the share of edges whose derived op changed between epochs, the
number of binary-conv edges of the derived net, and BinaryMethod's weight sign flips.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from methods import register_method
from methods.base import RunContext, Stage
from core.atomic_files import write_text
from methods.common.binary import BinaryMethod
from methods.common.ranks import average_grads

GENOTYPE_SOURCES = ("search", "random", "model")
PHASES = ("search", "retrain")
GENOTYPE_FILE = "nasb_derived.yaml"


# ---- the equations ----------------------------------------------------------------------------------------------
def mixed_op_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Continuous relaxation: softmax over the ops of each edge (row) of alpha (edges, ops)."""
    return F.softmax(alpha, dim=-1)


def mixed_op(outputs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """o_bar(x) = sum_o w_o * o(x) for the candidate outputs o(x) of one edge and its weights w (ops,)."""
    return sum(w * out for w, out in zip(weights, outputs))


def derive_cell(weights: torch.Tensor, ops: list[str], nodes: int, k: int) -> list:
    """The discrete cell from the mixed-op weights (edges, ops) of a cell with ``nodes`` nodes (edge order of
    models.nasb.cell_edges): per node the k strongest incoming edges by max_{o != none} w_o (stable: ties keep the
    lower input), each with its argmax op excluding none (ties: the earlier op). [[op, input], ...] per node."""
    keep = [i for i, o in enumerate(ops) if o != "none"]
    cell, e = [], 0
    for i in range(1, nodes + 1):
        rows = weights[e:e + i, keep].tolist()       # edges from h_0 .. h_{i-1}
        e += i
        order = sorted(range(i), key=lambda j: -max(rows[j]))[:k]
        node = []
        for j in order:
            best = max(range(len(keep)), key=lambda c: (rows[j][c], -c))
            node.append([ops[keep[best]], j])
        cell.append(node)
    return cell


def derive_genotype(alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor, normal_ops: list[str],
                    reduce_ops: list[str], nodes: int, k: int) -> dict:
    """Derivation of both cell types from their architecture parameters."""
    with torch.no_grad():
        return {"normal": derive_cell(mixed_op_weights(alpha_normal), normal_ops, nodes, k),
                "reduce": derive_cell(mixed_op_weights(alpha_reduce), reduce_ops, nodes, k)}


def random_genotype(normal_ops: list[str], reduce_ops: list[str], nodes: int, k: int,
                    generator: torch.Generator) -> dict:
    """A uniform draw from the same space: per node min(k, i) distinct inputs and one op (not none) each."""
    def cell(ops):
        ops = [o for o in ops if o != "none"]
        out = []
        for i in range(1, nodes + 1):
            inputs = torch.randperm(i, generator=generator)[:min(k, i)].tolist()
            out.append([[ops[int(torch.randint(len(ops), (1,), generator=generator))], j] for j in inputs])
        return out
    return {"normal": cell(normal_ops), "reduce": cell(reduce_ops)}


def arch_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """First-order architecture step: alpha <- alpha - xi * grad_alpha L_val(w, alpha) (``optimizer`` holds only
    the alphas); w is not changed. Returns L_val."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    loss = F.cross_entropy(model(x).float(), y)
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads):
        p.grad = g
    average_grads(params)          # one architecture across DDP ranks
    optimizer.step()
    for p in params:
        p.grad = None
    return float(loss.detach())


def genotype_str(genotype: dict) -> str:
    """``normal: op<-j | op<-j; reduce: ...`` (nodes separated by |, edges of a node by +)."""
    return "; ".join(f"{kind}: " + " | ".join(" + ".join(f"{op}<-{j}" for op, j in node) for node in genotype[kind])
                     for kind in ("normal", "reduce"))


def conv_edges(genotype: dict) -> dict:
    """Binary-conv edges per cell type (the parametric choices, each of the same BOPs)."""
    return {kind: sum(op.startswith("b") for node in genotype[kind] for op, _ in node) for kind in genotype}


def edge_agreement(a: dict, b: dict) -> float:
    """Share of (cell type, node, kept edge) entries that are the same in two genotypes."""
    pairs = [(x, y) for kind in ("normal", "reduce") for na, nb in zip(a[kind], b[kind]) for x, y in zip(na, nb)]
    return sum(list(x) == list(y) for x, y in pairs) / max(len(pairs), 1)


# ---- held-out split of a tensor training set --------------------------------------------------------------------
class HeldOutSplit:
    """Splits a TensorLoader's training images for the search: the loader keeps the weight part (so the engine's
    steps see only it) and this object serves alpha batches from the other part. ``restore`` undoes the split."""

    def __init__(self, loader, share: float, seed: int):
        if not hasattr(loader, "images") or not hasattr(loader, "labels"):
            raise ValueError("method=nasb search needs a tensor dataset (CIFAR, MNIST, synthetic), not ImageNet")
        self.loader = loader
        self.images, self.labels = loader.images, loader.labels
        n = len(self.labels)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).to(self.images.device)
        n_arch = int(round(n * share))
        if share > 0 and not 0 < n_arch < n:
            raise ValueError(f"method.search.arch_split={share} leaves no images for one side of {n}")
        if share > 0:     # alpha's half and w's half (the loader's images in their original order)
            arch_idx, w_idx = perm[:n_arch].sort().values, perm[n_arch:].sort().values
            self.arch_images, self.arch_labels = self.images[arch_idx], self.labels[arch_idx]
            loader.images, loader.labels = self.images[w_idx], self.labels[w_idx]
        else:             # no held-out split: alpha batches come from the same images as w's
            self.arch_images, self.arch_labels = self.images, self.labels

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from data.tensor_loader import random_crop_flip
        idx = torch.randint(len(self.arch_labels), (batch,), generator=generator).to(self.arch_images.device)
        x = self.arch_images.index_select(0, idx).float()
        ld = self.loader
        if ld.crop_padding or ld.flip:
            x = random_crop_flip(x, ld.crop_padding, ld.flip, generator)
        return (x - ld.mean) / ld.std, self.arch_labels.index_select(0, idx)

    def restore(self) -> None:
        self.loader.images, self.loader.labels = self.images, self.labels


# ---- the method -------------------------------------------------------------------------------------------------
@register_method("nasb")
class NASB(BinaryMethod):
    family = "nas"
    default_spec = {"act_estimator": "approx", "weight_estimator": "clipped", "scaling": "bireal"}
    extra_keys = {"genotype": None,
                  "search": {"arch_lr", "arch_betas", "arch_weight_decay", "arch_split", "arch_batch_size",
                             "warmup_epochs"},
                  "derive": {"edges_per_node", "width", "cells"}}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.source = str(cfg.get("genotype") or "search")
        if self.source not in GENOTYPE_SOURCES:
            raise ValueError(f"method.genotype={self.source!r} is not one of {', '.join(GENOTYPE_SOURCES)}")
        s = dict(cfg.get("search") or {})
        self.arch_lr = float(s.get("arch_lr", 3e-4))
        self.arch_betas = tuple(float(b) for b in s.get("arch_betas", (0.5, 0.999)))
        self.arch_wd = float(s.get("arch_weight_decay", 1e-3))
        self.arch_split = float(s.get("arch_split", 0.5))
        self.arch_batch = s.get("arch_batch_size")
        self.warmup_epochs = int(s.get("warmup_epochs", 0) or 0)
        derive = dict(cfg.get("derive") or {})
        self.k = int(derive.get("edges_per_node", 1))
        self.derived_width = derive.get("width")          # the derived net's skeleton (null: the supernet's)
        self.derived_cells = derive.get("cells")
        if self.k < 1:
            raise ValueError(f"method.derive.edges_per_node={self.k} must be >= 1")
        for st in self.stages():
            phase = st.params.get("phase")
            if phase not in PHASES:
                raise ValueError(f"method.stages[{st.name}].phase={phase!r} is not one of {', '.join(PHASES)}")
            if phase == "search" and self.source != "search":
                raise ValueError(f"method.genotype={self.source} trains a fixed genotype: its stages must be "
                                 f"retrain only (stage {st.name} is a search)")
        self.genotype: dict | None = None       # the derived / drawn / given genotype
        self.derived_final = False              # the final model is the derived network (not the supernet)
        self.phase = None
        self.genotype_path = None
        self._split: HeldOutSplit | None = None
        self._arch_opt: torch.optim.Optimizer | None = None
        self._arch_opt_state = None
        self._alpha0: list[torch.Tensor] | None = None
        self._history: list[dict] = []           # genotype after each search epoch
        self._arch_steps = 0
        self._arch_loss: float | None = None
        self._skip_epochs = 0
        self._space: dict | None = None
        self._final_weights: dict | None = None

    # ---- structure --------------------------------------------------------------------------------------------
    def _build_derived(self, genotype: dict, ctx: RunContext) -> nn.Module:
        from models import build_model
        space = self._space
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(ctx.seed))
            return build_model("nasb_cell", num_classes=ctx.num_classes, in_channels=ctx.in_channels,
                               image_size=ctx.image_size, spec=self.spec, genotype=genotype, width=space["width"],
                               cells=space["cells"], act=space["act"])

    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        from models.binary import build_binary_counterpart
        from models.nasb import NASBNet, NASBSupernet
        kind = "supernet" if isinstance(model, NASBSupernet) else "cell" if isinstance(model, NASBNet) else None
        if kind is None:
            raise ValueError("method=nasb needs model=nasb_supernet (genotype: search | random) or model=nasb_cell "
                             f"(genotype: model); got {type(model).__name__}")
        kw = model.build_kwargs
        self._space = {"width": kw["width"], "cells": list(kw["cells"]), "act": kw["act"]}
        if kind == "supernet":      # DARTS: search on a shallower proxy, retrain the genotype on the full skeleton
            self._space["width"] = int(self.derived_width or kw["width"])
            self._space["cells"] = [int(c) for c in (self.derived_cells or kw["cells"])]
            self._space.update(nodes=kw["nodes"], normal_ops=list(kw["normal_ops"]),
                               reduce_ops=list(kw["reduce_ops"]))
        if self.derived_final and self.genotype is not None:      # evaluate.py: the saved final structure
            return self._build_derived(self.genotype, ctx)
        if self.source == "model":
            if kind != "cell":
                raise ValueError("method.genotype=model needs model=nasb_cell (a genotype)")
            self.genotype, self.derived_final = model.genotype, True
            return self.decorate(build_binary_counterpart(model, self.spec, num_classes=ctx.num_classes,
                                                          in_channels=ctx.in_channels, image_size=ctx.image_size,
                                                          **self.arch_kwargs(ctx)), ctx)
        if kind != "supernet":
            raise ValueError(f"method.genotype={self.source} needs model=nasb_supernet (the search space)")
        if self.source == "random":
            sp = self._space
            self.genotype = random_genotype(sp["normal_ops"], sp["reduce_ops"], sp["nodes"], self.k, self.generator)
            self.derived_final = True
            return self._build_derived(self.genotype, ctx)
        return build_binary_counterpart(model, self.spec, num_classes=ctx.num_classes, in_channels=ctx.in_channels,
                                        image_size=ctx.image_size, **self.arch_kwargs(ctx))

    # ---- stages -----------------------------------------------------------------------------------------------
    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        model = super().on_stage_start(stage, model, ctx)
        self.phase = stage.params.get("phase")
        if self.phase == "search":
            self._split = HeldOutSplit(ctx.train_loader, self.arch_split, ctx.seed)
            self._arch_batch_size = int(self.arch_batch or ctx.train_loader.batch_size)
            self._arch_opt = torch.optim.Adam(model.arch_parameters(), lr=self.arch_lr, betas=self.arch_betas,
                                              weight_decay=self.arch_wd)
            if self._arch_opt_state is not None:
                self._arch_opt.load_state_dict(self._arch_opt_state)
                self._arch_opt_state = None
            if self._alpha0 is None:
                self._alpha0 = [a.detach().cpu().clone() for a in model.arch_parameters()]
            self._skip_epochs = self.warmup_epochs
        return model

    def on_stage_end(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        if stage.params.get("phase") != "search":
            return model
        if self._split is not None:
            self._split.restore()
            self._split = None
        self._record_shift(model)
        self.genotype = self._derive(model)
        self._final_weights = {k: [[round(v, 4) for v in row] for row in mixed_op_weights(a.detach().cpu()).tolist()]
                               for k, a in zip(("normal", "reduce"), model.arch_parameters())}
        self._write_genotype(ctx)
        names = [s.name for s in self.stages()]
        later = self.stages()[names.index(stage.name) + 1:] if stage.name in names else []
        if any(s.params.get("phase") == "retrain" for s in later):
            self.derived_final = True
            return self._build_derived(self.genotype, ctx)
        return model

    def _derive(self, model: nn.Module) -> dict:
        sp = self._space
        return derive_genotype(model.alphas_normal, model.alphas_reduce, sp["normal_ops"], sp["reduce_ops"],
                               sp["nodes"], self.k)

    def _write_genotype(self, ctx: RunContext) -> None:
        out_dir = getattr(ctx, "out_dir", None)
        if not out_dir:
            return
        path = os.path.join(out_dir, GENOTYPE_FILE)
        sp = self._space
        header = ["# NASB derived architecture: a model config (methods/nasb.py, docs/nasb.md).",
                  f"# Searched with seed {ctx.seed}; genotype {genotype_str(self.genotype)}",
                  "# Train it: python train.py model=nasb_cell model.genotype=<this file> method=nasb method.genotype=model "
                  "'method.stages=[{name: retrain, phase: retrain}]'",
                  "# or copy it to conf/model/nasb_derived_<tag>.yaml and use model=nasb_derived_<tag>."]
        for kind, rows in (self._final_weights or {}).items():
            header.append(f"# softmax(alpha_{kind}) per edge: {rows}")
        body = {"name": "nasb_cell", "genotype": self.genotype, "width": sp["width"], "cells": sp["cells"],
                "act": sp["act"]}
        write_text("\n".join(header) + "\n" + yaml.safe_dump(body, default_flow_style=None, sort_keys=False), path)
        self.genotype_path = path

    # ---- per step: the bilevel alternation ----------------------------------------------------------------------
    def after_backward(self, model: nn.Module, step: int) -> None:
        if self.phase == "search":           # alpha follows L_val only: the weight optimizer must not move it
            for a in model.arch_parameters():
                a.grad = None

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.phase != "search" or self._skip_epochs > 0:
            return
        x, y = self._split.sample(self._arch_batch_size, self.generator)
        self._arch_loss = arch_step(model, self._arch_opt, x, y)
        self._arch_steps += 1

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        super().on_epoch_end(model, epoch, ctx)
        if self.phase != "search":
            return
        if self._skip_epochs > 0:
            self._skip_epochs -= 1
        self._record_shift(model)
        self._history.append(self._derive(model))

    # ---- reporting and state ----------------------------------------------------------------------------------
    def metrics(self, model: nn.Module) -> dict:
        out = {**super().metrics(model), "nasb_genotype_source": self.source}
        if self.genotype is not None:
            out["genotype"] = genotype_str(self.genotype)
            out["conv_edges"] = conv_edges(self.genotype)
        if self.genotype_path:
            out["genotype_file"] = self.genotype_path
        if self._arch_steps:
            out["arch_steps"] = self._arch_steps
            out["arch_loss_last"] = self._arch_loss
        if self._final_weights:
            out["alpha_softmax_final"] = self._final_weights
        if self._alpha_shift is not None:
            out["alpha_shift_max"] = self._alpha_shift
        if self._history:
            out["genotype_per_epoch"] = [genotype_str(g) for g in self._history]
            out["edge_agreement_per_epoch"] = [round(edge_agreement(a, b), 4)
                                               for a, b in zip(self._history, self._history[1:])]
        return out

    _alpha_shift: float | None = None

    def _record_shift(self, model: nn.Module) -> None:
        if self._alpha0 is not None and hasattr(model, "arch_parameters"):
            self._alpha_shift = max(float((a.detach().cpu() - a0).abs().max())
                                    for a, a0 in zip(model.arch_parameters(), self._alpha0))

    def structure_state(self) -> dict:
        return {"genotype": self.genotype, "derived_final": self.derived_final} if self.derived_final else {}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "genotype": self.genotype, "derived_final": self.derived_final,
                "arch_opt": self._arch_opt.state_dict() if self._arch_opt is not None else self._arch_opt_state,
                "alpha0": self._alpha0, "history": list(self._history), "arch_steps": self._arch_steps,
                "arch_loss": self._arch_loss, "skip_epochs": self._skip_epochs, "final_weights": self._final_weights,
                "alpha_shift": self._alpha_shift, "genotype_path": self.genotype_path}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.genotype = state.get("genotype", self.genotype)
        self.derived_final = bool(state.get("derived_final", self.derived_final))
        if state.get("arch_opt") is not None:
            if self._arch_opt is not None:
                self._arch_opt.load_state_dict(state["arch_opt"])
            else:
                self._arch_opt_state = state["arch_opt"]
        self._alpha0 = state.get("alpha0", self._alpha0)
        self._history = list(state.get("history", self._history))
        self._arch_steps = int(state.get("arch_steps", self._arch_steps))
        self._arch_loss = state.get("arch_loss", self._arch_loss)
        self._skip_epochs = int(state.get("skip_epochs", self._skip_epochs))
        self._final_weights = state.get("final_weights", self._final_weights)
        self._alpha_shift = state.get("alpha_shift", self._alpha_shift)
        self.genotype_path = state.get("genotype_path", self.genotype_path)

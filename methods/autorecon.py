"""AutoReCon: NAS-based reconstruction for data-free compression (Zhu et al., IJCAI 2021; docs/autorecon.md).

AutoReCon replaces GDFQ's hand-designed generator by one searched over a cell space, with the reconstruction loss as
the search objective, then runs GDFQ's pipeline (methods/gdfq.py) with the derived generator. No search code is
public: everything marked *inferred* below is our reading of the paper's abstract/introduction and of the search
space that the co-author code (iamkanghyunchoi/ait, ``AutoReCon_AIT``) decodes its discovered generators from.

- **Search space** (methods/common/generator_cells.py, ``CellGenerator(genotype=None)``): three x2 cells; per cell 2
  up edges over ``UPS`` {nearest, bilinear}, 5 op edges over ``OPS`` {none, skip_connect, conv_1x1, conv_3x3,
  conv_5x5, dil_conv_3x3, dil_conv_5x5}, and (cells 1-2) 6 cross-cell edges over ``CROSS`` {none_up, nearest,
  bilinear}: 33 edges, architecture parameters alpha_up (6 x 2), alpha_op (15 x 7), alpha_cross (12 x 3).
- **Continuous relaxation** (``relaxed_weights``, ``mixed_op``): o_bar_e(x) = sum_o softmax(alpha_e)_o o(x)
  (DARTS; *inferred*: the paper says "super-net").
- **Reconstruction loss** (``reconstruction_loss`` = GDFQ's ``generator_loss`` on GDFQ's ``teacher_forward``):
  L_r(w, alpha) = CE(T(G_{w,alpha}(z, y)), y) + bns_weight * L_BNS, z ~ N(0, I), y ~ U{0..C-1}, T the fixed
  full-precision teacher.
- **Search** (``search_generator``; *inferred*: first-order DARTS, alternating per iteration): an architecture step
  alpha <- alpha - xi * grad_alpha L_r (``arch_step``: Adam, DARTS's lr 3e-4, betas (0.5, 0.999), weight decay
  1e-3) on one generated batch, then a weight step w <- w - eta * grad_w L_r (``weight_step``: GDFQ's generator
  Adam, lr 1e-3, betas (0.5, 0.999)) on a fresh batch (fresh samples play DARTS's train/validation split).
  ``search.width`` may narrow the search space's channels (DARTS searches narrower than it trains).
- **Derivation** (``derive_genotype``): per edge, op_e = argmax_o softmax(alpha_e)_o, zero ops included (the
  published genotypes pick ``none`` / ``none_up`` on some edges, so derivation cannot exclude them).
- **Mechanism signal** (``alpha_entropy_ratio``): mean over edges of H(softmax(alpha_e)) / log K_e: 1 when the
  search left every edge uniform, lower as it commits.
- **Then GDFQ** with the derived generator built fresh at full width (``make_generator``): warm-up, KD fine-tune,
  quantizer and losses are GDFQ's, unchanged.

``method.generator``: ``search`` (the default) runs the search; a registered name (``ait_discovered_cifar10``, ...,
``gdfq_cifar``) skips it and trains that generator (the authors' discovered ones: no search cost). The derived
genotype is printed and written to ``<run dir>/autorecon_genotype.yaml`` (with the final softmax(alpha) and the
search curve); a resumed or re-evaluated run reads it back instead of searching again, and a run killed during the
search continues it from ``<run dir>/autorecon_search_state.pt`` (saved every 20 iterations).
"""
from __future__ import annotations

import math
import os

import torch
import yaml

from methods import RunContext, register_method
from core.atomic_files import save_tensors, write_text
from methods.common.generator_cells import CHOICES, ROWS, CellGenerator, relaxed_weights, mixed_op  # noqa: F401
from methods.gdfq import GDFQ, generator_loss
from methods.common.ranks import average_grads

GENOTYPE_FILE = "autorecon_genotype.yaml"
SEARCH_STATE_FILE = "autorecon_search_state.pt"   # the search in progress; removed once the genotype file is written


def reconstruction_loss(method: GDFQ, G, z, y) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_r = CE(T(G(z, y)), y) + bns_weight * L_BNS (GDFQ's generator loss; the teacher's BN hooks give L_BNS)."""
    t_logits, bns = method.teacher_forward(G(z, y))
    return generator_loss(t_logits, y, bns, method.bns_weight), bns, (t_logits.argmax(1) == y).float().mean()


def _sample(n: int, latent_dim: int, num_classes: int, rng: torch.Generator, device):
    z = torch.randn(n, latent_dim, generator=rng).to(device)
    y = torch.randint(0, num_classes, (n,), generator=rng).to(device)
    return z, y


def _step(method, G, opt, z, y):
    G.zero_grad(set_to_none=True)
    loss, bns, acc = reconstruction_loss(method, G, z, y)
    loss.backward()
    average_grads(p for g in opt.param_groups for p in g["params"])   # one generator across DDP ranks
    opt.step()
    return float(loss.detach()), float(bns.detach()), float(acc)


def arch_step(method, G, arch_opt, z, y):
    """alpha <- alpha - xi * grad_alpha L_r(w, alpha) (``arch_opt`` holds only the alphas; w unchanged)."""
    return _step(method, G, arch_opt, z, y)


def weight_step(method, G, weight_opt, z, y):
    """w <- w - eta * grad_w L_r(w, alpha) (``weight_opt`` holds only the weights; alpha unchanged)."""
    return _step(method, G, weight_opt, z, y)


def derive_genotype(G: CellGenerator) -> dict:
    """op_e = argmax_o softmax(alpha_e)_o on every edge (zero ops included)."""
    return {k: [CHOICES[k][int(i)] for i in getattr(G, f"alpha_{k}").detach().argmax(dim=1)] for k in ROWS}


def alpha_entropy_ratio(G: CellGenerator) -> float:
    """mean_e H(softmax(alpha_e)) / log K_e (1 = every edge uniform)."""
    ratios = []
    for k in ROWS:
        p = relaxed_weights(getattr(G, f"alpha_{k}").detach())
        ratios.append((-(p * p.clamp_min(1e-12).log()).sum(1) / math.log(p.shape[1])))
    return float(torch.cat(ratios).mean())


def genotype_str(genotype: dict) -> str:
    """One line per cell: up0/up1 | c0..c4 | cross0..5."""
    out = []
    for c in range(3):
        part = f"cell{c}: up {'/'.join(genotype['up'][2 * c:2 * c + 2])} | ops {', '.join(genotype['op'][5 * c:5 * c + 5])}"
        if c:
            part += f" | cross {', '.join(genotype['cross'][6 * (c - 1):6 * c])}"
        out.append(part)
    return "\n".join(out)


def search_generator(method: GDFQ, G: CellGenerator, steps: int, batch_size: int, rng: torch.Generator,
                     arch_optim: dict, weight_optim: dict, log_every: int = 10, state_path: str | None = None,
                     save_every: int = 20) -> list[dict]:
    """Alternating first-order search: per iteration an ``arch_step`` then a ``weight_step``, each on a fresh
    generated batch. Returns the curve (every ``log_every`` iterations and the last).

    With ``state_path``, the search state (G with alpha, both optimizers, the z/y stream, the curve) is saved there
    every ``save_every`` iterations and a search that finds one continues from it: a killed search resumes where it
    was saved and ends as the uninterrupted one would."""
    a = arch_optim
    arch_opt = torch.optim.Adam(G.arch_parameters(), lr=float(a.get("lr", 3e-4)),
                                betas=tuple(a.get("betas", (0.5, 0.999))), weight_decay=float(a.get("weight_decay", 1e-3)))
    w = weight_optim
    weight_opt = torch.optim.Adam(G.weight_parameters(), lr=float(w.get("lr", 1e-3)),
                                  betas=tuple(w.get("betas", (0.5, 0.999))), weight_decay=float(w.get("weight_decay", 0)))
    G.train()
    start, curve = 0, []
    if state_path and os.path.exists(state_path):
        saved = torch.load(state_path, weights_only=True)
        G.load_state_dict(saved["G"])
        arch_opt.load_state_dict(saved["arch_opt"])
        weight_opt.load_state_dict(saved["weight_opt"])
        rng.set_state(saved["rng"])
        start, curve = int(saved["step"]), list(saved["curve"])
        print(f"[autorecon search] resuming at step {start}/{steps} from {state_path}", flush=True)
    for t in range(start, steps):
        la, _, _ = arch_step(method, G, arch_opt, *_sample(batch_size, method.latent_dim, method.num_classes, rng,
                                                           method.device))
        lw, bns, acc = weight_step(method, G, weight_opt, *_sample(batch_size, method.latent_dim, method.num_classes,
                                                                   rng, method.device))
        if (t + 1) % log_every == 0 or t + 1 == steps:
            curve.append({"step": t + 1, "loss_arch": round(la, 4), "loss_w": round(lw, 4), "bns": round(bns, 4),
                          "teacher_acc": round(acc, 4), "alpha_entropy_ratio": round(alpha_entropy_ratio(G), 5)})
            print(f"[autorecon search] step {t + 1}/{steps} L_r(alpha) {la:.4f} L_r(w) {lw:.4f} L_BNS {bns:.4f} "
                  f"teacher acc {acc:.3f} alpha entropy/uniform {curve[-1]['alpha_entropy_ratio']:.4f}", flush=True)
        if state_path and (t + 1) % save_every == 0 and t + 1 < steps:
            save_tensors({"step": t + 1, "G": G.state_dict(), "arch_opt": arch_opt.state_dict(),
                          "weight_opt": weight_opt.state_dict(), "rng": rng.get_state(), "curve": curve}, state_path)
    return curve


@register_method("autorecon")
class AutoReCon(GDFQ):
    family = "datafree"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.generator_name = str(cfg.get("generator", "search"))
        s = cfg.get("search") or {}
        self.search_steps = int(s.get("steps", 100))
        self.search_batch = int(s.get("batch_size", 64))
        self.search_width = int(s.get("width", 64))
        self.width = int(cfg.get("generator_width", 64))
        self.arch_optim = dict(s.get("arch_optim") or {})
        self.weight_optim = dict(s.get("weight_optim") or {"lr": self.lr_g, "betas": list(self.betas_g)})
        if self.search_steps < 0 or self.search_batch < 1 or self.search_width < 1:
            raise ValueError(f"method.search: steps={self.search_steps} >= 0, batch_size={self.search_batch} >= 1 "
                             f"and width={self.search_width} >= 1 are needed")
        self.found: dict | None = None     # genotype, final softmax(alpha), entropy ratio, curve

    def make_generator(self, ctx: RunContext):
        if self.generator_name != "search":
            return super().make_generator(ctx)
        path = os.path.join(ctx.out_dir, GENOTYPE_FILE) if getattr(ctx, "out_dir", None) else None
        if self._saved.get("autorecon"):
            self.found = self._saved["autorecon"]
        elif path and os.path.exists(path):
            with open(path) as f:
                self.found = yaml.safe_load(f)
        else:
            self.found = self.search(ctx)
            if path:      # atomic: a kill mid-write must not leave a truncated file for the resume to read
                write_text(yaml.safe_dump(self.found, sort_keys=False), path)
                state = os.path.join(ctx.out_dir, SEARCH_STATE_FILE)
                if os.path.exists(state):
                    os.remove(state)
        print(f"[autorecon] derived generator ({self.found['search_steps']} search steps, alpha entropy/uniform "
              f"{self.found['alpha_entropy_ratio']:.4f}):\n{genotype_str(self.found['genotype'])}", flush=True)
        return CellGenerator(ctx.num_classes, self.latent_dim, ctx.image_size, ctx.in_channels,
                             genotype=self.found["genotype"], width=self.width)

    def search(self, ctx: RunContext) -> dict:
        """The search on its own random streams (the global one is restored after it, and the z/y draws use a
        generator seeded by the run seed), so the GDFQ part that follows draws as the GDFQ arm does."""
        rng = torch.Generator().manual_seed(int(ctx.seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(ctx.seed))
            G = CellGenerator(ctx.num_classes, self.latent_dim, ctx.image_size, ctx.in_channels, genotype=None,
                              width=self.search_width).to(ctx.device)
            alpha0 = [a.detach().clone() for a in G.arch_parameters()]
            out_dir = getattr(ctx, "out_dir", None)
            curve = search_generator(self, G, self.search_steps, self.search_batch, rng, self.arch_optim,
                                     self.weight_optim, state_path=os.path.join(out_dir, SEARCH_STATE_FILE)
                                     if out_dir else None)
        shift = max(float((a.detach() - a0).abs().max()) for a, a0 in zip(G.arch_parameters(), alpha0))
        return {"genotype": derive_genotype(G), "search_steps": self.search_steps,
                "alpha_entropy_ratio": round(alpha_entropy_ratio(G), 5), "alpha_shift": round(shift, 5),
                "softmax_alpha": {k: [[round(float(v), 4) for v in row]
                                      for row in relaxed_weights(getattr(G, f"alpha_{k}").detach())] for k in ROWS},
                "curve": curve}

    def metrics(self, model):
        out = super().metrics(model)
        if self.found:
            out.update({"search_steps": self.found["search_steps"], "genotype": self.found["genotype"],
                        "alpha_entropy_ratio": self.found["alpha_entropy_ratio"],
                        "alpha_shift": self.found["alpha_shift"]})
        return out

    def state_dict(self):
        state = super().state_dict()
        if self.found:
            state["autorecon"] = self.found
        return state

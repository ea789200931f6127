"""AIP: Adversarial Iterative Pruning based on knowledge transfer (Chang et al., arXiv 2108.13591).

Paper note: ../shared/papers/aip.md (abstract only; no official code); docs/aip.md. What the abstract fixes: the
teacher is the unpruned pretrained network, the student the network being pruned; knowledge is transferred through
**attention maps** and **output features**; a **shallow fully-connected discriminator** plays an adversarial game
with the student on the two networks' outputs; pruning is **iterative, by channel importance**, the transfer
recovering accuracy between pruning intervals. Everything else is inferred (marked *inferred*; the same group's
ICP code, JingfeiChang/ICP-Iterative-clustering-pruning ``main_cifar.py`` / ``common.py``, is the sibling read for
the defaults). The steps, by name:

1. **Schedule** (``flops_schedule``, *inferred*): ``prune_steps`` = K pruning steps; after step k the student keeps
   F_k of the dense FLOPs, ``linear``: F_k = F (1 - R k / K), ``geometric``: F_k = F (1 - R)^(k/K), with R =
   ``flops_reduction``. Each step is followed by a recovery stage (``recover``: its trainer overrides, a fresh
   optimizer and lr schedule per stage, as ICP restarts SGD + cosine after each pruning), the last by ``finetune``.
2. **Widths** (``step_widths``, *inferred*): one uniform rate over the ``scope`` groups of the dense model reaching
   F_k from below (``uniform_rate_for_flops``, the suite's counter); kept count max(1, int(C (1 - rate))).
3. **Channel importance** (``channel_importance``, *inferred*): ``l1`` (default; the L1 norm of the group's producer
   filters, ICP's ``l1_pretrain`` rule) or ``bn`` (|gamma| of the group's BN, network-slimming style), measured on
   the *current* student after its recovery; the most important channels are kept (``top_k``) and cut physically
   (``prune_channels``, weights carried over).
4. **Attention transfer** (``attention_map``, ``attention_loss``; Zagoruyko & Komodakis, the form in ICP's
   ``common.py``): Q(A) = vec(mean_c A_c^2) / ||vec(mean_c A_c^2)||_2 at the outputs of ``attention_layers``;
   L_AT = sum_layers mean((Q_s - Q_t)^2) (mean over batch and positions).
5. **Output-feature transfer** (*inferred*: ICP's KD): L_KD = T^2 KL(softmax(z_t / T) || softmax(z_s / T))
   (batch mean; ``methods.common.distill.kd_loss``), mixed with the task loss by ``kd.alpha``.
6. **Discriminator** (``Discriminator``, ``discriminator_loss``, ``adversarial_loss``; widths and optimiser
   *inferred*): an MLP ``in -> hidden -> 1`` (LeakyReLU 0.2) on the outputs (``disc.input``: logits, or
   softmax(z / T) probabilities). Per training step, first ``disc.steps`` updates of D (Adam) on
   L_D = BCE(D(f_t), 1) + BCE(D(f_s), 0) with f_s detached, then the student's adversarial term
   L_adv = BCE(D(f_s), 1) through the updated, frozen D.
7. **Student objective** (weights *inferred*):
   L = (1 - alpha) L_task + alpha L_KD + ``at_weight`` L_AT + ``adv_weight`` L_adv. ``transfer: false`` drops
   L_KD and L_AT (L = L_task + adv); ``discriminator: false`` drops L_adv (the ablation arms).

Signals in the row's ``extra``: ``disc_acc`` (D's accuracy on the batches it was trained on, before its update:
0.5 = chance; a run where it stays at 0.5 gave the student no adversarial signal), the per-epoch means of every loss
term, and the schedule actually reached (``prune_log``: target and reached FLOPs per step).

Detectors (``data.task=detection``, e.g. ``model=ssd_tiny``): the transfer and discriminator terms above are
defined on classifier logits, and a detector's training forward returns its loss dict, not logits; a detection run
must set ``transfer: false`` and ``discriminator: false`` (refused otherwise, naming both keys), which leaves steps
1-3 and 7 with L = L_task (SSD's localisation + classification loss): iterative pruning by channel importance with
a recovery stage after each step. ``attention_layers`` is not checked when ``transfer`` is off.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.complexity import measure
from methods import Method, Stage, register_method
from methods.common.channel_pruning import (apply_channel_config, channel_groups, filter_l1, kept_width,
                                            prune_channels, scope_groups, top_k, uniform_rate_for_flops)
from methods.common.distill import kd_loss
from methods.common.pruning_report import compression_report
from methods.common.ranks import average_grads

IMPORTANCE = ("l1", "bn")
SCHEDULE = ("linear", "geometric")
DISC_INPUT = ("logits", "probs")


# ---------------------------------------------------------------------------------------------------
# 1-3. schedule, widths, importance
# ---------------------------------------------------------------------------------------------------
def flops_schedule(dense_flops: float, reduction: float, steps: int, schedule: str = "linear") -> list[float]:
    """F_k, k = 1..K: the FLOPs the student may keep after pruning step k."""
    if schedule == "linear":
        return [dense_flops * (1 - reduction * k / steps) for k in range(1, steps + 1)]
    return [dense_flops * (1 - reduction) ** (k / steps) for k in range(1, steps + 1)]


def step_widths(dense: nn.Module, target_flops: float, input_shape, scope: str) -> tuple[dict[str, int], float]:
    """Kept count per ``scope`` group (of the dense model) at one uniform rate reaching ``target_flops`` from below."""
    spec = channel_groups(dense)
    total = measure(dense, input_shape).flops
    reduction = 1 - target_flops / total
    rate = 0.0 if reduction <= 0 else uniform_rate_for_flops(dense, reduction, input_shape, scope)
    return {n: kept_width(spec[n].width, rate) for n in scope_groups(spec, scope)}, rate


def channel_importance(model: nn.Module, group, kind: str = "l1") -> torch.Tensor:
    """Per-channel importance of a group: ``l1`` = filter L1 norm (summed over producers), ``bn`` = sum |gamma|."""
    if kind == "l1":
        return filter_l1(model, group)
    modules = dict(model.named_modules())
    if not group.norms:
        raise ValueError(f"method.importance=bn: group {group.name} has no BatchNorm; use method.importance=l1")
    return sum(modules[b].weight.detach().abs() for b in group.norms)


# ---------------------------------------------------------------------------------------------------
# 4-6. transfer terms and the discriminator
# ---------------------------------------------------------------------------------------------------
def attention_map(a: torch.Tensor) -> torch.Tensor:
    """Q(A) = vec(mean_c A_c^2) / ||vec(mean_c A_c^2)||_2, one row per sample."""
    return F.normalize(a.float().pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """L_AT = sum over layers of mean((Q_s - Q_t)^2)."""
    return sum((attention_map(s) - attention_map(t)).pow(2).mean() for s, t in zip(student, teacher))


class Discriminator(nn.Module):
    """A shallow MLP: ``in_dim -> hidden -> 1`` (``layers`` hidden layers, LeakyReLU 0.2); returns a logit."""

    def __init__(self, in_dim: int, hidden: int = 128, layers: int = 1):
        super().__init__()
        dims = [in_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            blocks += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks, nn.Linear(dims[-1], 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


def discriminator_loss(d: nn.Module, f_teacher: torch.Tensor, f_student: torch.Tensor) -> torch.Tensor:
    """L_D = BCE(D(f_t), 1) + BCE(D(f_s), 0) (means over the batch; f_s detached)."""
    real, fake = d(f_teacher.detach()), d(f_student.detach())
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def adversarial_loss(d: nn.Module, f_student: torch.Tensor) -> torch.Tensor:
    """The student's term L_adv = BCE(D(f_s), 1)."""
    fake = d(f_student)
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def disc_features(logits: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    return logits.float() if kind == "logits" else F.softmax(logits.float() / temperature, dim=1)


# ---------------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------------
@register_method("aip")
class AIP(Method):
    family = "prune"
    supports_detection = True

    def __init__(self, cfg):
        super().__init__(cfg)
        d = cfg.get("disc") or {}
        for key, value, allowed in (("importance", cfg.get("importance", "l1"), IMPORTANCE),
                                    ("schedule", cfg.get("schedule", "linear"), SCHEDULE),
                                    ("disc.input", d.get("input", "logits"), DISC_INPUT)):
            if value not in allowed:
                raise ValueError(f"method.{key}={value!r}; choose one of {allowed}")
        self.steps_k = int(cfg.get("prune_steps", 3))
        if self.steps_k < 1:
            raise ValueError(f"method.prune_steps={self.steps_k}: needs at least 1 pruning step")
        self.reduction = float(cfg.get("flops_reduction", 0.45))
        if not 0.0 <= self.reduction < 1.0:
            raise ValueError(f"method.flops_reduction={self.reduction}: a share of FLOPs to remove, in [0, 1)")
        if cfg.get("stages"):
            raise ValueError("method.stages is not used by aip: set method.prune_steps, method.recover and "
                             "method.finetune (the stages are built from them)")
        self.transfer = bool(cfg.get("transfer", True))
        self.use_disc = bool(cfg.get("discriminator", True))
        kd = cfg.get("kd") or {}
        self.alpha, self.temperature = float(kd.get("alpha", 0.3)), float(kd.get("temperature", 20.0))
        self.at_weight, self.adv_weight = float(cfg.get("at_weight", 1000.0)), float(cfg.get("adv_weight", 0.1))
        self.layers = list(cfg.get("attention_layers") or [])
        self.disc_cfg = {"hidden": int(d.get("hidden", 128)), "layers": int(d.get("layers", 1)),
                         "lr": float(d.get("lr", 2e-4)), "betas": tuple(d.get("betas", (0.5, 0.999))),
                         "steps": int(d.get("steps", 1)), "input": d.get("input", "logits")}
        self.config = None
        self.prune_log: list[dict] = []
        self.signals: dict[str, list[float]] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._teacher = None
        self._input_shape = None
        self._handles: list = []
        self._feats: dict[str, torch.Tensor] = {}
        self.disc = None
        self.disc_opt = None
        self._pending_disc = None

    # ---- stages ------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        def trainer(key):
            return {k: v for k, v in dict(self.cfg.get(key) or {}).items() if v is not None}
        out = [Stage(name=f"prune{k}", trainer=trainer("recover"), params={"prune_step": k},
                     trainer_key="method.recover") for k in range(1, self.steps_k + 1)]
        if self.cfg.get("finetune") is not None:
            out.append(Stage(name="finetune", trainer=trainer("finetune"), params={"prune_step": None},
                             trainer_key="method.finetune"))
        return out

    # ---- structure ---------------------------------------------------------------------------------
    def transform(self, model, ctx):
        self._input_shape = (ctx.in_channels, ctx.image_size, ctx.image_size)
        if self.config is not None:            # evaluate.py (state loaded first): the final structure only
            return apply_channel_config(model, self.config)
        self._teacher = copy.deepcopy(model).eval()
        for p in self._teacher.parameters():
            p.requires_grad_(False)
        if getattr(ctx.train_loader, "task", "classification") == "detection" and (self.transfer or self.use_disc):
            raise ValueError("method.transfer / method.discriminator: AIP's KD, attention and discriminator terms "
                             "are defined on classifier logits; a detection run (data.task=detection) needs "
                             "method.transfer=false method.discriminator=false (iterative pruning + recovery only)")
        modules = dict(model.named_modules())
        missing = [n for n in self.layers if n not in modules] if self.transfer else []
        if missing:
            raise ValueError(f"method.attention_layers: {missing} are not modules of {type(model).__name__} "
                             f"(e.g. {[n for n, _ in model.named_children()][:6]})")
        if not scope_groups(channel_groups(model), self.cfg.get("scope", "inner+plain")):
            raise ValueError(f"method.scope={self.cfg.get('scope')!r}: {type(model).__name__} has no such groups")
        self._build_disc(ctx.num_classes)
        return model

    def _build_disc(self, num_classes: int) -> None:
        c = self.disc_cfg
        self.disc = Discriminator(num_classes, c["hidden"], c["layers"])
        for m in self.disc.modules():        # drawn from the method's generator: a resumed run repeats it
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=0.2, generator=self.generator)
                nn.init.zeros_(m.bias)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=c["lr"], betas=c["betas"])
        if self._pending_disc is not None:
            self.disc.load_state_dict(self._pending_disc["disc"])
            self.disc_opt.load_state_dict(self._pending_disc["disc_opt"])
            self._pending_disc = None

    def prune(self, model: nn.Module, step: int) -> nn.Module:
        """Pruning step ``step`` (1..K): widths at F_step, the current student's most important channels kept."""
        dense_flops = measure(self._teacher, self._input_shape).flops
        target = flops_schedule(dense_flops, self.reduction, self.steps_k, self.cfg.get("schedule", "linear"))[step - 1]
        widths, rate = step_widths(self._teacher, target, self._input_shape, self.cfg.get("scope", "inner+plain"))
        spec = channel_groups(model)
        kind = self.cfg.get("importance", "l1")
        keep = {n: top_k(channel_importance(model, spec[n], kind), min(k, spec[n].width)).tolist()
                for n, k in widths.items() if k < spec[n].width}
        compact = prune_channels(model, keep, spec) if keep else model
        if not keep:
            compact.channel_config = getattr(model, "channel_config", None) or {
                "groups": {n: spec[n].width for n in spec.groups}, "shortcuts": {}}
        self.config = compact.channel_config
        reached = measure(compact, self._input_shape).flops
        self.prune_log = [e for e in self.prune_log if e["step"] != step] + [
            {"step": step, "rate": rate, "target_flops": target, "flops": reached, "dense_flops": dense_flops,
             "pruned_channels": sum(spec[n].width - len(v) for n, v in keep.items())}]
        return compact

    # ---- hooks -------------------------------------------------------------------------------------
    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._feats = [], {}

    def _hook(self, name):
        def fn(module, _inp, out):
            if module.training:
                self._feats[name] = out
        return fn

    def on_stage_start(self, stage, model, ctx):
        self._remove_hooks()
        k = stage.params.get("prune_step")
        if k:
            model = self.prune(model, int(k))
        if self.transfer and self.layers:
            modules = dict(model.named_modules())
            self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.layers]
        self._teacher.to(ctx.device)
        self.disc.to(ctx.device)
        for state in self.disc_opt.state.values():   # (after a resume on another device)
            for key, v in state.items():
                if torch.is_tensor(v) and key != "step":
                    state[key] = v.to(ctx.device)
        return model

    def on_stage_end(self, stage, model, ctx):
        self._remove_hooks()
        return model

    def _add(self, name: str, value: torch.Tensor) -> None:
        v = value.detach().float()
        self._sums[name] = self._sums[name] + v if name in self._sums else v

    def loss(self, model, inputs, outputs, targets, task_loss):
        if not (self.transfer or self.use_disc):
            return task_loss
        with torch.no_grad():
            feats_t: dict[str, torch.Tensor] = {}
            handles = []
            if self.transfer:
                mods = dict(self._teacher.named_modules())
                handles = [mods[n].register_forward_hook(lambda m, i, o, n=n: feats_t.__setitem__(n, o))
                           for n in self.layers]
            try:
                t_out = self._teacher(inputs).float()
            finally:
                for h in handles:
                    h.remove()
        total = task_loss
        self._count += 1
        if self.transfer:
            kd = kd_loss(outputs.float(), t_out, self.temperature)
            total = (1 - self.alpha) * task_loss + self.alpha * kd
            self._add("kd", kd)
            if self.layers:
                at = attention_loss([self._feats[n] for n in self.layers], [feats_t[n] for n in self.layers])
                total = total + self.at_weight * at
                self._add("at", at)
        if self.use_disc:
            c = self.disc_cfg
            f_t = disc_features(t_out, c["input"], self.temperature)
            f_s = disc_features(outputs, c["input"], self.temperature)
            with torch.autocast(inputs.device.type, enabled=False):
                self.disc.requires_grad_(True)
                for i in range(c["steps"]):
                    self.disc_opt.zero_grad(set_to_none=True)
                    d_loss = discriminator_loss(self.disc, f_t, f_s)
                    if i == 0:
                        with torch.no_grad():
                            acc = 0.5 * ((self.disc(f_t) > 0).float().mean() + (self.disc(f_s.detach()) < 0).float().mean())
                        self._add("disc_acc", acc)
                        self._add("d_loss", d_loss)
                    d_loss.backward()
                    average_grads(self.disc.parameters())     # one discriminator across DDP ranks
                    self.disc_opt.step()
                self.disc_opt.zero_grad(set_to_none=True)
                self.disc.requires_grad_(False)       # the student's term moves the student only
                adv = adversarial_loss(self.disc, f_s)
            total = total + self.adv_weight * adv
            self._add("adv", adv)
        return total

    def on_epoch_end(self, model, epoch, ctx):
        if self._count:
            for name, s in self._sums.items():
                self.signals.setdefault(name, []).append(float(s) / self._count)
        self._sums, self._count = {}, 0

    # ---- reporting and state -----------------------------------------------------------------------
    def metrics(self, model):
        out = {"channel_config": self.config, "importance": self.cfg.get("importance", "l1"),
               "transfer": self.transfer, "discriminator": self.use_disc, "prune_log": self.prune_log,
               "signals": self.signals}
        if self.signals.get("disc_acc"):
            out["disc_acc"] = sum(self.signals["disc_acc"]) / len(self.signals["disc_acc"])
        if self._teacher is not None and self._input_shape is not None:
            out.update(compression_report(self._teacher, model, self._input_shape, self.cfg.get("latency")))
        return out

    def state_dict(self):
        out = {**super().state_dict(), "config": self.config, "prune_log": self.prune_log, "signals": self.signals}
        if self.disc is not None:
            out.update(disc=self.disc.state_dict(), disc_opt=self.disc_opt.state_dict())
        return out

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.config = state.get("config")
        self.prune_log = list(state.get("prune_log") or [])
        self.signals = {k: list(v) for k, v in (state.get("signals") or {}).items()}
        if "disc" in state:
            blob = {"disc": state["disc"], "disc_opt": state["disc_opt"]}
            if self.disc is None:
                self._pending_disc = blob
            else:
                self.disc.load_state_dict(blob["disc"])
                self.disc_opt.load_state_dict(blob["disc_opt"])

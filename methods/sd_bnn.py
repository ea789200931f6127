"""SD-BNN: Self-Distribution Binary Neural Networks (Xue et al., arXiv 2103.02394; notes: shared/papers/sd_bnn.md).

No scaling factors; instead learned per-channel *shifts* move the sign distribution of activations and weights.
Every binary conv of the backbone (methods/common/binary.py ``BinaryConv2d``) gets, per sd_bnn.md "Algorithm":

1. **Activation Self Distribution (ASD)** — :class:`ASD`, placed on the binary conv's *input*, after the previous
   BN/activation and before sign (``BinaryConv2d.act_pre``):
       beta(a) = sigmoid(FC2(ReLU(FC1(GAP(a)))))        (SE branch, FCs without bias, reduction r:
                                                         16 on CIFAR, 8 on ImageNet)
       a' = a + beta(a)                                  (broadcast over H x W: a dynamic, input-dependent,
                                                         channel-wise positive bias)
2. **Weight Self Distribution (WSD)** — :class:`WSD` (``BinaryConv2d.weight_pre``), alpha_c initialised to 0:
       mu_c = mean over (C_in, k, k) of w_c, DETACHED
       w'_c = w_c + sigmoid(alpha_c) * 0.01 * mu_c
3. **Binarize**: out = conv(sign(a'), sign(w')), no bias, no scale; BN follows outside.
   CIFAR backward: IR-Net EDE for both (k, t per epoch, Tmin/Tmax 1e-3/1e1 for ResNets, 1e-1/1e1 for VGG-small).
   ImageNet backward: ApproxSign for activations, clipped STE for weights.

**Two-stage ImageNet recipe** (``stages:`` in the ImageNet experiment config): stage 1 "W32A1" real weights and
binary activations, WSD off; stage 2 "W1A1" binary weights with WSD, initialised from stage 1 (the same model
object continues); both with Adam lr 1e-3, linear decay, teacher ResNet-34 through ``trainer.distill``.
Stage params: ``binarize_weights`` (bool), ``wsd`` (bool).

Complexity: the SE branch's two FCs are FP ``nn.Linear`` layers and are counted as FP MACs by
core/complexity.py (the paper's own convention is unknown, sd_bnn.md).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from methods import register_method
from methods.base import RunContext, Stage
from methods.common.binary import BinaryConv2d, BinaryMethod, binary_layers


class ASD(nn.Module):
    """Activation Self Distribution: a' = a + sigmoid(FC2(ReLU(FC1(GAP(a))))), FCs without bias."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def beta(self, a: torch.Tensor) -> torch.Tensor:
        """Per sample and input channel, in (0, 1): shape (N, C)."""
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(a.mean(dim=(2, 3))))))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a + self.beta(a)[:, :, None, None]


class WSD(nn.Module):
    """Weight Self Distribution: w'_c = w_c + sigmoid(alpha_c) * factor * detach(mean(w_c)), alpha_c = 0 at start."""

    def __init__(self, out_channels: int, factor: float = 0.01):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(out_channels))
        self.factor = factor
        self.register_buffer("active", torch.tensor(True))   # off in stage 1 of the ImageNet recipe
        self._enabled = True

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)
        self.active.fill_(bool(value))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "active" in state_dict:
            self._enabled = bool(state_dict[prefix + "active"])

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        mu = w.flatten(1).mean(dim=1).detach()
        shift = torch.sigmoid(self.alpha) * self.factor * mu
        return w + shift.view(-1, *([1] * (w.dim() - 1)))


def attach_self_distribution(model: nn.Module, *, asd: bool = True, wsd: bool = True, reduction: int = 16,
                             factor: float = 0.01, init: str = "official") -> nn.Module:
    """Give every binary conv of ``model`` an ASD (on its input) and a WSD (on its weight).

    ``init="official"``: the ASD FCs get the backbone's own init rule (``model.init_added``: ``kaiming_normal_`` on
    the CIFAR ResNets, whose official ``_weights_init`` runs after the SE layers exist; PyTorch's default on the
    ImageNet Bi-Real net, which has no init loop). ``init="default"`` keeps PyTorch's nn.Linear default (the
    suite's earlier behaviour, ~2.45x smaller std than Kaiming-normal)."""
    if init not in ("official", "default"):
        raise ValueError(f"method.asd.init={init!r} is not one of official, default")
    for m in binary_layers(model):
        if not isinstance(m, BinaryConv2d):
            continue
        if asd:
            m.act_pre = ASD(m.in_channels, reduction)
            if init == "official" and hasattr(model, "init_added"):
                model.init_added(m.act_pre)
        if wsd:
            m.weight_pre = WSD(m.out_channels, factor)
    return model


@register_method("sd_bnn")
class SDBNN(BinaryMethod):
    """ASD + WSD on the IR-Net-style binary backbone (EDE, no scaling) — see the module docstring."""

    default_spec = {"act_estimator": "ede", "weight_estimator": "ede"}
    extra_keys = {"asd": {"enabled", "reduction", "init"}, "wsd": {"enabled", "factor"}}

    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        from models.binary import binary_counterpart_name
        self._imagenet_form = (ctx.image_size > 64 and binary_counterpart_name(model) in ("bireal_resnet18",
                                                                                         "bireal_resnet34")
                               and getattr(model, "build_kwargs", {}).get("stem", "imagenet") != "cifar")
        return super().transform(model, ctx)

    def arch_kwargs(self, ctx: RunContext) -> dict:
        """ImageNet Bi-Real backbone: stem conv -> BN -> max-pool, no PReLU (official birealnet.py)."""
        kwargs = super().arch_kwargs(ctx)
        if getattr(self, "_imagenet_form", False):
            kwargs.setdefault("stem_act", False)
        return kwargs

    def decorate(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        asd = dict(self.cfg.get("asd") or {})
        wsd = dict(self.cfg.get("wsd") or {})
        return attach_self_distribution(model, asd=bool(asd.get("enabled", True)), wsd=bool(wsd.get("enabled", True)),
                                        reduction=int(asd.get("reduction", 16)), factor=float(wsd.get("factor", 0.01)),
                                        init=str(asd.get("init", "official")))

    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        if "wsd" in stage.params:
            for m in model.modules():
                if isinstance(m, WSD):
                    m.enabled = bool(stage.params["wsd"])
        return super().on_stage_start(stage, model, ctx)

    # ---- mechanism signals: does beta vary across samples, does alpha move ------------------------------
    def loss(self, model, inputs, outputs, targets, task_loss):
        self._probe_inputs = inputs          # a reference only (no copy, no sync); read at epoch end
        return task_loss

    @torch.no_grad()
    def beta_stats(self, model: nn.Module, inputs: torch.Tensor) -> dict:
        """ASD's beta on ``inputs`` (eval mode, BN statistics untouched): mean, std across samples (averaged over
        channels and layers) and std across channels (averaged over samples and layers)."""
        betas, hooks = [], []
        for a in (m for m in model.modules() if isinstance(m, ASD)):
            hooks.append(a.register_forward_pre_hook(lambda mod, inp: betas.append(mod.beta(inp[0]).float())))
        was = model.training
        model.eval()
        try:
            model(inputs)
        finally:
            model.train(was)
            for h in hooks:
                h.remove()
        if not betas:
            return {}
        return {"asd_beta_mean": float(torch.stack([b.mean() for b in betas]).mean()),
                "asd_beta_std_samples": float(torch.stack([b.std(dim=0).mean() for b in betas]).mean()),
                "asd_beta_std_channels": float(torch.stack([b.std(dim=1).mean() for b in betas]).mean())}

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        super().on_epoch_end(model, epoch, ctx)
        inputs = getattr(self, "_probe_inputs", None)
        if inputs is not None:
            self._beta = self.beta_stats(model, inputs)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "beta": getattr(self, "_beta", {})}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._beta = dict(state.get("beta") or {})

    def metrics(self, model: nn.Module) -> dict:
        out = super().metrics(model)
        alphas = [m.alpha.detach() for m in model.modules() if isinstance(m, WSD)]
        if alphas:
            alpha = torch.cat(alphas)
            out["wsd_sigmoid_alpha_mean"] = float(torch.sigmoid(alpha).mean())
            out["wsd_alpha_std"] = float(alpha.std())
            out["wsd_alpha_abs_max"] = float(alpha.abs().max())
        out["asd_modules"] = sum(isinstance(m, ASD) for m in model.modules())
        out.update(getattr(self, "_beta", {}))       # beta spread on the last training batch, at the last epoch end
        return out

"""GDFQ: generative low-bitwidth data-free quantization (Xu et al., ECCV 2020); AutoReCon's base (docs/gdfq.md).

No training image is read. Per step (official xushoukai/GDFQ trainer.py, ``train``):

- **Generator** ``G(z, y)``: z ~ N(0, I_latent), y ~ U{0..C-1}; the architecture is a registry key
  (``method.generator``; ``GENERATORS``), so AutoReCon can plug a searched one in. ``gdfq_cifar`` is the official
  CIFAR generator (label embedding times z, linear to 128 x s/4 x s/4, two x2 upsamplings, tanh, affine-free BN).
- **BN-statistics loss** (``bns_loss``): L_BNS = (1/L) sum_l [MSE(mu_l, running_mean_l) + MSE(var_l, running_var_l)],
  mu_l / var_l the batch mean and biased variance over (N, H, W) of the *input* of every BatchNorm2d of the
  full-precision teacher; MSE is a mean over channels.
- **Generator loss** (``generator_loss``): L_G = CE(T(G(z, y)), y) + bns_weight * L_BNS (bns_weight = 0.1); Adam
  lr 1e-3, betas (0.5, 0.999), x0.1 at absolute epochs [100, 200, 300]; G trains in every epoch.
- **Quantizer** (``uniform_quantize``): asymmetric uniform b-bit, s = (2^b - 1) / max(M - m, 1e-8),
  z = round(s m) + 2^(b-1), q = clamp(round(s x - z), -2^(b-1), 2^(b-1) - 1), x^ = (q + z) / s, backward identity
  (straight-through). Weights: per output channel, m/M the row min/max of the weight, recomputed every forward
  (``QuantConv2d`` / ``QuantLinear``; all conv and linear layers, first and last included). Activations
  (``ActQuant``): per tensor, after every ReLU, m/M an EMA (beta 0.9) of the batch min/max with the official
  "bias correction" (``act_ema_update``; it feeds the corrected value back, so early values overshoot), updated in
  training forwards of the first ``act_range_epochs`` (4) absolute epochs only.
- **Student loss / KD fine-tune** (``student_loss``): L_S = alpha T^2 KL(softmax(t/T) || softmax(s/T)) + CE(s, y),
  T = 20, alpha = 1, on the detached generated images, with the official ``nn.KLDivLoss()`` reduction (mean over
  all N x C elements, i.e. batchmean / C; ``kd_reduction``). The student runs with its BN in eval mode (running
  statistics; ``student_bn``). Warm-up: the first ``warmup_epochs`` train only G (the engine's ``warmup`` stage
  at student lr 0), then the ``finetune`` stage updates the student with the trainer's SGD.

The fine-tune is the engine's trainer: the method supplies the batches (``train_batches``: generated images, the
generator step done in ``loss`` on the same images) and the loss. The teacher is the pretrained model itself,
held by the method (its BN hooks are needed for L_BNS), not ``trainer.distill``.

Variants (official behaviour the default): ``kd_reduction`` mean | batchmean; ``act_ema`` official | debiased
(a textbook bias-corrected EMA); ``student_bn`` eval | train; ``data_source`` generator | real (the full-data QAT
upper bound: the same student and loss on real training images, no generator).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from methods import Method, RunContext, Stage, register_method
import methods.common.generator_cells  # noqa: F401  (registers the cell generators, e.g. ait_discovered_cifar10)
from methods.common.generators import (GENERATORS, CategoricalConditionalBN, build_generator,  # noqa: F401
                                       register_generator)
from methods.common.ranks import average_grads


# ---- quantizer -------------------------------------------------------------------------------------------------
def quant_params(bits: int, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and (signed, integral) zero point of the asymmetric range [lo, hi]."""
    scale = (2 ** bits - 1) / torch.clamp(hi - lo, min=1e-8)
    zero = torch.round(scale * lo) + 2 ** (bits - 1)
    return scale, zero


class _UniformQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits, lo, hi):
        scale, zero = quant_params(bits, lo, hi)
        shape = (-1,) + (1,) * (x.dim() - 1) if scale.numel() > 1 else ()
        if shape:
            scale, zero = scale.view(shape), zero.view(shape)
        n = 2 ** (bits - 1)
        q = torch.clamp(torch.round(scale * x - zero), -n, n - 1)
        return (q + zero) / scale

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


def uniform_quantize(x: torch.Tensor, bits: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """GDFQ/ZeroQ asymmetric uniform quantizer with a straight-through backward; lo/hi per row (dim 0) or scalar."""
    return _UniformQuant.apply(x, int(bits), lo.detach(), hi.detach())


def weight_range(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = w.detach().reshape(w.shape[0], -1)
    return flat.min(dim=1).values, flat.max(dim=1).values


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    lo, hi = weight_range(w)
    return uniform_quantize(w, bits, lo, hi)


class QuantConv2d(nn.Conv2d):
    """Conv2d with per-output-channel b-bit weights (recomputed each forward)."""

    def forward(self, x):
        return self._conv_forward(x, quantize_weight(self.weight, self.weight_bits), self.bias)


class QuantLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, quantize_weight(self.weight, self.weight_bits), self.bias)


def act_ema_update(lo, hi, beta_t, batch_lo, batch_hi, beta: float, mode: str):
    """One range update. official: v <- (beta v + (1-beta) x) / (1 - beta^t) with the corrected v fed back
    (GDFQ/ZeroQ QuantAct). debiased: the raw EMA is kept and divided by (1 - beta^t) when used (here: stored raw
    in ``lo``/``hi`` of the raw buffers, see ActQuant)."""
    beta_t = beta_t * beta
    lo = (lo * beta + batch_lo * (1 - beta)) / (1 - beta_t) if mode == "official" else lo * beta + batch_lo * (1 - beta)
    hi = (hi * beta + batch_hi * (1 - beta)) / (1 - beta_t) if mode == "official" else hi * beta + batch_hi * (1 - beta)
    return lo, hi, beta_t


class ActQuant(nn.Module):
    """Per-tensor b-bit activation quantizer with an EMA range, updated while ``running`` and in training mode."""

    def __init__(self, bits: int, beta: float = 0.9, mode: str = "official"):
        super().__init__()
        self.bits, self.beta, self.mode, self.running = int(bits), float(beta), mode, True
        self.register_buffer("x_min", torch.zeros(1))
        self.register_buffer("x_max", torch.zeros(1))
        self.register_buffer("beta_t", torch.ones(1))

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "official":
            return self.x_min, self.x_max
        corr = 1 - self.beta_t
        return self.x_min / corr, self.x_max / corr

    def forward(self, x):
        if self.training and self.running:
            with torch.no_grad():
                lo, hi, bt = act_ema_update(self.x_min, self.x_max, self.beta_t, x.min(), x.max(), self.beta, self.mode)
                self.x_min.copy_(lo)
                self.x_max.copy_(hi)
                self.beta_t.copy_(bt)
        lo, hi = self.range()
        return uniform_quantize(x, self.bits, lo, hi)


def _pre(aq):
    return lambda module, args: (aq(args[0]),) + tuple(args[1:])


def _post(aq):
    return lambda module, args, out: aq(out)


def quantize_model(model: nn.Module, w_bits: int, a_bits: int, act_ema: str = "official") -> list[ActQuant]:
    """In place: every Conv2d/Linear gets b-bit weights; an ActQuant after every ReLU. For the CIFAR ResNets the
    ReLU outputs are: the stem's and every block's output (quantized where the next block or the pool reads them)
    and the block's inner ReLU (the input of conv2). Other models: the input of every layer but the first.
    Returns the activation quantizers (submodules, so their ranges are in the state dict)."""
    first = None
    for name, m in list(model.named_modules()):
        for cname, child in list(m.named_children()):
            if type(child) is nn.Conv2d:
                q = QuantConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                                child.dilation, child.groups, child.bias is not None)
            elif type(child) is nn.Linear:
                q = QuantLinear(child.in_features, child.out_features, child.bias is not None)
            else:
                continue
            q.load_state_dict(child.state_dict())
            q.to(child.weight.device)
            q.weight_bits, q.act_bits = int(w_bits), 32
            setattr(m, cname, q)
            if first is None:
                first = q
    aqs = []

    def attach(host, attr, hook_kind):
        aq = ActQuant(a_bits, mode=act_ema)
        host.add_module(attr, aq)
        aqs.append(aq)
        if hook_kind == "pre":
            host.register_forward_pre_hook(_pre(aq))
        else:
            host.register_forward_hook(_post(aq))

    from models.cifar_resnet import BasicBlockA, CifarResNet
    if isinstance(model, CifarResNet):
        blocks = [b for b in model.modules() if isinstance(b, BasicBlockA)]
        for b in blocks:
            attach(b, "act_in", "pre")         # stem ReLU / previous block's ReLU output
            attach(b.conv2, "act_in", "pre")   # the block's inner ReLU output
            b.conv1.act_bits = b.conv2.act_bits = int(a_bits)
        attach(blocks[-1], "act_out", "post")  # the last block's ReLU output (read by the pool)
    else:
        for m in model.modules():
            if isinstance(m, (QuantConv2d, QuantLinear)) and m is not first:
                attach(m, "act_in", "pre")
                m.act_bits = int(a_bits)
    return aqs


# ---- generators ------------------------------------------------------------------------------------------------
@register_generator("gdfq_cifar")
class GDFQGenerator(nn.Module):
    """The official GDFQ CIFAR generator: emb(y) * z -> Linear -> BN -> up x2 -> conv3 -> BN(eps 0.8) -> LReLU(0.2)
    -> up x2 -> conv3 -> BN(eps 0.8) -> LReLU -> conv3 to the image channels -> tanh -> BN(affine=False).
    (The official 0.8 is BatchNorm2d's second positional argument, eps; kept.)"""

    def __init__(self, num_classes: int, latent_dim: int = 100, image_size: int = 32, channels: int = 3):
        super().__init__()
        self.latent_dim, self.init_size = latent_dim, image_size // 4
        self.label_emb = nn.Embedding(num_classes, latent_dim)
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 128 * self.init_size ** 2))
        self.conv_blocks0 = nn.Sequential(nn.BatchNorm2d(128))
        self.conv_blocks1 = nn.Sequential(nn.Conv2d(128, 128, 3, 1, 1), nn.BatchNorm2d(128, eps=0.8),
                                          nn.LeakyReLU(0.2))
        self.conv_blocks2 = nn.Sequential(nn.Conv2d(128, 64, 3, 1, 1), nn.BatchNorm2d(64, eps=0.8), nn.LeakyReLU(0.2),
                                          nn.Conv2d(64, channels, 3, 1, 1), nn.Tanh(),
                                          nn.BatchNorm2d(channels, affine=False))

    def forward(self, z, labels):
        h = self.l1(self.label_emb(labels) * z).view(z.shape[0], 128, self.init_size, self.init_size)
        h = F.interpolate(self.conv_blocks0(h), scale_factor=2)
        h = F.interpolate(self.conv_blocks1(h), scale_factor=2)
        return self.conv_blocks2(h)


@register_generator("gdfq_imagenet")
class GDFQImageNetGenerator(nn.Module):
    """The official GDFQ ImageNet generator: z -> Linear -> cond. BN -> up x2 -> conv3 -> cond. BN(eps 0.8) -> LReLU
    -> up x2 -> conv3 -> cond. BN(eps 0.8) -> LReLU -> conv3 -> tanh -> BN(affine=False); class-conditional through
    categorical conditional BN (official: 1000 classes always; here ``num_classes``)."""

    def __init__(self, num_classes: int, latent_dim: int = 100, image_size: int = 224, channels: int = 3):
        super().__init__()
        self.latent_dim, self.init_size = latent_dim, image_size // 4
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 128 * self.init_size ** 2))
        self.bn0 = CategoricalConditionalBN(num_classes, 128)
        self.conv1, self.bn1 = nn.Conv2d(128, 128, 3, 1, 1), CategoricalConditionalBN(num_classes, 128, eps=0.8)
        self.conv2, self.bn2 = nn.Conv2d(128, 64, 3, 1, 1), CategoricalConditionalBN(num_classes, 64, eps=0.8)
        self.conv3, self.out_bn = nn.Conv2d(64, channels, 3, 1, 1), nn.BatchNorm2d(channels, affine=False)

    def forward(self, z, labels):
        h = self.l1(z).view(z.shape[0], 128, self.init_size, self.init_size)
        h = F.interpolate(self.bn0(h, labels), scale_factor=2)
        h = F.leaky_relu(self.bn1(self.conv1(h), labels), 0.2)
        h = F.interpolate(h, scale_factor=2)
        h = F.leaky_relu(self.bn2(self.conv2(h), labels), 0.2)
        return self.out_bn(torch.tanh(self.conv3(h)))


# ---- losses ----------------------------------------------------------------------------------------------------
class BNStatHooks:
    """Forward hooks on every BatchNorm2d of a network: the batch mean and biased variance of each BN's input."""

    def __init__(self, net: nn.Module):
        self.bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        self.means: list[torch.Tensor] = []
        self.vars: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in self.bns]

    def _hook(self, module, args, out):
        x = args[0]
        self.means.append(x.mean(dim=(0, 2, 3)))
        self.vars.append(x.var(dim=(0, 2, 3), unbiased=False))

    def clear(self):
        self.means, self.vars = [], []

    def remove(self):
        for h in self.handles:
            h.remove()


def bns_loss(means, variances, running_means, running_vars) -> torch.Tensor:
    """L_BNS = (1/L) sum_l [MSE(mu_l, running_mean_l) + MSE(var_l, running_var_l)] (MSE: mean over channels)."""
    total = sum(F.mse_loss(m, rm) + F.mse_loss(v, rv) for m, v, rm, rv in zip(means, variances, running_means,
                                                                               running_vars))
    return total / len(means)


def generator_loss(teacher_logits, labels, bns: torch.Tensor, bns_weight: float = 0.1) -> torch.Tensor:
    """L_G = CE(T(G(z, y)), y) + bns_weight * L_BNS (the CE on the generator's class condition y)."""
    return F.cross_entropy(teacher_logits, labels) + bns_weight * bns


def student_loss(student_logits, teacher_logits, labels, temperature: float = 20.0, alpha: float = 1.0,
                 reduction: str = "mean") -> torch.Tensor:
    """KD fine-tune loss L_S = alpha T^2 KL(softmax(t/T) || softmax(s/T)) + CE(s, y). reduction "mean" is the
    official nn.KLDivLoss() default (mean over N x C elements); "batchmean" the textbook KL per sample."""
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1), reduction="sum")
    kl = kl / (student_logits.numel() if reduction == "mean" else student_logits.shape[0])
    return kl * alpha * t * t + F.cross_entropy(student_logits, labels)


def _bn_eval_pre_hook(module, args):
    module.training = False


# ---- the method ------------------------------------------------------------------------------------------------
class GeneratedBatches:
    """The trainer's batch source: per step, a generated batch (images detached for the student); the graph-attached
    images and labels stay with the method for its generator step in ``loss``."""

    def __init__(self, method: "GDFQ", steps: int, epoch_offset: int):
        self.method, self.steps, self.epoch_offset = method, steps, epoch_offset

    def __len__(self):
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.method.start_epoch(self.epoch_offset + epoch)

    def __iter__(self):
        for _ in range(self.steps):
            yield self.method.generate()


@register_method("gdfq")
class GDFQ(Method):
    family = "datafree"

    def __init__(self, cfg):
        super().__init__(cfg)
        c = cfg
        self.w_bits, self.a_bits = int(c.get("w_bits", 4)), int(c.get("a_bits", 4))
        self.warmup_epochs = int(c.get("warmup_epochs", 4))
        self.act_range_epochs = int(c.get("act_range_epochs", 4))
        self.iters = int(c.get("iters_per_epoch", 200))
        self.batch_size = int(c.get("batch_size", 200))
        self.latent_dim = int(c.get("latent_dim", 100))
        self.temperature, self.alpha = float(c.get("temperature", 20.0)), float(c.get("alpha", 1.0))
        self.bns_weight = float(c.get("bns_weight", 0.1))
        self.kd_reduction = str(c.get("kd_reduction", "mean"))
        self.act_ema = str(c.get("act_ema", "official"))
        self.student_bn = str(c.get("student_bn", "eval"))
        self.data_source = str(c.get("data_source", "generator"))
        g = c.get("generator_optim") or {}
        self.lr_g, self.betas_g = float(g.get("lr", 1e-3)), tuple(g.get("betas", (0.5, 0.999)))
        self.milestones_g, self.gamma_g = list(g.get("milestones", [100, 200, 300])), float(g.get("gamma", 0.1))
        self.generator_name = str(c.get("generator", "gdfq_cifar"))
        for key, val, ok in (("kd_reduction", self.kd_reduction, ("mean", "batchmean")),
                             ("act_ema", self.act_ema, ("official", "debiased")),
                             ("student_bn", self.student_bn, ("eval", "train")),
                             ("data_source", self.data_source, ("generator", "real"))):
            if val not in ok:
                raise ValueError(f"method.{key}={val!r}: expected one of {ok}")
        self.epoch, self.pending, self.log = 0, None, {}
        self.teacher = self.G = self.opt_g = self.hooks = None
        self.aqs: list[ActQuant] = []
        self._saved: dict = {}
        self._real_offset = 0

    # structure
    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.num_classes, self.device = ctx.num_classes, ctx.device
        self.teacher = copy.deepcopy(model).to(ctx.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.hooks = BNStatHooks(self.teacher)
        self.aqs = quantize_model(model, self.w_bits, self.a_bits, self.act_ema)
        self._q0 = {n: quantize_weight(m.weight, m.weight_bits).detach().clone() for n, m in model.named_modules()
                    if isinstance(m, (QuantConv2d, QuantLinear))}   # the start's levels (signal: did S move?)
        if self.student_bn == "eval":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.register_forward_pre_hook(_bn_eval_pre_hook)
        if self.data_source == "generator":
            self.G = self.make_generator(ctx).to(ctx.device)
            self.opt_g = torch.optim.Adam(self.G.parameters(), lr=self.lr_g, betas=self.betas_g)
        if self._saved:
            self._restore()
        return model

    def make_generator(self, ctx: RunContext) -> nn.Module:
        """The generator G(z, y) that the run trains: ``method.generator`` from the registry. A subclass may build
        it otherwise (AutoReCon: searched with the teacher, which exists by now as ``self.teacher``/``self.hooks``)."""
        return build_generator(self.generator_name, num_classes=ctx.num_classes, latent_dim=self.latent_dim,
                               image_size=ctx.image_size, channels=ctx.in_channels)

    def stages(self) -> list[Stage]:
        """``warmup``: G only (the student's optimizer at lr 0; activation ranges move), then ``finetune`` with the
        trainer's settings. With data_source=real the warm-up calibrates the ranges on real images instead."""
        out = []
        if self.warmup_epochs > 0:
            out.append(Stage("warmup", trainer={"epochs": self.warmup_epochs, "optimizer": {"lr": 0.0},
                                                "scheduler": {"name": "constant"}}))
        out.append(Stage("finetune"))
        return out

    def train_batches(self, stage: Stage, tcfg, ctx: RunContext):
        offset = 0 if stage.name == "warmup" else self.warmup_epochs
        if self.data_source == "real":   # the data's loader; ranges and epochs follow on_epoch_end
            self._real_offset = offset
            self.start_epoch(offset)
            return None
        steps = self.iters
        if tcfg.get("limit_batches"):
            steps = min(steps, int(tcfg.limit_batches))
        self.batch_size = int(tcfg.get("batch_size") or self.batch_size)
        return GeneratedBatches(self, steps, offset)

    # per epoch
    def start_epoch(self, epoch: int) -> None:
        """Absolute epoch: activation ranges move in the first act_range_epochs; G's lr follows its milestones."""
        self.epoch = epoch
        for aq in self.aqs:
            aq.running = epoch < self.act_range_epochs
        if self.opt_g is not None:
            lr = self.lr_g * self.gamma_g ** sum(epoch >= m for m in self.milestones_g)
            for group in self.opt_g.param_groups:
                group["lr"] = lr

    def on_epoch_end(self, model, epoch, ctx):
        if self.data_source == "real":   # no batch source: the absolute epoch moves here
            self.start_epoch(self._real_offset + epoch + 1)

    # per step
    def generate(self):
        z = torch.randn(self.batch_size, self.latent_dim, generator=self.generator).to(self.device)
        y = torch.randint(0, self.num_classes, (self.batch_size,), generator=self.generator).to(self.device)
        self.G.train()
        x = self.G(z, y)
        self.pending = (x, y)
        return x.detach(), y

    def teacher_forward(self, x):
        self.hooks.clear()
        logits = self.teacher(x)
        bns = bns_loss(self.hooks.means, self.hooks.vars, [b.running_mean for b in self.hooks.bns],
                       [b.running_var for b in self.hooks.bns])
        return logits, bns

    def loss(self, model, inputs, outputs, targets, task_loss):
        if self.data_source == "generator":
            x, y = self.pending
            t_logits, bns = self.teacher_forward(x)
            loss_g = generator_loss(t_logits, y, bns, self.bns_weight)
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            average_grads(p for g in self.opt_g.param_groups for p in g["params"])   # one generator across ranks
            self.opt_g.step()
            self.pending = None
            t_logits = t_logits.detach()
            self.log = {"loss_g": loss_g.detach(), "bns": bns.detach(),
                        "teacher_acc": (t_logits.argmax(1) == y).float().mean()}
        else:
            with torch.no_grad():
                t_logits = self.teacher(inputs)
        return student_loss(outputs.float(), t_logits.float(), targets, self.temperature, self.alpha,
                            self.kd_reduction)

    # reporting and state
    def level_flip_rate(self, model) -> float:
        """Fraction of student weights whose quantized value differs from the start's: the fine-tune acted."""
        changed = total = 0
        for n, m in model.named_modules():
            if n in self._q0:
                q = quantize_weight(m.weight, m.weight_bits).detach()
                changed += int((q != self._q0[n].to(q.device)).sum())
                total += q.numel()
        return changed / max(total, 1)

    def metrics(self, model):
        out = {"w_bits": self.w_bits, "a_bits": self.a_bits, "generator": self.generator_name,
               "level_flip_rate": round(self.level_flip_rate(model), 5),
               "data_source": self.data_source,
               "act_ranges": [[round(float(a.range()[0]), 4), round(float(a.range()[1]), 4)] for a in self.aqs]}
        out.update({k: round(float(v), 4) for k, v in self.log.items()})
        return out

    def state_dict(self):
        state = super().state_dict()
        state["epoch"] = self.epoch
        if self.G is not None:
            state["G"] = self.G.state_dict()
            state["opt_g"] = self.opt_g.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._saved = dict(state)
        if self.G is not None or self.aqs:
            self._restore()

    def _restore(self):
        s = self._saved
        if "epoch" in s:
            self.start_epoch(int(s["epoch"]))
        if self.G is not None and "G" in s:
            self.G.load_state_dict(s["G"])
            self.opt_g.load_state_dict(s["opt_g"])

"""Hooks and map utilities shared by the analysis methods (XGrad-CAM, unit ablation).

Nothing here edits a model: activations and their gradients are read with forward hooks (plus a
tensor hook on the hooked output), channels are zeroed by a forward hook that returns a masked copy
of a module's output. All functions are batched and run on whatever device the model lives on.

- ``get_module`` / ``default_layer``: resolve a target layer by its dotted name (``layer3``,
  ``layer3.2``, ``features.30``, ``pool2``); the default is the last module with a 4-D output that is
  not itself part of a larger 4-D-output module, i.e. the last feature map before the head.
- ``LayerTaps``: records output and d(score)/d(output) of named modules during one forward/backward.
- ``channel_mask``: context manager multiplying a module's output by a per-channel (or per-sample,
  per-channel) 0/1 mask: the "A with A_k := 0" of the XGrad-CAM note and the unit ablation of Zhou et
  al. (2018), which in BN nets must act on the output, not on the weights (unit_ablation note, Recipe).
- ``upsample_maps`` / ``minmax``: CAM display (ReLU, bilinear resize, min-max scale).
- ``deletion_insertion``: the RISE faithfulness curves (Petsiuk et al. 2018). These are standard
  library-style metrics, NOT metrics the XGrad-CAM paper is known to use (see docs/analysis.md).
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- target layers -------------------------------------------------------------------------------
def get_module(model: nn.Module, name: str) -> nn.Module:
    """The sub-module at dotted path ``name``; a bad name fails listing the closest valid ones."""
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=5)
        raise KeyError(f"layer '{name}' is not a module of {type(model).__name__}; close matches: {close}. "
                       f"Valid names are the model's named_modules() (e.g. {[n for n in modules if n][:8]} ...)")
    return modules[name]


@torch.no_grad()
def feature_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple]]:
    """Named modules producing a 4-D output, in execution order, with their output shapes (C, H, W)."""
    seen: list[tuple[str, tuple]] = []
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def hook(module, _inp, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4 and names[module]:
            seen.append((names[module], tuple(out.shape[1:])))

    for m in model.modules():
        handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def default_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The last feature map before the head: the last module (outermost when nested) whose output is
    4-D with more than one spatial position (``layer3`` for CIFAR ResNets, ``pool2`` for LeNet-5,
    ``features`` for VGG, ``layer4`` for torchvision ResNets)."""
    layers = [(n, s) for n, s in feature_layers(model, example) if s[1] * s[2] > 1]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no module with a 4-D (B, C, H, W) output larger than "
                         "1x1; give method.layers explicitly")
    return layers[-1][0]   # forward hooks fire inner-first, so the enclosing module comes last


# ---- recording activations and gradients -------------------------------------------------------------
class LayerTaps:
    """Record ``output`` and ``d(score)/d(output)`` of the named modules (use as a context manager).

    ``acts[name]`` is the detached output of the last forward; ``grads[name]`` is filled by backward.
    The hooked outputs must not be modified in place downstream (same limit as pytorch-grad-cam).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], grads: bool = True):
        self.model, self.names, self.want_grads = model, list(names), grads
        self.acts: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self) -> "LayerTaps":
        for name in self.names:
            self._handles.append(get_module(self.model, name).register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(_module, _inp, out):
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer '{name}' returns {type(out).__name__}, not a tensor; pick another layer")
            self.acts[name] = out.detach().clone()   # a later in-place op must not change it
            if self.want_grads and out.requires_grad:
                def store(grad, name=name):
                    self.grads[name] = grad.detach()
                out.register_hook(store)
        return hook


def scores_and_taps(model: nn.Module, x: torch.Tensor, layers: Sequence[str], target: torch.Tensor | None = None):
    """One forward + one backward: logits (B, C), target classes (B,), and taps holding A and dS_c/dA.

    The score S_c is the pre-softmax logit of class ``target`` (argmax when None), as in the official
    XGrad-CAM code. Summing the B target logits before backward gives each image its own gradient.
    """
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)          # gradients flow even if the parameters are frozen
    with torch.enable_grad(), LayerTaps(model, layers) as taps:
        logits = model(x)
        cls = logits.argmax(1) if target is None else target.to(logits.device)
        logits.gather(1, cls[:, None]).sum().backward()
    model.zero_grad(set_to_none=True)
    missing = [n for n in layers if n not in taps.grads]
    if missing:
        raise RuntimeError(f"no gradient reached layers {missing}; is their output used by the logits?")
    return logits.detach(), cls, taps


def _effective_bias(module: nn.Module) -> torch.Tensor | None:
    """The additive term a module puts on its output: conv/linear bias; eval-mode BN's β − γ·μ/σ."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.running_mean is None:
            return module.bias
        scale = (module.weight if module.weight is not None else 1.0) / (module.running_var + module.eps).sqrt()
        shift = -module.running_mean * scale
        return shift + module.bias if module.bias is not None else shift
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


def downstream_bias_term(model: nn.Module, x: torch.Tensor, layer: str, cls: torch.Tensor) -> torch.Tensor:
    """Σ over the modules that run after ``layer`` of Σ_c (dS/db_c)·b_c per image (b: conv/linear biases and
    eval-mode BN shifts), measured from the gradients at those modules' outputs, independently of ``layer``'s
    own activations and gradients.

    For a network that is piecewise linear after ``layer`` (ReLU, max-pool, eval BN, conv, linear, average
    pooling), S = Σ dS/dA·A + this term exactly; any other downstream nonlinearity breaks the identity.
    """
    order, outputs, end = [], {}, {}

    def pre(module, _inp):
        order.append(module)

    def post(module, _inp, out):
        if module is target:
            end["index"] = len(order)
        elif isinstance(out, torch.Tensor) and out.requires_grad and _effective_bias(module) is not None:
            out.retain_grad()
            outputs[module] = out

    target = get_module(model, layer)
    leaves = [m for m in model.modules() if not list(m.children()) or m is target]
    handles = [m.register_forward_pre_hook(pre) for m in leaves] + [m.register_forward_hook(post) for m in leaves]
    try:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            logits.gather(1, cls[:, None].to(logits.device)).sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    if "index" not in end:
        raise RuntimeError(f"layer '{layer}' did not run in the forward pass")
    downstream = {m for m in order[end["index"]:]}
    term = torch.zeros(x.shape[0], device=x.device)
    for module, out in outputs.items():
        if module not in downstream or out.grad is None:
            continue
        grad = out.grad.flatten(2).sum(2) if out.dim() > 2 else out.grad     # (B, C): dS/db per image
        term = term + (grad * _effective_bias(module).detach()).sum(1)
    return term


# ---- ablating channels ---------------------------------------------------------------------------
@contextmanager
def channel_mask(model: nn.Module, layer: str, mask: torch.Tensor | None):
    """Multiply ``layer``'s output by ``mask`` while inside the block.

    ``mask``: (K,) for all samples or (B, K) per sample (0 = unit ablated); ``None`` = no hook at all
    (the un-ablated baseline, bit-identical to running without this context manager).
    """
    if mask is None:
        yield
        return

    def hook(_module, _inp, out):
        m = mask.to(device=out.device, dtype=out.dtype)
        if m.dim() == 1:
            m = m[None]
        if m.shape[-1] != out.shape[1]:
            raise ValueError(f"mask for layer '{layer}' has {m.shape[-1]} channels, output has {out.shape[1]}")
        return out * m.reshape(*m.shape, *([1] * (out.dim() - 2)))

    handle = get_module(model, layer).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def reuse_upstream(model: nn.Module, layer: str, x: torch.Tensor, check: bool = True):
    """Skip the work up to ``layer``'s output while inputs are ``x`` (or ``x`` repeated along the batch).

    One plain forward records which modules run exactly once and finish no later than ``layer``
    (the stem, the earlier stages and ``layer`` itself); inside the block the outermost of them return
    their recorded output instead of recomputing it (``forward`` is shadowed by an instance attribute,
    removed on exit; forward hooks such as ``channel_mask`` still act on the returned output). Repeated
    channel ablations at ``layer`` then cost only the layers after it. With ``check`` the logits under
    the shortcut are compared with the plain ones, and the shortcut is dropped (plain forwards) if they
    differ. Yields the plain logits of ``x``.
    """
    target = get_module(model, layer)
    names = {m: n for n, m in model.named_modules()}
    clock, start, end, calls, outs = [0], {}, {}, {}, {}

    def pre(module, _inp):
        clock[0] += 1
        start.setdefault(module, clock[0])
        calls[module] = calls.get(module, 0) + 1

    def post(module, _inp, out):
        clock[0] += 1
        end[module] = clock[0]
        outs[module] = out

    handles = [m.register_forward_pre_hook(pre) for m in model.modules() if m is not model]
    handles += [m.register_forward_hook(post) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            plain = model(x)
    finally:
        for h in handles:
            h.remove()
    t_end = end.get(target)
    if t_end is None:
        raise RuntimeError(f"layer '{layer}' did not run in the forward pass")

    def ok(m):
        return (m is not None and calls.get(m) == 1 and end.get(m, t_end + 1) <= t_end
                and isinstance(outs.get(m), torch.Tensor) and not layer.startswith(names[m] + "."))

    parent = {}
    for n, m in model.named_modules():
        for cn, c in m.named_children():
            parent[c] = m
    chosen = [m for m in model.modules() if m is not model and ok(m) and not (parent.get(m) is not model
                                                                                and ok(parent.get(m)))]
    b = x.shape[0]

    def shortcut(cached):
        def forward(inp, *args, **kwargs):
            r = inp.shape[0] // b if isinstance(inp, torch.Tensor) else 1
            return cached if r == 1 else cached.repeat(r, *([1] * (cached.dim() - 1)))
        return forward

    for m in chosen:
        m.forward = shortcut(outs[m].detach())
    try:
        if check and chosen:
            with torch.no_grad():
                fast = model(x)
            if not torch.allclose(fast, plain, rtol=1e-4, atol=1e-5):
                for m in chosen:
                    del m.forward
                chosen = []
        yield plain.detach()
    finally:
        for m in chosen:
            if "forward" in m.__dict__:
                del m.forward


@torch.no_grad()
def logits_with_each_channel_zeroed(model: nn.Module, x: torch.Tensor, layer: str, channels: int) -> torch.Tensor:
    """Logits (B, K, C) of ``x`` with channel k of ``layer`` set to 0, for every k.

    One forward per channel on the same batch, under ``reuse_upstream``: at the last feature layer
    only the head is recomputed per channel."""
    out = []
    with reuse_upstream(model, layer, x):
        for k in range(channels):
            mask = torch.ones(channels, device=x.device)
            mask[k] = 0
            with channel_mask(model, layer, mask):
                out.append(model(x))
    return torch.stack(out, 1)


# ---- map display ---------------------------------------------------------------------------------
def minmax(maps: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per map: subtract min, divide by (max + eps) (pytorch-grad-cam's ``scale_cam_image``)."""
    flat = maps.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / (flat.max(1, keepdim=True).values + eps)).reshape(maps.shape)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ReLU -> bilinear resize to ``size`` (H, W) -> min-max: maps (B, h, w) to displayable (B, H, W).

    The official XGrad-CAM code resizes, then min-max scales; pytorch-grad-cam scales, resizes and
    scales again, which is the same map (bilinear resizing commutes with an affine rescale)."""
    m = F.interpolate(maps.clamp_min(0)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(m)


# ---- faithfulness: deletion / insertion (RISE) ------------------------------------------------------
def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    xp = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    xp = F.conv2d(xp, k.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(xp, k.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under curves (B, T+1) sampled at fractions 0, 1/T, ..., 1."""
    t = curve.shape[1] - 1
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * t)


@torch.no_grad()
def deletion_insertion(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, cls: torch.Tensor,
                       steps: int = 16, blur_sigma: float | None = None, chunk: int = 512) -> dict:
    """RISE curves: softmax prob of ``cls`` as the most salient pixels are removed / inserted.

    Deletion replaces pixels, most salient first, by 0 in the normalized input (the dataset mean);
    insertion starts from a blurred copy and puts the original pixels back in the same order.
    ``saliency`` is (B, H, W) at input resolution; ties keep pixel order. Returns the curves (B, steps+1)
    and their AUCs (lower deletion and higher insertion = more faithful).
    """
    b, c, h, w = x.shape
    n = h * w
    order = saliency.reshape(b, n).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=x.device).expand(b, n))
    counts = torch.round(torch.linspace(0, n, steps + 1, device=x.device)).long()
    keep = (rank[:, None, :] >= counts[None, :, None]).reshape(b, steps + 1, 1, h, w).to(x.dtype)  # 1 = not yet moved
    canvas = _blur(x, blur_sigma if blur_sigma else max(1.0, h / 6))
    deletion = x[:, None] * keep                                   # removed pixels -> 0 (the mean)
    insertion = canvas[:, None] * keep + x[:, None] * (1 - keep)
    curves = {}
    for key, imgs in (("deletion", deletion), ("insertion", insertion)):
        flat = imgs.reshape(b * (steps + 1), c, h, w)
        probs = torch.cat([model(flat[i:i + chunk]).softmax(1) for i in range(0, flat.shape[0], chunk)])
        probs = probs.reshape(b, steps + 1, -1).gather(2, cls[:, None, None].expand(b, steps + 1, 1))[..., 0]
        curves[key] = probs
    return {"deletion_curve": curves["deletion"], "insertion_curve": curves["insertion"],
            "deletion_auc": auc(curves["deletion"]), "insertion_auc": auc(curves["insertion"])}


def take_images(batches: Iterable, n: int, total: int | None = None,
                offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images and labels of an iterable of (x, y) batches, as two tensors.

    With ``total`` (the split's size) the images are spread evenly over the split (indices
    floor(j * total / n) + offset), so a class-sorted split (cifar10_jpeg's test set is) gives every class its
    share; without it, the first ``n``. Offsets 0 .. floor(total / n) - 1 pick disjoint sets of images (the
    replicates of an analysis run: its seed is the offset). Streams: never holds more than one batch beyond
    the picks."""
    stride = total // n if total is not None and total > n else 1
    if not 0 <= offset < stride:
        raise ValueError(f"seed={offset}: {n} images of a {total or n}-image split leave room for "
                         f"{stride} disjoint image sets (seeds 0..{stride - 1}); lower method.num_images or the seed")
    if stride > 1:
        wanted = torch.div(torch.arange(n, dtype=torch.float64) * total, n, rounding_mode="floor").long() + offset
    else:
        wanted = torch.arange(n)
    xs, ys, seen, k = [], [], 0, 0
    for x, y in batches:
        b = x.shape[0]
        hi = k
        while hi < len(wanted) and wanted[hi] < seen + b:
            hi += 1
        if hi > k:
            idx = (wanted[k:hi] - seen).to(x.device)
            xs.append(x[idx])
            ys.append(y[idx.to(y.device)])
            k = hi
        seen += b
        if k >= len(wanted):
            break
    if not xs:
        raise ValueError("the data split yielded no batches")
    return torch.cat(xs), torch.cat(ys)

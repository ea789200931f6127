"""``method=sketch``: Network Sketching (Guo, Yao, Zhao, Chen, CVPR 2017, arXiv 1706.02021).

A post-training conversion (no training): every sketched filter W (one output channel of a conv, one output row
of a linear layer; n = c*h*w entries) becomes m scaled binary tensors, W ~ sum_j a_j B_j with B_j in {-1,+1}^n.
Notes: ../shared/papers/sketch.md. Verified from the abstract: binary tensor expansion of pre-trained filters,
two algorithms (direct approximation, approximation with refinement) and an associative implementation.
UNVERIFIED (secondary recollection, not checked against the paper PDF): the update formulas below, the
per-filter granularity, which layers stay floating point, and the associative ordering.

Equations (names as in the paper's algorithm titles):

- **Direct approximation** (:func:`direct_approximation`), greedy on the residual:
  R_0 = W;  B_j = sign(R_{j-1});  a_j = <B_j, R_{j-1}> / n  (= mean |R_{j-1}|);  R_j = R_{j-1} - a_j B_j.
- **Approximation with refinement** (:func:`refined_approximation`): B_j = sign(R_{j-1}) as above, then ALL
  coefficients refitted by least squares, a = argmin ||w - B a||^2 = (B^T B)^-1 B^T w, and R_j = W - B a.
- sign(0) = +1 (unverified; the paper's tie rule is not known).
- m = 1 of either variant is the BWN / XNOR-Net weight binarization a = mean |W|, B = sign W; ``variant: bwn``
  computes that rule directly (:func:`bwn_approximation`) as the binary-weight baseline.

**Associative implementation** (:func:`associative_plan`, :func:`associative_conv2d`): conv(X, B_k) =
conv(X, B_l) + conv(X, B_k - B_l), where B_k - B_l is in {0, +-2} with d = Hamming(B_k, B_l) nonzeros. The
binary tensors of one layer all see the same input X, so ``scope: layer`` (default, our choice, unverified) orders
all out_channels*m tensors of the layer by a minimum spanning tree over Hamming distances (Prim's algorithm from
a virtual root whose edge to any tensor costs n - 1, the direct computation); ``scope: filter`` restricts the tree
to the m tensors of each filter. Addition counts per image, per output position P of the layer (exact formulas,
our convention; the paper's counting is unknown):

- direct binary path: N (n - 1) add/sub for the N = O m binary convolutions, plus O (m - 1) to sum the scaled
  results; O m multiplications (the scales a_j).
- associative path: sum over tree edges of (n - 1) for a root edge and d + 1 for a derived edge (S = the signed
  sum of the d differing input entries, d - 1 additions; 2S as S + S, one; the parent's result + 2S, one; d = 0
  reuses the parent's result at no cost), plus the same O (m - 1); the same O m multiplications.
  Padding zeros count as entries (dense count).

Layers kept floating point: ``fp_first`` (the first conv), ``fp_last`` (the last linear/conv), ``fp_downsample``
(1x1 convs), ``fp_layers`` (names). Defaults (first and last FP, 1x1 sketched) follow the BWN/XNOR practice;
the paper's choice is UNVERIFIED. ``bn_reestimate_images`` > 0 recomputes the BN running statistics on that many
training images after sketching (our option; whether the paper does anything after sketching is unknown).

Replicate unit (``test_shards``): the conversion is deterministic, so seeds of the same cell would be identical
pseudo-replicates. With ``test_shards: k`` the run's seed s (0 <= s < k) evaluates the strided test shard
s, s+k, s+2k, ... (class-balanced on class-sorted splits); k seeds cover the whole test set once and are
independent test samples, paired by shard across arms. With BN re-estimation the seed also picks the training
images. ``test_shards: 0`` evaluates the whole split.

Complexity: a sketched layer's ``weight`` holds the reconstruction sum_j a_j B_j (evaluated by the ordinary conv),
``weight_bits = m`` (m binary tensors) and a frozen parameter ``sketch_alpha`` (O, m) of FP scales, so the engine's
size_bits counts m bits per weight plus 32 per scale; the binary tensors are kept as an int8 buffer
``sketch_basis`` (m, O, ...) for the associative path.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from methods import Method, register_method
from methods.common.native import load

VARIANTS = ("direct", "refined", "bwn", "fp")
SCOPES = ("layer", "filter")


# ---- the paper's equations --------------------------------------------------------------------------------------
def sign_pm(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1 (unverified tie rule), in x's dtype."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def direct_approximation(w: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct approximation of each row of ``w`` (F, n): B (F, m, n) in {-1,+1}, a (F, m).
    R_0 = W; B_j = sign(R_{j-1}); a_j = <B_j, R_{j-1}>/n; R_j = R_{j-1} - a_j B_j."""
    w = w.double()
    n = w.shape[1]
    residual = w.clone()
    bases, alphas = [], []
    for _ in range(m):
        b = sign_pm(residual)
        a = (b * residual).sum(1) / n
        residual = residual - a[:, None] * b
        bases.append(b)
        alphas.append(a)
    return torch.stack(bases, 1), torch.stack(alphas, 1)


def least_squares_coefficients(bases: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a = argmin ||w - B a||^2 per filter (bases (F, j, n), w (F, n)); rank-deficient B (a repeated tensor) gets
    the minimum-norm solution."""
    b = bases.transpose(1, 2)                       # (F, n, j)
    return torch.linalg.pinv(b) @ w[:, :, None] if b.shape[2] else w[:, :0]


def refined_approximation(w: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximation with refinement: B_j = sign(R_{j-1}); a_1..a_j refitted jointly by least squares on vec(W);
    R_j = W - B a."""
    w = w.double()
    residual = w.clone()
    bases, a = [], None
    for _ in range(m):
        bases.append(sign_pm(residual))
        stack = torch.stack(bases, 1)
        a = least_squares_coefficients(stack, w)[:, :, 0]
        residual = w - (a[:, :, None] * stack).sum(1)
    return torch.stack(bases, 1), a


def bwn_approximation(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The BWN / XNOR-Net per-filter binarization: B = sign W, a = mean |W| (one tensor)."""
    w = w.double()
    return sign_pm(w)[:, None, :], w.abs().mean(1, keepdim=True)


def sketch_filters(w: torch.Tensor, m: int, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B (F, m, n), a (F, m)) of the filters (rows) of ``w`` (F, n) for ``variant`` direct | refined | bwn."""
    if variant == "direct":
        return direct_approximation(w, m)
    if variant == "refined":
        return refined_approximation(w, m)
    if variant == "bwn":
        return bwn_approximation(w)
    raise ValueError(f"method.variant={variant!r}; choose one of {VARIANTS}")


def reconstruct(bases: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """sum_j a_j B_j per filter: (F, n)."""
    return (alphas[:, :, None] * bases).sum(1)


def relative_errors(w: torch.Tensor, bases: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """||W - sum_j a_j B_j|| / ||W|| per filter (F,) (0 for an all-zero filter)."""
    w = w.double()
    err = (w - reconstruct(bases, alphas)).norm(dim=1)
    norm = w.norm(dim=1)
    return torch.where(norm > 0, err / norm.clamp_min(1e-300), torch.zeros_like(err))


# ---- associative implementation ---------------------------------------------------------------------------------
def spanning_order(bits: torch.Tensor) -> tuple[list[tuple[int, int]], int]:
    """Prim's minimum spanning tree over the rows of ``bits`` (N, n) in {-1,+1} with a virtual root: a root edge
    costs n - 1 additions (direct binary conv), an edge l-k costs d + 1 for d = Hamming(B_l, B_k) > 0 and 0 for
    d = 0. Returns the build order [(node, parent or -1)] (every parent before its children; ties go to the
    lowest index and to the root) and the total additions per output position."""
    bits = bits.double()
    num, n = bits.shape
    hamming = ((n - bits @ bits.T) / 2).round().long()
    edge = torch.where(hamming > 0, hamming + 1, torch.zeros_like(hamming))
    best = torch.full((num,), n - 1, dtype=torch.long)
    parent = torch.full((num,), -1, dtype=torch.long)
    done = torch.zeros(num, dtype=torch.bool)
    order, total = [], 0
    for _ in range(num):
        cost = torch.where(done, torch.full_like(best, torch.iinfo(torch.long).max), best)
        k = int(cost.argmin())                      # ties: the lowest index
        done[k] = True
        order.append((k, int(parent[k])))
        total += int(best[k])
        closer = (~done) & (edge[k] < best)
        best = torch.where(closer, edge[k], best)
        parent = torch.where(closer, torch.full_like(parent, k), parent)
    return order, total


def associative_plan(bases: torch.Tensor, scope: str = "layer") -> dict:
    """Trees and addition counts per output position for one layer's binary tensors ``bases`` (O, m, n).
    ``scope``: one tree over all O*m tensors (``layer``) or one per filter (``filter``)."""
    if scope not in SCOPES:
        raise ValueError(f"method.associative_scope={scope!r}; choose one of {SCOPES}")
    o, m, n = bases.shape
    flat = bases.reshape(o * m, n)
    if scope == "layer":
        order, tree = spanning_order(flat)
    else:
        order, tree = [], 0
        for f in range(o):
            sub, cost = spanning_order(flat[f * m:(f + 1) * m])
            order += [(f * m + k, f * m + p if p >= 0 else -1) for k, p in sub]
            tree += cost
    combine = o * (m - 1)
    return {"order": order, "tree_adds": tree, "direct_adds": o * m * (n - 1) + combine,
            "associative_adds": tree + combine, "mults": o * m}


def accumulation_steps(bits: torch.Tensor, order, associative: bool = True) -> dict[str, torch.Tensor]:
    """The steps csrc/sketch_associative.cpp runs for the rows of ``bits`` (N, n) in {-1, +1}: with
    ``associative``, ``order`` (from :func:`spanning_order`) with each derived tensor = its parent + sum of 2 B_k[i]
    u[i] over the d entries where they differ; else every tensor from scratch, sum of B_k[i] u[i] over all n."""
    num, n = bits.shape
    node, parent, offset, index, coef = [], [], [0], [], []
    for k, p in (order if associative else [(k, -1) for k in range(num)]):
        idx = torch.arange(n) if p < 0 else (bits[k] != bits[p]).nonzero().flatten()
        node.append(k)
        parent.append(p)
        index.append(idx)
        coef.append(bits[k, idx] * (1.0 if p < 0 else 2.0))
        offset.append(offset[-1] + len(idx))
    i64 = torch.int64
    return {"node": torch.tensor(node, dtype=i64), "parent": torch.tensor(parent, dtype=i64),
            "offset": torch.tensor(offset, dtype=i64), "index": torch.cat(index).to(torch.int32),
            "coef": torch.cat(coef).float()}


def binary_convs_native(x: torch.Tensor, steps: dict[str, torch.Tensor], num: int, kernel, stride=1, padding=0,
                        dilation=1) -> torch.Tensor:
    """conv(x, B_k) for the ``num`` binary tensors of ``steps`` (:func:`accumulation_steps`), float32 on CPU, by the
    native kernel (im2col rows, then the steps per output position): (B, num, OH, OW)."""
    b, _, h, w = x.shape
    u = F.unfold(x.float().cpu(), kernel, dilation, padding, stride)            # (B, n, P)
    n, positions = u.shape[1:]
    u = u.transpose(1, 2).reshape(b * positions, n).contiguous()
    out = torch.empty((b * positions, num), dtype=torch.float32)
    load().sk_accumulate(u.data_ptr(), b * positions, n, len(steps["node"]), steps["node"].data_ptr(),
                         steps["parent"].data_ptr(), steps["offset"].data_ptr(), steps["index"].data_ptr(),
                         steps["coef"].data_ptr(), num, out.data_ptr(), torch.get_num_threads())
    kh, kw = kernel
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    return out.reshape(b, positions, num).permute(0, 2, 1).reshape(b, num, oh, positions // oh)


def associative_conv2d(x: torch.Tensor, bases: torch.Tensor, alphas: torch.Tensor, order, stride=1, padding=0,
                       dilation=1, associative: bool = True) -> torch.Tensor:
    """sum_j a_j conv(x, B_j) per filter (groups = 1), the binary convolutions by the native kernel: each
    conv(x, B_k) from its tree parent's result (``associative``) or from scratch (the direct binary path, the same
    kernel, so the two differ in wall time only by the additions). ``bases`` (O, m, C, kh, kw), ``alphas`` (O, m)."""
    o, m = alphas.shape
    bits = bases.reshape(o * m, -1)
    convs = binary_convs_native(x, accumulation_steps(bits, order, associative), o * m, tuple(bases.shape[-2:]),
                                stride, padding, dilation)
    return (convs.reshape(x.shape[0], o, m, *convs.shape[2:]) * alphas.float()[None, :, :, None, None]).sum(2)


# ---- the conversion ---------------------------------------------------------------------------------------------
def sketch_targets(model: nn.Module, fp_first: bool, fp_last: bool, fp_downsample: bool,
                   fp_layers=()) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """(layers to sketch, layers kept FP) among the model's Conv2d/Linear in module order."""
    layers = [(n, mod) for n, mod in model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    unknown = sorted(set(fp_layers) - {n for n, _ in layers})
    if unknown:
        raise ValueError(f"method.fp_layers names {unknown}, not conv/linear layers of the model; "
                         f"layers: {[n for n, _ in layers][:8]}...")
    keep = set(fp_layers)
    if layers and fp_first:
        keep.add(layers[0][0])
    if layers and fp_last:
        keep.add(layers[-1][0])
    if fp_downsample:
        keep |= {n for n, mod in layers if isinstance(mod, nn.Conv2d) and tuple(mod.kernel_size) == (1, 1)}
    return [(n, mod) for n, mod in layers if n not in keep], [n for n, _ in layers if n in keep]


@torch.no_grad()
def sketch_layer(module: nn.Module, m: int, variant: str) -> torch.Tensor:
    """Replace ``module.weight`` by its sketch in place; attach ``sketch_basis`` (m, O, ...) int8,
    ``sketch_alpha`` (O, m) (frozen parameter, counted in size) and ``weight_bits = m``. Returns the per-filter
    relative errors."""
    w = module.weight
    flat = w.detach().reshape(w.shape[0], -1).clone()     # not a view: the weight is overwritten below
    bases, alphas = sketch_filters(flat, m, variant)
    w.copy_(reconstruct(bases, alphas).reshape(w.shape).to(w.dtype))
    module.register_buffer("sketch_basis", bases.transpose(0, 1).reshape(bases.shape[1], *w.shape).to(torch.int8))
    module.sketch_alpha = nn.Parameter(alphas.to(w.dtype), requires_grad=False)
    module.weight_bits = int(bases.shape[1])
    return relative_errors(flat, bases, alphas)


def layer_bases(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(bases (O, m, n) float, alphas (O, m)) of a sketched layer."""
    basis = module.sketch_basis
    return basis.transpose(0, 1).reshape(basis.shape[1], basis.shape[0], -1).double(), module.sketch_alpha.double()


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, loader, images: int, device: torch.device) -> int:
    """Recompute every BatchNorm's running mean/var as the plain average over ``images`` training images
    (momentum None), weights untouched. Returns the number of images used."""
    bns = [mod for mod in model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [(bn, bn.momentum) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    was_training = model.training
    model.train()
    seen = 0
    try:
        for x, _ in loader:
            x = x[:images - seen].to(device)
            model(x)
            seen += x.shape[0]
            if seen >= images:
                break
    finally:
        for bn, momentum in saved:
            bn.momentum = momentum
        model.train(was_training)
    if seen < images:
        raise ValueError(f"method.bn_reestimate_images={images}, but the training loader gave only {seen} images; "
                         "lower it")
    return seen


def take_test_shard(loader, shard: int, shards: int) -> int:
    """Keep the strided test shard ``shard`` of ``shards`` in a tensor loader (in place); its image count."""
    if not hasattr(loader, "images") or not hasattr(loader, "labels"):
        raise ValueError("method.test_shards needs a tensor-held dataset (cifar/mnist/synthetic); set "
                         "method.test_shards=0 for this data")
    if not 0 <= shard < shards:
        raise ValueError(f"seed={shard}: method.test_shards={shards} has shards 0..{shards - 1} (the seed picks the "
                         "shard); use a seed in that range")
    loader.images, loader.labels = loader.images[shard::shards], loader.labels[shard::shards]
    return int(loader.labels.shape[0])


def output_positions(model: nn.Module, input_shape) -> dict:
    """Output positions per image of every conv/linear layer (the engine's complexity pass; 1 for a linear)."""
    from core.complexity import measure
    out = {}
    for layer in measure(model, input_shape).layers:
        dims = [int(d) for d in layer.out_shape.split("x")]
        out[layer.name] = 1 if layer.kind == "Linear" or len(dims) < 2 else dims[1] * (dims[2] if len(dims) > 2 else 1)
    return out


@register_method("sketch")
class Sketch(Method):
    """Network Sketching as an evaluate-only conversion (``python evaluate.py experiment=sketch/...``)."""

    family = "binary"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.m = int(cfg.get("m", 1))
        self.variant = str(cfg.get("variant", "refined"))
        if self.variant not in VARIANTS:
            raise ValueError(f"method.variant={self.variant!r}; choose one of {VARIANTS}")
        if self.variant == "bwn" and self.m != 1:
            raise ValueError(f"method.variant=bwn is one binary tensor; set method.m=1 (got {self.m})")
        if not 1 <= self.m <= 32:
            raise ValueError(f"method.m={self.m}: the number of binary tensors must be in 1..32")
        self.scope = str(cfg.get("associative_scope", "layer"))
        if self.scope not in SCOPES:
            raise ValueError(f"method.associative_scope={self.scope!r}; choose one of {SCOPES}")
        self.bn_images = int(cfg.get("bn_reestimate_images", 0) or 0)
        self.shards = int(cfg.get("test_shards", 0) or 0)
        if self.bn_images < 0 or self.shards < 0:
            raise ValueError("method.bn_reestimate_images and method.test_shards must be >= 0 (0 = off)")
        self.max_nodes = int(cfg.get("associative_max_nodes", 4096))
        self.stats: dict = {}

    def stages(self):
        raise ValueError("method=sketch converts pretrained weights without training: run it with evaluate.py "
                         "(python evaluate.py experiment=sketch/<cell>), not train.py")

    @torch.no_grad()
    def transform(self, model: nn.Module, ctx) -> nn.Module:
        cfg = self.cfg
        stats: dict = {"sketch_variant": self.variant, "sketch_m": 0 if self.variant == "fp" else self.m,
                       "bn_reestimate_images": self.bn_images, "associative_scope": self.scope}
        if self.shards:
            n = take_test_shard(ctx.test_loader, int(ctx.seed), self.shards)
            stats.update(test_shard=f"{int(ctx.seed)}/{self.shards}", test_images=n)
        targets, kept = sketch_targets(model, bool(cfg.get("fp_first", True)), bool(cfg.get("fp_last", True)),
                                       bool(cfg.get("fp_downsample", False)), list(cfg.get("fp_layers") or []))
        if self.variant == "fp":
            targets = []
        stats["fp_layers_kept"] = kept
        errors, per_layer = [], {}
        input_shape = (ctx.in_channels, ctx.image_size, ctx.image_size)
        positions_of = output_positions(model, input_shape) if targets else {}
        adds = {"direct": 0, "associative": 0, "mults": 0, "fp_macs": 0}
        binary_bits, scale_bits = 0, 0
        for name, mod in targets:
            err = sketch_layer(mod, self.m, self.variant)
            errors.append(err)
            per_layer[name] = round(float(err.mean()), 6)
            bases, _ = layer_bases(mod)
            binary_bits += bases.numel()
            scale_bits += 32 * mod.sketch_alpha.numel()
            positions = positions_of[name]
            adds["fp_macs"] += positions * mod.weight.numel()
            if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                continue                        # grouped convs: no associative count (not in the suite's models)
            if bases.shape[0] * bases.shape[1] > self.max_nodes and self.scope == "layer":
                stats.setdefault("associative_skipped", []).append(name)
                continue
            plan = associative_plan(bases, self.scope)
            adds["direct"] += positions * plan["direct_adds"]
            adds["associative"] += positions * plan["associative_adds"]
            adds["mults"] += positions * plan["mults"]
        if errors:
            allf = torch.cat(errors)
            stats.update(sketch_rel_error=round(float(allf.mean()), 6), sketch_rel_error_layers=per_layer,
                         sketched_layers=len(targets), sketch_binary_bits=binary_bits, sketch_scale_bits=scale_bits,
                         sketch_param_bits=binary_bits + scale_bits,
                         sketch_adds_direct=adds["direct"], sketch_adds_associative=adds["associative"],
                         sketch_mults=adds["mults"], sketched_fp_macs=adds["fp_macs"])
            if adds["direct"]:
                stats["sketch_adds_saving"] = round(1 - adds["associative"] / adds["direct"], 6)
        else:
            stats.update(sketch_rel_error=0.0, sketched_layers=0)
        if self.bn_images:
            model.to(ctx.device)
            stats["bn_reestimated_on"] = reestimate_batchnorm(model, ctx.train_loader, self.bn_images, ctx.device)
        self.stats = stats
        return model.eval()

    def metrics(self, model: nn.Module) -> dict:
        return dict(self.stats)

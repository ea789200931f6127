"""Low-rank building blocks: tensor-train (TT) conv/linear layers and the two-conv SVD layer.

Decompositions come from tensorly (``tensorly.decomposition.tensor_train`` for TT-SVD,
``tensorly.tt_to_tensor`` for reconstruction); this module only reshapes kernels, picks ranks and
turns cores into layers that *run* as a sequence of small ``nn.Conv2d`` modules, so the speedup is real
and core/complexity.py counts every small conv (params = core sizes, MACs = the contractions).

Kernel layout (TT-ADMM note, "Algorithm" step 2): a conv weight W (C_out, C_in, k, k) is viewed as
(C_out, k*k, C_in) and refined into the TT shape ``[m_1..m_a, k*k, n_1..n_b]`` with prod(m) = C_out and
prod(n) = C_in. Cores G_j have shape (r_{j-1}, d_j, r_j), r_0 = r_d = 1 (ranks are written with the
boundary ones, as in the official hp_dicts).

TT conv forward (note, step 4): the input cores contract C_in into the rank r_in = r_{a+1}
(one 1x1 conv per core, the factors not yet contracted folded into the height axis so each 1x1 conv is
counted with its true MACs), then a k x k conv r_in -> r_out = r_a with the original stride/padding/dilation,
then the output cores expand r_out into C_out (one 1x1 conv per core).
Exact cost from the ranks (``TTSpec.params`` / ``TTSpec.macs``):
  params = sum_j r_{j-1} d_j r_j;
  MACs   = sum_{input cores j} r_{j-1} n_j r_j prod(n_1..n_{j-1}) H_in W_in        (at the input size)
         + r_a r_{a+1} k^2 H_out W_out
         + sum_{output cores j} r_{j-1} m_j r_j prod(m_{j+1}..m_a) H_out W_out.
(The note presumes all terms at the output size; for stride-1 layers this is the same, for strided ones
the input cores run at the input resolution here, because the k x k conv needs the full-resolution input.)

SVD layer (CC note, "Algorithm"): input-channel selection ``keep`` (C_in - p channels), a k x k conv
(C_in - p -> r) with the original stride/padding and a 1x1 conv (r -> C_out); W1 = sqrt(S_r) V_r^T,
W2 = U_r sqrt(S_r) from the SVD of the pruned matrix reshape(W, C_out x (C_in - p) k k).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorly as tl
import torch
import torch.nn as nn
from tensorly.decomposition import tensor_train


def _prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))


# ---------------------------------------------------------------------------------------------------
# TT specification: shape, ranks, exact params and MACs
# ---------------------------------------------------------------------------------------------------
@dataclass
class TTSpec:
    """TT format of one layer: output factors, kernel core size (k*k, or None for a linear layer),
    input factors and the ranks (boundary ones included)."""

    out_factors: list[int]
    in_factors: list[int]
    ranks: list[int]
    kernel_size: int | None = None   # k of a k x k conv; None: linear layer (no spatial core)

    def __post_init__(self):
        self.out_factors = [int(x) for x in self.out_factors]
        self.in_factors = [int(x) for x in self.in_factors]
        self.ranks = [int(x) for x in self.ranks]
        if len(self.ranks) != len(self.shape) + 1:
            raise ValueError(f"TT ranks {self.ranks} must have len(shape)+1 = {len(self.shape) + 1} entries "
                             f"for shape {self.shape} (boundary ranks 1 included)")
        if self.ranks[0] != 1 or self.ranks[-1] != 1:
            raise ValueError(f"TT ranks {self.ranks} must start and end with 1")

    @property
    def shape(self) -> list[int]:
        mid = [] if self.kernel_size is None else [self.kernel_size ** 2]
        return self.out_factors + mid + self.in_factors

    @property
    def out_features(self) -> int:
        return _prod(self.out_factors)

    @property
    def in_features(self) -> int:
        return _prod(self.in_factors)

    @property
    def a(self) -> int:
        """Number of output cores."""
        return len(self.out_factors)

    @property
    def r_out(self) -> int:
        """Rank between the output cores and the rest (the k x k conv's output channels)."""
        return self.ranks[self.a]

    @property
    def r_in(self) -> int:
        """Rank between the input cores and the rest (the k x k conv's input channels)."""
        return self.ranks[len(self.shape) - len(self.in_factors)]

    def params(self) -> int:
        return sum(self.ranks[j] * d * self.ranks[j + 1] for j, d in enumerate(self.shape))

    def dense_params(self) -> int:
        return self.out_features * self.in_features * (1 if self.kernel_size is None else self.kernel_size ** 2)

    def macs(self, hw_in: tuple[int, int] = (1, 1), hw_out: tuple[int, int] = (1, 1)) -> int:
        """Exact MACs of the TT layer as built by ``TTConv2d`` / ``TTLinear`` (see module docstring)."""
        s_in, s_out = hw_in[0] * hw_in[1], hw_out[0] * hw_out[1]
        r, total = self.ranks, 0
        first_in = len(self.shape) - len(self.in_factors)
        for j in range(len(self.in_factors)):        # input core j: ranks r[first_in+j], r[first_in+j+1]
            depth = _prod(self.in_factors[:j])
            total += r[first_in + j] * self.in_factors[j] * r[first_in + j + 1] * depth * s_in
        if self.kernel_size is not None:
            total += self.r_out * self.r_in * self.kernel_size ** 2 * s_out
        elif self.r_in != self.r_out:
            raise ValueError("a linear TT spec has one rank between its output and input cores")
        for j in range(self.a):                       # output core j: ranks r[j], r[j+1]
            depth = _prod(self.out_factors[j + 1:])
            total += r[j] * self.out_factors[j] * r[j + 1] * depth * s_out
        return total

    def full_ranks(self) -> list[int]:
        """The largest useful TT ranks for this shape (exact representation of any tensor)."""
        d = self.shape
        return [1] + [min(_prod(d[:k]), _prod(d[k:])) for k in range(1, len(d))] + [1]

    def with_ranks(self, ranks) -> "TTSpec":
        return TTSpec(self.out_factors, self.in_factors, list(ranks), self.kernel_size)

    def feasible(self) -> "TTSpec":
        """Ranks lowered to what TT-SVD can produce: r_k <= r_{k-1} d_k and r_k <= d_{k+1} r_{k+1}
        (tensorly and the official ``ten2tt`` lower them the same way)."""
        r, d = list(self.ranks), self.shape
        for k in range(1, len(r) - 1):
            r[k] = min(r[k], r[k - 1] * d[k - 1])
        for k in range(len(r) - 2, 0, -1):
            r[k] = min(r[k], d[k] * r[k + 1])
        return self.with_ranks(r)

    def scaled(self, alpha: float) -> "TTSpec":
        """Interior ranks = max(1, round(alpha * full rank)), made feasible (the auto-rank rule)."""
        full = self.full_ranks()
        return self.with_ranks([1] + [max(1, min(f, int(round(alpha * f)))) for f in full[1:-1]] + [1]).feasible()


def balanced_factors(n: int, parts: int, descending: bool = True) -> list[int]:
    """Split ``n`` into ``parts`` integer factors as equal as possible (e.g. 32, 2 -> [8, 4])."""
    if parts == 1:
        return [n]
    best = None
    for f in range(1, n + 1):
        if n % f == 0:
            rest = balanced_factors(n // f, parts - 1, descending)
            cand = sorted([f] + rest, reverse=descending)
            if best is None or max(cand) / min(cand) < max(best) / min(best):
                best = cand
    return best


def auto_spec(out_ch: int, in_ch: int, kernel_size: int | None, layout: str) -> TTSpec:
    """TT shape for a layer. ``special``: [C_out, k*k, C_in] (3 cores, the official "special" form);
    ``general``: each channel count split into two balanced factors, [m1, m2, k*k, n1, n2]."""
    if layout == "special":
        out_f, in_f = [out_ch], [in_ch]
    elif layout == "general":
        out_f, in_f = balanced_factors(out_ch, 2, True), balanced_factors(in_ch, 2, False)
    else:
        raise ValueError(f"method.layout={layout!r}: allowed values are 'special' and 'general'")
    spec = TTSpec(out_f, in_f, [1] * (len(out_f) + len(in_f) + (0 if kernel_size is None else 1) + 1), kernel_size)
    return spec.with_ranks(spec.full_ranks())


# ---------------------------------------------------------------------------------------------------
# TT-SVD (tensorly) and kernel reshapes
# ---------------------------------------------------------------------------------------------------
def kernel_to_tensor(weight: torch.Tensor, spec: TTSpec) -> torch.Tensor:
    """(C_out, C_in, k, k) -> (C_out, k*k, C_in) -> TT shape; a linear (out, in) weight -> [m.., n..]."""
    if weight.dim() == 4:
        co, ci, kh, kw = weight.shape
        weight = weight.permute(0, 2, 3, 1).reshape(co, kh * kw, ci)
    return weight.reshape(spec.shape)


def tensor_to_kernel(tensor: torch.Tensor, spec: TTSpec) -> torch.Tensor:
    """Inverse of ``kernel_to_tensor``."""
    if spec.kernel_size is None:
        return tensor.reshape(spec.out_features, spec.in_features)
    k = spec.kernel_size
    return tensor.reshape(spec.out_features, k, k, spec.in_features).permute(0, 3, 1, 2).contiguous()


def tt_svd(tensor: torch.Tensor, ranks) -> list[torch.Tensor]:
    """TT-SVD (sequential truncated SVDs, Oseledets 2011) through tensorly, in float64.

    A requested rank larger than the unfolding allows is lowered (as tensorly and the official ``ten2tt``
    do); the cores' shapes give the ranks actually used."""
    tl.set_backend("numpy")
    arr = tensor.detach().to("cpu", torch.float64).numpy()
    tt = tensor_train(arr, rank=[int(r) for r in ranks])
    return [torch.from_numpy(np.ascontiguousarray(c)).to(tensor.dtype) for c in tt.factors]


def tt_to_tensor(cores: list[torch.Tensor]) -> torch.Tensor:
    """Full tensor from TT cores (tensorly's ``tt_to_tensor``)."""
    tl.set_backend("numpy")
    full = tl.tt_to_tensor([c.detach().to("cpu", torch.float64).numpy() for c in cores])
    return torch.from_numpy(np.ascontiguousarray(full)).to(cores[0].dtype)


def cores_ranks(cores: list[torch.Tensor]) -> list[int]:
    return [int(cores[0].shape[0])] + [int(c.shape[2]) for c in cores]


def tt_project(weight: torch.Tensor, spec: TTSpec) -> torch.Tensor:
    """Heuristic Euclidean projection onto {TT ranks <= spec.ranks} (TT-ADMM Z-step): TT-SVD of the
    reshaped kernel, reconstructed and reshaped back to the weight's shape."""
    cores = tt_svd(kernel_to_tensor(weight, spec), spec.ranks)
    full = tt_to_tensor(cores)
    return tensor_to_kernel(full, spec).reshape(weight.shape).to(weight.device, weight.dtype)


# ---------------------------------------------------------------------------------------------------
# TT layers as sequences of small convs
# ---------------------------------------------------------------------------------------------------
class _TTChannelCores(nn.Module):
    """The channel-side cores of a TT layer, each one 1x1 ``nn.Conv2d``.

    ``side='in'``: (N, C_in, H, W) -> (N, r_in, H, W), contracting the last factor first; the factors
    still to contract ride along in the height axis (so each conv's counted MACs are its true MACs).
    ``side='out'``: (N, r_out, H, W) -> (N, C_out, H, W), expanding the last output factor first."""

    def __init__(self, factors: list[int], ranks: list[int], side: str):
        super().__init__()
        self.factors, self.ranks, self.side = list(factors), list(ranks), side
        # ranks has len(factors)+1 entries: ranks[j], ranks[j+1] bound core j
        convs = []
        for j, d in enumerate(self.factors):
            if side == "in":
                convs.append(nn.Conv2d(d * ranks[j + 1], ranks[j], 1, bias=False))
            else:
                convs.append(nn.Conv2d(ranks[j + 1], ranks[j] * d, 1, bias=False))
        self.convs = nn.ModuleList(convs)

    def set_cores(self, cores: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for conv, core in zip(self.convs, cores):
                r0, d, r1 = core.shape
                if self.side == "in":    # weight[r0, i*r1 + s] = core[r0, i, s]
                    w = core.reshape(r0, d * r1)
                else:                    # weight[r*d + o, s] = core[r, o, s]
                    w = core.reshape(r0 * d, r1)
                conv.weight.copy_(w.reshape(conv.weight.shape))

    def cores(self) -> list[torch.Tensor]:
        out = []
        for j, (conv, d) in enumerate(zip(self.convs, self.factors)):
            r0, r1 = self.ranks[j], self.ranks[j + 1]
            out.append(conv.weight.detach().reshape(r0, d, r1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.side == "in":
            state = x                                         # channels (i_1..i_b), rank 1 appended
            for j in reversed(range(len(self.factors))):
                depth = _prod(self.factors[:j])
                ch = self.factors[j] * self.ranks[j + 1]
                y = state.reshape(n, depth, ch, h, w).transpose(1, 2).reshape(n, ch, depth * h, w)
                y = self.convs[j](y)                          # (n, r_j, depth*h, w)
                state = y.reshape(n, self.ranks[j], depth, h, w).transpose(1, 2).reshape(n, depth * self.ranks[j], h, w)
            return state
        state, depth = x, 1                                   # (n, r_a, h, w)
        for j in reversed(range(len(self.factors))):
            y = self.convs[j](state.reshape(n, self.ranks[j + 1], depth * h, w))   # (n, r_j*m_j, depth*h, w)
            depth *= self.factors[j]
            state = y.reshape(n, self.ranks[j], depth * h, w)
        return state.reshape(n, depth, h, w)


class TTConv2d(nn.Module):
    """A conv layer in TT format: input cores (1x1 convs) -> k x k conv r_in -> r_out -> output cores."""

    def __init__(self, spec: TTSpec, stride=1, padding=0, dilation=1, bias: bool = False):
        super().__init__()
        if spec.kernel_size is None:
            raise ValueError("TTConv2d needs a spec with kernel_size")
        self.spec = spec
        a, nd = spec.a, len(spec.shape)
        self.in_cores = _TTChannelCores(spec.in_factors, spec.ranks[a + 1:], "in")
        self.core = nn.Conv2d(spec.r_in, spec.r_out, spec.kernel_size, stride, padding, dilation, bias=False)
        self.out_cores = _TTChannelCores(spec.out_factors, spec.ranks[:a + 1], "out")
        self.bias = nn.Parameter(torch.zeros(spec.out_features)) if bias else None
        assert nd == a + 1 + len(spec.in_factors)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, spec: TTSpec) -> "TTConv2d":
        """TT-SVD of ``conv.weight`` with ``spec``'s ranks (lowered where infeasible) into a TT layer."""
        if conv.groups != 1 or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError("TT decomposition supports square, ungrouped convs only")
        if (spec.out_features, spec.in_features, spec.kernel_size) != (conv.out_channels, conv.in_channels, conv.kernel_size[0]):
            raise ValueError(f"TT shape {spec.shape} does not match conv weight {tuple(conv.weight.shape)}")
        cores = tt_svd(kernel_to_tensor(conv.weight.detach(), spec), spec.ranks)
        layer = cls(spec.with_ranks(cores_ranks(cores)), conv.stride, conv.padding, conv.dilation, conv.bias is not None)
        layer.set_cores(cores)
        if conv.bias is not None:
            layer.bias.data.copy_(conv.bias.detach())
        return layer.to(conv.weight.device)

    def set_cores(self, cores: list[torch.Tensor]) -> None:
        a = self.spec.a
        self.out_cores.set_cores(cores[:a])
        r0, kk, r1 = cores[a].shape
        k = self.spec.kernel_size
        with torch.no_grad():   # conv weight[alpha, beta, kh, kw] = core[alpha, kh*k+kw, beta]
            self.core.weight.copy_(cores[a].permute(0, 2, 1).reshape(r0, r1, k, k))
        self.in_cores.set_cores(cores[a + 1:])

    def cores(self) -> list[torch.Tensor]:
        k = self.spec.kernel_size
        mid = self.core.weight.detach().reshape(self.spec.r_out, self.spec.r_in, k * k).permute(0, 2, 1)
        return self.out_cores.cores() + [mid] + self.in_cores.cores()

    def dense_weight(self) -> torch.Tensor:
        return tensor_to_kernel(tt_to_tensor(self.cores()), self.spec)

    def forward(self, x):
        y = self.out_cores(self.core(self.in_cores(x)))
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


class TTLinear(nn.Module):
    """A linear layer in TT format (input cores, then output cores; no spatial core)."""

    def __init__(self, spec: TTSpec, bias: bool = True):
        super().__init__()
        if spec.kernel_size is not None:
            raise ValueError("TTLinear needs a spec with kernel_size=None")
        self.spec = spec
        a = spec.a
        self.in_cores = _TTChannelCores(spec.in_factors, spec.ranks[a:], "in")
        self.out_cores = _TTChannelCores(spec.out_factors, spec.ranks[:a + 1], "out")
        self.bias = nn.Parameter(torch.zeros(spec.out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, spec: TTSpec) -> "TTLinear":
        cores = tt_svd(kernel_to_tensor(linear.weight.detach(), spec), spec.ranks)
        layer = cls(spec.with_ranks(cores_ranks(cores)), linear.bias is not None)
        layer.out_cores.set_cores(cores[:spec.a])
        layer.in_cores.set_cores(cores[spec.a:])
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer.to(linear.weight.device)

    def cores(self) -> list[torch.Tensor]:
        return self.out_cores.cores() + self.in_cores.cores()

    def dense_weight(self) -> torch.Tensor:
        return tensor_to_kernel(tt_to_tensor(self.cores()), self.spec)

    def forward(self, x):
        lead = x.shape[:-1]
        y = self.out_cores(self.in_cores(x.reshape(-1, x.shape[-1], 1, 1))).reshape(*lead, -1)
        return y if self.bias is None else y + self.bias


# ---------------------------------------------------------------------------------------------------
# SVD (matrix low-rank) conv with input-channel selection: the CC layer
# ---------------------------------------------------------------------------------------------------
class LowRankConv2d(nn.Module):
    """Input-channel selection ``keep`` -> k x k conv (len(keep) -> r) -> 1x1 conv (r -> C_out).

    With ``rank=None`` the layer is a single conv with the kept input channels (pruning only). The
    gathered channels are an index buffer, so the counter sees only the smaller convs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, keep: list[int], rank: int | None,
                 stride=1, padding=0, dilation=1, bias: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        self.register_buffer("keep", torch.as_tensor(sorted(int(k) for k in keep), dtype=torch.long))
        kept = len(keep)
        if rank is None:
            self.conv = nn.Conv2d(kept, out_channels, kernel_size, stride, padding, dilation, bias=bias)
            self.expand = None
        else:
            self.conv = nn.Conv2d(kept, rank, kernel_size, stride, padding, dilation, bias=False)
            self.expand = nn.Conv2d(rank, out_channels, 1, bias=bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, keep: list[int], rank: int | None) -> "LowRankConv2d":
        """W restricted to ``keep``; if ``rank`` is given, W1 = sqrt(S_r) V_r^T, W2 = U_r sqrt(S_r)."""
        keep = sorted(int(k) for k in keep)
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], keep, rank, conv.stride, conv.padding,
                    conv.dilation, conv.bias is not None)
        w = conv.weight.detach()[:, keep]
        with torch.no_grad():
            if rank is None:
                layer.conv.weight.copy_(w)
            else:
                u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1).double(), full_matrices=False)
                root = s[:rank].sqrt()
                layer.conv.weight.copy_((root[:, None] * vh[:rank]).reshape(rank, *w.shape[1:]).to(w.dtype))
                layer.expand.weight.copy_((u[:, :rank] * root[None]).reshape(conv.out_channels, rank, 1, 1).to(w.dtype))
            last = layer.expand if layer.expand is not None else layer.conv
            if conv.bias is not None:
                last.bias.copy_(conv.bias.detach())
        return layer.to(conv.weight.device)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent full (C_out, C_in, k, k) weight, zeros at removed input channels."""
        w = self.conv.weight.detach()
        if self.expand is not None:
            w = torch.einsum("or,rikl->oikl", self.expand.weight.detach()[:, :, 0, 0], w)
        full = w.new_zeros(self.out_channels, self.in_channels, *w.shape[2:])
        full[:, self.keep] = w
        return full

    def forward(self, x):
        if self.keep.numel() != self.in_channels:
            x = x.index_select(1, self.keep)
        y = self.conv(x)
        return y if self.expand is None else self.expand(y)


# ---------------------------------------------------------------------------------------------------
# Model surgery helpers
# ---------------------------------------------------------------------------------------------------
def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def block_convs(model: nn.Module) -> list[str]:
    """Names of the convs low-rank methods compress by default: every square, ungrouped conv with k > 1
    that is not a direct child of the model (i.e. not the stem); 1x1 shortcuts and the classifier stay dense."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and "." in name and m.groups == 1 and m.kernel_size[0] > 1 \
                and m.kernel_size[0] == m.kernel_size[1]:
            out.append(name)
    return out


def conv_io_sizes(model: nn.Module, names: list[str], input_shape: tuple[int, ...]) -> dict[str, tuple]:
    """Spatial input and output size of each named layer for one input of ``input_shape`` (C, H, W)."""
    sizes, handles = {}, []
    for n in names:
        m = model.get_submodule(n)
        handles.append(m.register_forward_hook(
            lambda mod, inp, out, n=n: sizes.__setitem__(n, (tuple(inp[0].shape[2:]), tuple(out.shape[2:])))))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=p.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return sizes


__all__ = ["TTSpec", "balanced_factors", "auto_spec", "kernel_to_tensor", "tensor_to_kernel", "tt_svd", "tt_to_tensor",
           "cores_ranks", "tt_project", "TTConv2d", "TTLinear", "LowRankConv2d", "set_submodule", "block_convs",
           "conv_io_sizes"]

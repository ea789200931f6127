"""The cell-based generator space of AutoReCon (docs/autorecon.md): a search space (every candidate on every edge,
mixed by architecture weights) and fixed generators built from a genotype, including the ones the AutoReCon authors
discovered (decoded from the one-hot encodings in the co-author code iamkanghyunchoi/ait, ``AutoReCon_AIT``).

Layout (verified against the co-author code's generator; that it is AutoReCon's search space is inferred):

- z (latent_dim) is split in three chunks (latent//3, latent//3, the rest); each goes through its own Linear to a
  ``width``-channel map of side b, 2b and 4b (b = image_size // 8). Chunk 1's map is added to cell 0's output and
  chunk 2's to cell 1's output before the next cell.
- Three cells, each x2 in resolution. In a cell: node0 = up0(x), node1 = up1(x) (``UPS``: interpolate x2 -> cond.
  BN -> LeakyReLU(0.2) -> 1x1 conv); node2 = c0(node0) + c1(node1); node3 = c2(node0) + c3(node1) + c4(node2) (the
  cell output). Ops (``OPS``): cond. BN -> LeakyReLU(0.2) -> conv (dilated ones: dilation 2), or zero / identity.
- Cells 1 and 2 add cross-cell edges (``CROSS``: zero, or an up edge) from the previous cell's node0/1/2 into node2
  (edges 0-2) and node3 (edges 3-5).
- Head: cond. BN -> LeakyReLU(0.2) -> 3x3 conv to the image channels -> tanh -> BatchNorm2d(affine=False).
- Every conditional BN uses eps 0.8 (the co-author code passes 0.8 as eps, as GDFQ does) and ``num_classes``
  classes (co-author code: 1000 inside the cells, the data's count in the head; equal outputs for labels < C).

A genotype is ``{"up": [6 names], "op": [15 names], "cross": [12 names]}``: rows in cell order (up: 2 per cell,
op: 5 per cell c0..c4, cross: 6 per cell for cells 1 and 2).
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.common.generators import CategoricalConditionalBN, register_generator

OPS = ("none", "skip_connect", "conv_1x1", "conv_3x3", "conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
UPS = ("nearest", "bilinear")
CROSS = ("none_up", "nearest", "bilinear")
ROWS = {"up": 6, "op": 15, "cross": 12}
CHOICES = {"up": UPS, "op": OPS, "cross": CROSS}
_CONVS = {"conv_1x1": (1, 1), "conv_3x3": (3, 1), "conv_5x5": (5, 1), "dil_conv_3x3": (3, 2), "dil_conv_5x5": (5, 2)}
BN_EPS = 0.8


class Zero(nn.Module):
    def forward(self, x, labels):
        return x.mul(0.0)


class Identity(nn.Module):
    def forward(self, x, labels):
        return x


class CondConv(nn.Module):
    """cond. BN -> LeakyReLU(0.2) -> k x k conv (dilation d, 'same' padding)."""

    def __init__(self, ch: int, num_classes: int, k: int, dilation: int):
        super().__init__()
        self.bn = CategoricalConditionalBN(num_classes, ch, eps=BN_EPS)
        self.conv = nn.Conv2d(ch, ch, k, padding=dilation * (k - 1) // 2, dilation=dilation)

    def forward(self, x, labels):
        return self.conv(F.leaky_relu(self.bn(x, labels), 0.2))


class UpConv(nn.Module):
    """interpolate x2 (nearest | bilinear) -> cond. BN -> LeakyReLU(0.2) -> 1x1 conv."""

    def __init__(self, ch: int, num_classes: int, mode: str):
        super().__init__()
        self.mode = mode
        self.bn = CategoricalConditionalBN(num_classes, ch, eps=BN_EPS)
        self.conv = nn.Conv2d(ch, ch, 1)

    def forward(self, x, labels):
        return self.conv(F.leaky_relu(self.bn(F.interpolate(x, scale_factor=2, mode=self.mode), labels), 0.2))


class ZeroUp(nn.Module):
    """The cross edge 'none_up': zeros at the up-sampled size (co-author code: an up edge times 0; no parameters
    here, the output is the same)."""

    def forward(self, x, labels):
        n, c, h, w = x.shape
        return x.new_zeros(n, c, 2 * h, 2 * w)


def make_op(kind: str, name: str, ch: int, num_classes: int) -> nn.Module:
    if name not in CHOICES[kind]:
        raise ValueError(f"generator genotype: {kind} op {name!r} is not one of {CHOICES[kind]}")
    if kind == "op":
        if name == "none":
            return Zero()
        if name == "skip_connect":
            return Identity()
        return CondConv(ch, num_classes, *_CONVS[name])
    if name == "none_up":
        return ZeroUp()
    return UpConv(ch, num_classes, name)


def relaxed_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Continuous relaxation: w_e = softmax(alpha_e) over the candidates of each edge (row) of alpha."""
    return F.softmax(alpha, dim=-1)


def mixed_op(x, labels, ops: nn.ModuleList, weights: torch.Tensor) -> torch.Tensor:
    """Mixed operation of an edge: o_bar(x) = sum_o w_o * o(x)."""
    out = None
    for w, op in zip(weights, ops):
        term = w * op(x, labels)
        out = term if out is None else out + term
    return out


class Edge(nn.Module):
    """One edge: all candidates of its kind (search space) or the one named (fixed generator)."""

    def __init__(self, kind: str, names, ch: int, num_classes: int):
        super().__init__()
        self.names = list(names)
        self.ops = nn.ModuleList(make_op(kind, n, ch, num_classes) for n in self.names)

    def forward(self, x, labels, weights=None):
        if weights is None:
            if len(self.ops) != 1:
                raise ValueError("a search-space edge needs its architecture weights")
            return self.ops[0](x, labels)
        return mixed_op(x, labels, self.ops, weights)


class GenCell(nn.Module):
    """x2 cell: node0/node1 by up edges, node2 = c0(n0) + c1(n1) [+ cross0..2], node3 = c2(n0) + c3(n1) + c4(n2)
    [+ cross3..5] (the cell output)."""

    def __init__(self, ch: int, num_classes: int, up, op, cross=None):
        super().__init__()
        self.up = nn.ModuleList(Edge("up", n, ch, num_classes) for n in up)
        self.op = nn.ModuleList(Edge("op", n, ch, num_classes) for n in op)
        self.cross = nn.ModuleList(Edge("cross", n, ch, num_classes) for n in cross) if cross is not None else None

    def forward(self, x, prev, labels, w_up=None, w_op=None, w_cross=None):
        def pick(ws, i):
            return None if ws is None else ws[i]

        n0 = self.up[0](x, labels, pick(w_up, 0))
        n1 = self.up[1](x, labels, pick(w_up, 1))
        n2 = self.op[0](n0, labels, pick(w_op, 0)) + self.op[1](n1, labels, pick(w_op, 1))
        if self.cross is not None:
            c = [self.cross[i](prev[i % 3], labels, pick(w_cross, i)) for i in range(6)]
            n2 = c[0] + c[1] + c[2] + n2
        n3 = (self.op[2](n0, labels, pick(w_op, 2)) + self.op[3](n1, labels, pick(w_op, 3))
              + self.op[4](n2, labels, pick(w_op, 4)))
        if self.cross is not None:
            n3 = c[3] + c[4] + c[5] + n3
        return n3, (n0, n1, n2)


class CellGenerator(nn.Module):
    """G(z, y) over the cell space. ``genotype`` None: the search space (every candidate on every edge, mixed by
    softmax(alpha_up / alpha_op / alpha_cross); alpha init 1e-3 N(0, 1), as DARTS); a genotype dict: that
    generator."""

    def __init__(self, num_classes: int, latent_dim: int = 100, image_size: int = 32, channels: int = 3,
                 genotype: dict | None = None, width: int = 64):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size={image_size}: the cell generator needs a multiple of 8 (three x2 cells)")
        self.search = genotype is None
        if not self.search:
            for kind, n in ROWS.items():
                if len(genotype.get(kind, ())) != n:
                    raise ValueError(f"generator genotype: '{kind}' needs {n} entries, got {genotype.get(kind)}")
        rows = {k: ([list(CHOICES[k])] * n if self.search else [[g] for g in genotype[k]]) for k, n in ROWS.items()}
        self.width, self.bottom = width, image_size // 8
        d0 = latent_dim // 3
        self.chunks = (d0, d0, latent_dim - 2 * d0)
        self.l1 = nn.Linear(self.chunks[0], self.bottom ** 2 * width)
        self.l2 = nn.Linear(self.chunks[1], (2 * self.bottom) ** 2 * width)
        self.l3 = nn.Linear(self.chunks[2], (4 * self.bottom) ** 2 * width)
        self.cells = nn.ModuleList(
            GenCell(width, num_classes, rows["up"][2 * k:2 * k + 2], rows["op"][5 * k:5 * k + 5],
                    rows["cross"][6 * (k - 1):6 * k] if k else None) for k in range(3))
        self.out_bn = CategoricalConditionalBN(num_classes, width, eps=BN_EPS)
        self.out_conv = nn.Conv2d(width, channels, 3, 1, 1)
        self.out_norm = nn.BatchNorm2d(channels, affine=False)
        if self.search:
            for kind, n in ROWS.items():
                setattr(self, f"alpha_{kind}", nn.Parameter(1e-3 * torch.randn(n, len(CHOICES[kind]))))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_up, self.alpha_op, self.alpha_cross] if self.search else []

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("alpha_")]

    def forward(self, z, labels):
        n, b, ch = z.shape[0], self.bottom, self.width
        z0, z1, z2 = torch.split(z, self.chunks, dim=1)
        inputs = (self.l1(z0).view(n, ch, b, b), self.l2(z1).view(n, ch, 2 * b, 2 * b),
                  self.l3(z2).view(n, ch, 4 * b, 4 * b))
        w = {k: relaxed_weights(getattr(self, f"alpha_{k}")) if self.search else None for k in ROWS}

        def rows(kind, lo, hi):
            return None if w[kind] is None else w[kind][lo:hi]

        h, prev = inputs[0], None
        for k, cell in enumerate(self.cells):
            if k:
                h = h + inputs[k]
            h, prev = cell(h, prev, labels, rows("up", 2 * k, 2 * k + 2), rows("op", 5 * k, 5 * k + 5),
                           rows("cross", 6 * (k - 1), 6 * k) if k else None)
        h = F.leaky_relu(self.out_bn(h, labels), 0.2)
        return self.out_norm(torch.tanh(self.out_conv(h)))


# ---- the generators the AutoReCon authors discovered (co-author code iamkanghyunchoi/ait, AutoReCon_AIT/
# generator_architecture.py, one-hot rows decoded with the candidate orders above) -----------------------------
_N, _B, _Z = "nearest", "bilinear", "none_up"
_D5, _D3, _C5, _C3, _C1 = "dil_conv_5x5", "dil_conv_3x3", "conv_5x5", "conv_3x3", "conv_1x1"
DISCOVERED = {
    "cifar10": {"up": [_N, _N, _N, _N, _B, _N],
                "op": [_D5, "none", _D5, _D3, _C5, _D5, _D5, _C3, _D3, _D5, _D5, _D5, _C1, _C5, _D3],
                "cross": [_Z, _Z, _B, _Z, _Z, _N, _N, _N, _N, _B, _B, _B]},
    "cifar100": {"up": [_B, _N, _N, _N, _N, _N],
                 "op": [_D5, _D5, _D5, "none", _C5, _D5, _C5, _C1, _D3, _D5, _D5, _D3, _C5, _C5, _D5],
                 "cross": [_Z, _B, _N, _Z, _Z, _N, _Z, _B, _N, _N, _B, _B]},
    "resnet18": {"up": [_B] * 6,
                 "op": [_D5] * 5 + [_D5, _D5, _D5, _D5, _D3] + [_D5, _D5, _C5, _D3, _D3],
                 "cross": [_N, _B, _N, _B, _B, _N, _B, _B, _N, _N, _B, _N]},
    "resnet50": {"up": [_B] * 6,
                 "op": [_D5] * 5 + [_D5, _D5, _C3, _C1, _C1] + [_D3, _D5, _D5, _C5, _D3],
                 "cross": [_B, _B, _B, _N, _N, _B, _N, _N, _N, _N, _B, _B]},
    "mobilenet_v2": {"up": [_B, _B, _B, _B, _N, _B],
                     "op": [_D5, _D5, _C5, _D5, _D5, _C5, _D5, _C1, _C1, _C1, _C3, _D5, _C5, _D5, _D3],
                     "cross": [_B, _B, _N, _B, _B, _B, _B, _N, _B, _B, _B, _N]},
}
for _name, _genotype in DISCOVERED.items():
    register_generator(functools.partial(CellGenerator, genotype=_genotype), name=f"ait_discovered_{_name}")

"""NAT / NAT++ cell networks: the operation space, cell DAGs (DARTS genotype style), the derived network of a cell
(``nat_cell``) and the shared-weight super-network whose edges hold every operation (``NATSupernet``). The policy
and its training are in methods/nat.py. Notes: ../shared/papers/nat.md.

Operation space (NAT++ / NATv2, 13 ops in the official order; ``null`` = no connection, last):

===============  ============================================================================================
``max_pool_kxk``  k x k max pooling (supernet: + affine-free BN, as the official search model)
``avg_pool_kxk``  k x k average pooling, padding not counted (likewise)
``skip_connect``  identity; on a stride-2 edge FactorizedReduce (two 1x1 convs of C/2 channels on offset grids)
``sep_conv_kxk``  DARTS separable conv: (ReLU, depthwise k x k, pointwise 1x1, BN) twice, the first with the stride
``dil_conv_kxk``  ReLU, depthwise k x k dilation 2, pointwise 1x1, BN
``conv_kxk``      ReLU, k x k conv, BN
``null``          zeros (no connection)
===============  ============================================================================================

Cell DAG (the official ``(op, from, to)`` form, YAML-friendly): ``{"normal": [[op, f, t], ...], "normal_concat":
[...] | null, "reduce": [...], "reduce_concat": ...}``. Nodes 0 and 1 are the outputs of the two previous cells,
nodes 2 .. steps+1 are intermediate; every intermediate node has exactly two incoming edges, listed in order of t
(the policy's node features pair them). ``concat`` lists the nodes concatenated into the cell's output (null: all
intermediate nodes). Edges out of nodes 0 and 1 have stride 2 in a reduction cell. ``RESBLOCK`` is the official
ResNet basic block as a cell (conv3 -> conv3 with a skip, concat [5]).

Networks (DARTS' CIFAR skeleton): stem conv3x3 (3C) + BN; ``layers`` cells, the cells at layers//3 and 2*layers//3
reduce (stride 2, double width); each cell preprocesses its two inputs with ReLU-conv1x1-BN (FactorizedReduce after
a reduction cell); global average pool; linear classifier. The derived net concatenates only its ``concat`` nodes
(DARTS' NetworkCIFAR; inferred: the official evaluation code is not released); the supernet keeps ``steps`` x C
channels and multiplies nodes outside ``concat`` by zero (official NASCell).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models import register_model

#: NAT++ operation set in the official order (genotypes.FULLY_CONCAT_PRIMITIVES); null last
PRIMITIVES = ("max_pool_3x3", "max_pool_5x5", "avg_pool_3x3", "avg_pool_5x5", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "conv_1x1", "conv_3x3", "conv_5x5", "null")

#: the official DARTS (V2) cell and the ResNet basic block as a cell (NATv2 genotypes.py, paper note's table)
DARTS = {"normal": [["sep_conv_3x3", 0, 2], ["sep_conv_3x3", 1, 2], ["sep_conv_3x3", 0, 3], ["sep_conv_3x3", 1, 3],
                    ["sep_conv_3x3", 1, 4], ["skip_connect", 0, 4], ["skip_connect", 0, 5], ["dil_conv_3x3", 2, 5]],
         "normal_concat": [2, 3, 4, 5],
         "reduce": [["max_pool_3x3", 0, 2], ["max_pool_3x3", 1, 2], ["skip_connect", 2, 3], ["max_pool_3x3", 1, 3],
                    ["max_pool_3x3", 0, 4], ["skip_connect", 2, 4], ["skip_connect", 2, 5], ["max_pool_3x3", 1, 5]],
         "reduce_concat": [2, 3, 4, 5]}
_RES = [["null", 0, 2], ["skip_connect", 1, 2], ["null", 0, 3], ["conv_3x3", 2, 3], ["null", 0, 4],
        ["conv_3x3", 3, 4], ["skip_connect", 2, 5], ["skip_connect", 4, 5]]
RESBLOCK = {"normal": _RES, "normal_concat": [5], "reduce": _RES, "reduce_concat": [5]}
GENOTYPES = {"darts": DARTS, "resblock": RESBLOCK}


# ---- operations ---------------------------------------------------------------------------------------------

class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride, padding, affine=True):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride, padding, dilation, affine=True):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_in, k, stride, padding, dilation=dilation, groups=c_in,
                                              bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=affine))


class SepConv(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride, padding, affine=True):
        super().__init__(DilConv(c_in, c_in, k, stride, padding, 1, affine), DilConv(c_in, c_out, k, 1, padding, 1, affine))


class FactorizedReduce(nn.Module):
    """Stride-2 identity: ReLU, two 1x1 stride-2 convs (the second on the grid shifted by one pixel), concat, BN."""

    def __init__(self, c_in, c_out, affine=True):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


def make_op(name: str, c: int, stride: int, affine: bool, pool_bn: bool = False) -> nn.Module:
    """The module of op ``name`` on an edge of ``c`` channels (``pool_bn``: BN after pooling, the supernet's)."""
    if name == "null":
        return Zero(stride)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    kind, _, size = name.rpartition("_")
    k = int(size.split("x")[0]) if "x" in size else None
    if kind in ("max_pool", "avg_pool"):
        pool = (nn.MaxPool2d(k, stride, k // 2) if kind == "max_pool"
                else nn.AvgPool2d(k, stride, k // 2, count_include_pad=False))
        return nn.Sequential(pool, nn.BatchNorm2d(c, affine=False)) if pool_bn else pool
    if kind == "sep_conv":
        return SepConv(c, c, k, stride, k // 2, affine)
    if kind == "dil_conv":
        return DilConv(c, c, k, stride, k - 1, 2, affine)
    if kind == "conv":
        return ReLUConvBN(c, c, k, stride, k // 2, affine)
    raise ValueError(f"unknown NAT op {name!r}; allowed: {', '.join(PRIMITIVES)}")


# ---- cell DAGs ----------------------------------------------------------------------------------------------

def full_concat(steps: int) -> list[int]:
    """Every intermediate node of a cell of ``steps`` nodes (2 .. steps + 1): the concat of a cell that names none."""
    return list(range(2, int(steps) + 2))


def load_genotype(genotype, steps: int = 4) -> dict:
    """A validated genotype dict from a name in GENOTYPES (``darts``, ``resblock``) or a dict."""
    if isinstance(genotype, str):
        if genotype not in GENOTYPES:
            raise ValueError(f"model.genotype={genotype!r}: name one of {', '.join(GENOTYPES)} or give the dict")
        genotype = GENOTYPES[genotype]
    if genotype is None or not hasattr(genotype, "get"):
        raise ValueError("model.genotype is required: a name (darts, resblock) or {normal: [[op, f, t], ...], ...}")
    out = {}
    for kind in ("normal", "reduce"):
        edges = [[str(op), int(f), int(t)] for op, f, t in (genotype.get(kind) or [])]
        if len(edges) != 2 * steps:
            raise ValueError(f"model.genotype.{kind}: {len(edges)} edges; a cell of {steps} steps has {2 * steps} "
                             f"(two per intermediate node)")
        for i, (op, f, t) in enumerate(edges):
            if op not in PRIMITIVES:
                raise ValueError(f"model.genotype.{kind} edge {i}: op {op!r} is not one of {', '.join(PRIMITIVES)}")
            if t != 2 + i // 2 or not 0 <= f < t:
                raise ValueError(f"model.genotype.{kind} edge {i}: ({op}, {f}, {t}) must enter node {2 + i // 2} "
                                 f"from an earlier node (edges sorted by target, two per node)")
        concat = genotype.get(f"{kind}_concat")
        concat = full_concat(steps) if concat is None else [int(c) for c in concat]
        if not concat or any(not 2 <= c < 2 + steps for c in concat):
            raise ValueError(f"model.genotype.{kind}_concat={concat}: intermediate nodes 2..{steps + 1}")
        out[kind], out[f"{kind}_concat"] = edges, concat
    return out


def edge_stride(f: int, reduction: bool) -> int:
    return 2 if reduction and f < 2 else 1


# ---- networks -----------------------------------------------------------------------------------------------

class _Skeleton(nn.Module):
    """Stem, cells and classifier of DARTS' CIFAR network (``cell_factory(reduction, reduction_prev, c_pp, c_p, c)``
    returns a cell and its output width)."""

    def _build(self, in_channels, width, layers, num_classes, stem_multiplier, cell_factory):
        c_curr = stem_multiplier * width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c = c_curr, c_curr, width
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            cell, c_out = cell_factory(reduction, reduction_prev, c_pp, c_p, c)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, c_out
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, self._cell_forward(cell, s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1))


def _preprocess(reduction_prev, c_pp, c_p, c, affine):
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine)


class DerivedCell(nn.Module):
    def __init__(self, edges, concat, c_pp, c_p, c, reduction, reduction_prev, affine=True):
        super().__init__()
        self.reduction, self.edges, self.concat = reduction, [tuple(e) for e in edges], list(concat)
        self.preprocess0, self.preprocess1 = _preprocess(reduction_prev, c_pp, c_p, c, affine)
        self.ops = nn.ModuleList(make_op(op, c, edge_stride(f, reduction), affine) for op, f, t in self.edges)

    def forward(self, s0, s1):
        states = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for (op, f, t), module in zip(self.edges, self.ops):
            out = module(states[f])
            states[t] = states[t] + out if t in states else out
        return torch.cat([states[i] for i in self.concat], dim=1)


class NATNet(_Skeleton):
    """The network of a fixed genotype (the input architecture, or a transformed one), trained from scratch."""

    def __init__(self, genotype, num_classes=10, in_channels=3, width=16, layers=8, steps=4, stem_multiplier=3):
        super().__init__()
        self.genotype = load_genotype(genotype, steps)
        g = self.genotype

        def factory(reduction, reduction_prev, c_pp, c_p, c):
            kind = "reduce" if reduction else "normal"
            cell = DerivedCell(g[kind], g[f"{kind}_concat"], c_pp, c_p, c, reduction, reduction_prev)
            return cell, c * len(g[f"{kind}_concat"])
        self._build(in_channels, width, layers, num_classes, stem_multiplier, factory)

    @staticmethod
    def _cell_forward(cell, s0, s1):
        return cell(s0, s1)


class SuperCell(nn.Module):
    """Every edge (f -> t, f < t) of the cell holds all ``ops`` (shared weights); the forward runs the ops of the
    architecture it is given: ``arch`` = (edges [(op, f, t), ...], concat)."""

    def __init__(self, ops, steps, c_pp, c_p, c, reduction, reduction_prev, affine=False):
        super().__init__()
        self.ops_names, self.steps, self.reduction = list(ops), steps, reduction
        self.preprocess0, self.preprocess1 = _preprocess(reduction_prev, c_pp, c_p, c, affine)
        self.edges = nn.ModuleDict()
        for t in range(2, steps + 2):
            for f in range(t):
                self.edges[f"{f}_{t}"] = nn.ModuleDict(
                    {o: make_op(o, c, edge_stride(f, reduction), affine, pool_bn=True) for o in self.ops_names})

    def forward(self, s0, s1, arch):
        edges, concat = arch
        states = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for op, f, t in edges:
            out = self.edges[f"{f}_{t}"][op](states[f])
            states[t] = states[t] + out if t in states else out
        # nodes outside concat are multiplied by zero: the width stays steps * C (official NASCell)
        return torch.cat([states[i] if i in concat else states[i] * 0 for i in range(2, self.steps + 2)], dim=1)


class NATSupernet(_Skeleton):
    """The shared-weight super-network: ``set_arch(normal, reduce)`` picks the ops every cell runs (all normal
    cells share one architecture, all reduction cells the other). BNs inside ops are affine-free; the stem's is not."""

    def __init__(self, num_classes=10, in_channels=3, width=16, layers=8, steps=4, stem_multiplier=3,
                 ops=PRIMITIVES):
        super().__init__()
        self.steps, self.ops = int(steps), list(ops)

        def factory(reduction, reduction_prev, c_pp, c_p, c):
            return SuperCell(self.ops, self.steps, c_pp, c_p, c, reduction, reduction_prev), c * self.steps
        self._build(in_channels, width, layers, num_classes, stem_multiplier, factory)
        self.arch = None

    def set_arch(self, normal, reduce, normal_concat=None, reduce_concat=None) -> None:
        """The architecture the next forwards run: edges ``[(op, f, t), ...]`` per cell type and their concat."""
        full = full_concat(self.steps)
        self.arch = {"normal": ([tuple(e) for e in normal], list(normal_concat or full)),
                     "reduce": ([tuple(e) for e in reduce], list(reduce_concat or full))}

    def get_extra_state(self):       # the current architecture travels with the weights (checkpoints, resume)
        return {"arch": self.arch}

    def set_extra_state(self, state):
        self.arch = state.get("arch") if state else None

    def _cell_forward(self, cell, s0, s1):
        if self.arch is None:
            raise RuntimeError("NATSupernet.forward before set_arch (method=nat sets the sampled architecture)")
        return cell(s0, s1, self.arch["reduce" if cell.reduction else "normal"])


# ---- registry -----------------------------------------------------------------------------------------------

@register_model
def nat_cell(num_classes=10, in_channels=3, image_size=32, genotype="darts", width=16, layers=8, steps=4,
             stem_multiplier=3):
    """A DARTS-skeleton network of one cell genotype (name: darts, resblock; or a dict), as NAT's input/output."""
    geno = load_genotype(genotype, int(steps))
    model = NATNet(geno, num_classes, in_channels, int(width), int(layers), int(steps), int(stem_multiplier))
    model.build_kwargs = {"genotype": geno, "width": int(width), "layers": int(layers), "steps": int(steps),
                          "stem_multiplier": int(stem_multiplier)}
    return model


__all__ = ["PRIMITIVES", "DARTS", "RESBLOCK", "GENOTYPES", "make_op", "full_concat", "load_genotype", "NATNet",
           "NATSupernet", "nat_cell"]

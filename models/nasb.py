"""NASB's cell-based binary networks: the searchable supernet (``nasb_supernet``) and the derived network of a
fixed genotype (``nasb_cell``). The search itself (architecture parameters, their update, the derivation of the
genotype) is in methods/nasb.py; this file only builds networks. Notes: ../shared/papers/nasb.md.

HYPOTHESIS (the paper's search space is not known, only its abstract): a DARTS-style cell space with binary-
friendly operations, the shortcut and the downsampling choices that the abstract's two motives (accumulation
error of binarization in the forward pass, gradient mismatch in the backward pass) point at.

Skeleton (the CIFAR Bi-Real ResNet's, so that one genotype is Bi-Real ResNet-20 exactly):
FP 3x3 stem (width C) + BN + act -> ``cells`` = (n1, n2, n3) cells per stage at widths C, 2C, 4C, the first cell of
stages 2+ a reduction cell (its edges from the cell input have stride 2 and double the channels) -> global
average pool -> BatchNorm1d -> FP linear.

Cell: input h_0; ``nodes`` intermediate nodes, h_i = sum over the cell's edges (j -> i, j < i) of op_ji(h_j).
The supernet's cell output is its last node h_B; a derived cell's output is the sum of its leaves (the nodes no
later node reads), which is h_B for a chain such as the Bi-Real block (DARTS concatenates all nodes instead).

Operations (all binary convs are 3x3, so every parametric op has the same BOPs; pooling is not counted). The
default lists (NORMAL_OPS, REDUCE_OPS) hold only ops with one binary conv: with one kept edge per node every derived
net then has at most the hand-designed Bi-Real cell's OPs. The parameter-free ops are available (DARTS' space), but
a 10-step probe of the search with them derived a net without any conv (docs/nasb.md).

===================  ===========================================================================================
``none``             zero (search only; never derived)
``skip_connect``     identity; on a reduction edge the option-A shortcut (stride-2 subsample, zero-pad channels)
``avg_pool_3x3``     3x3 average pool (stride 2 on reduction edges, then zero-padded channels)
``max_pool_3x3``     3x3 max pool (likewise)
``bconv_3x3``        act(BN(bconv3x3(x))): a binary conv without shortcut
``bconv_3x3_res``    act(BN(bconv3x3(x)) + shortcut(x)): Bi-Real's shortcut around the binary conv (option A on
                     reduction edges)
``bconv_3x3_res_pool`` as ``bconv_3x3_res`` with a 3x3 average-pool shortcut (stride 2 and zero-padded channels
                     on reduction edges): a parameter-free downsample that averages instead of subsampling
``bdil_3x3_res``     as ``bconv_3x3_res`` with dilation 2 (same BOPs); not in the default lists
``bconv_3x3_res_fp`` reduction edges only: act(BN(bconv3x3 s2(x)) + BN(FP conv1x1(AvgPool2(x)))), Bi-Real's FP
                     downsample (adds FP MACs, so not in the default, equal-OPs lists)
===================  ===========================================================================================

Genotype (YAML-friendly): ``{"normal": [[[op, input], ...], ...], "reduce": [...]}``: per cell type, one list
per intermediate node of its kept edges ``[op, input index]`` (0 is the cell input, i the i-th node). One normal
and one reduce genotype are shared by all cells of that type (as in DARTS). A genotype may also be given as the
path of a YAML file holding it (or holding a whole model config with a ``genotype`` key: the file the search
writes).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from models import register_model
from models.binary import BinaryBackbone, _act, _pick_act, _spec
from models.cifar_resnet import ZeroPadShortcut

#: the default (equal-OPs) space: every op but none is one binary 3x3 conv, so each derived node costs one conv
NORMAL_OPS = ("none", "bconv_3x3", "bconv_3x3_res")
REDUCE_OPS = ("none", "bconv_3x3", "bconv_3x3_res", "bconv_3x3_res_pool")
#: further ops a model config may list: parameter-free ones (DARTS'), a dilated conv, the FP downsample
EXTRA_OPS = ("skip_connect", "avg_pool_3x3", "max_pool_3x3", "bdil_3x3_res", "bconv_3x3_res_fp")
ALL_OPS = REDUCE_OPS + EXTRA_OPS
REDUCE_ONLY = ("bconv_3x3_res_fp",)

#: Bi-Real ResNet-20's block as a genotype: two binary 3x3 convs in a chain, a shortcut around each
BIREAL_GENOTYPE = {"normal": [[["bconv_3x3_res", 0]], [["bconv_3x3_res", 1]]],
                   "reduce": [[["bconv_3x3_res", 0]], [["bconv_3x3_res", 1]]]}


# ---- operations ---------------------------------------------------------------------------------------------

class Zero(nn.Module):
    """``none``: zeros of the edge's output shape."""

    def __init__(self, c_out: int, stride: int):
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x):
        b, _, h, w = x.shape
        return x.new_zeros(b, self.c_out, -(-h // self.stride), -(-w // self.stride))


class PadChannels(nn.Module):
    """Zero-pad the channels from c_in to c_out (split as option A does); identity when equal."""

    def __init__(self, extra: int):
        super().__init__()
        self.extra = extra

    def forward(self, x):
        if not self.extra:
            return x
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class Pool(nn.Module):
    def __init__(self, kind: str, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.pool = (nn.AvgPool2d(3, stride, 1, count_include_pad=False) if kind == "avg"
                     else nn.MaxPool2d(3, stride, 1))
        self.pad = PadChannels(c_out - c_in)

    def forward(self, x):
        return self.pad(self.pool(x))


class BinaryConvOp(nn.Module):
    """act(BN(bconv(x)) [+ shortcut(x)]); the shortcut is the identity, option A (zero-pad) on a reduction edge, or
    (``fp_downsample``) AvgPool(2) -> FP 1x1 conv -> BN as in Bi-Real's ImageNet downsample."""

    def __init__(self, spec, c_in, c_out, stride, act, affine=True, residual=True, dilation=1, fp_downsample=False,
                 pool_shortcut=False):
        super().__init__()
        self.conv = spec.conv(c_in, c_out, 3, stride, dilation, role="body")
        if dilation != 1:
            self.conv.dilation = (dilation, dilation)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)
        self.act = _act(act, c_out)
        self.residual = residual
        self.shortcut = None
        if residual:
            if fp_downsample:
                self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride) if stride != 1 else nn.Identity(),
                                              spec.conv(c_in, c_out, 1, role="downsample"),
                                              nn.BatchNorm2d(c_out, affine=affine))
            elif pool_shortcut:
                self.shortcut = Pool("avg", c_in, c_out, stride)
            elif stride != 1 or c_in != c_out:
                self.shortcut = ZeroPadShortcut(c_out - c_in)
            else:
                self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.bn(self.conv(x))
        if self.residual:
            out = out + self.shortcut(x)
        return self.act(out)


def make_op(name: str, spec, c_in: int, c_out: int, stride: int, act: str, affine: bool = True) -> nn.Module:
    """The module of operation ``name`` on an edge c_in -> c_out with ``stride`` (2: a reduction edge)."""
    reduction = stride != 1 or c_in != c_out
    if name == "none":
        return Zero(c_out, stride)
    if name == "skip_connect":
        return ZeroPadShortcut(c_out - c_in) if reduction else nn.Identity()
    if name in ("avg_pool_3x3", "max_pool_3x3"):
        return Pool(name[:3], c_in, c_out, stride)
    if name == "bconv_3x3":
        return BinaryConvOp(spec, c_in, c_out, stride, act, affine, residual=False)
    if name == "bconv_3x3_res":
        return BinaryConvOp(spec, c_in, c_out, stride, act, affine)
    if name == "bconv_3x3_res_pool":
        return BinaryConvOp(spec, c_in, c_out, stride, act, affine, pool_shortcut=True)
    if name == "bdil_3x3_res":
        return BinaryConvOp(spec, c_in, c_out, stride, act, affine, dilation=2)
    if name == "bconv_3x3_res_fp":
        if not reduction:
            raise ValueError("op bconv_3x3_res_fp is for reduction edges only (reduce_ops)")
        return BinaryConvOp(spec, c_in, c_out, stride, act, affine, fp_downsample=True)
    raise ValueError(f"unknown NASB op {name!r}; allowed: {', '.join(ALL_OPS)}")


# ---- genotypes ----------------------------------------------------------------------------------------------

def cell_edges(nodes: int) -> list[tuple[int, int]]:
    """The supernet's edges (input j, node i), in the order of the rows of the architecture parameters: node 1's
    edge from h_0, then node 2's from h_0, h_1, ... (node i has i incoming edges)."""
    return [(j, i) for i in range(1, nodes + 1) for j in range(i)]


def load_genotype(genotype) -> dict:
    """A genotype dict from a dict, or from the path of a YAML file holding one (or a model config with
    ``genotype:``); validated."""
    if isinstance(genotype, str):
        if not os.path.exists(genotype):
            raise FileNotFoundError(f"model.genotype={genotype}: no such file (give a genotype or a YAML path)")
        with open(genotype) as f:
            loaded = yaml.safe_load(f)
        genotype = loaded.get("genotype", loaded) if isinstance(loaded, dict) else loaded
        if isinstance(genotype, str):
            raise ValueError(f"model.genotype: {genotype!r} in the file is itself a path; inline the genotype")
    if genotype is None:
        raise ValueError("model.genotype is required for model=nasb_cell (a genotype or a YAML path)")
    out = {}
    for kind, allowed in (("normal", ALL_OPS), ("reduce", ALL_OPS)):
        nodes = genotype.get(kind) if hasattr(genotype, "get") else None
        if not nodes:
            raise ValueError(f"model.genotype.{kind}: missing or empty (a list of nodes, each [[op, input], ...])")
        cell = []
        for i, edges in enumerate(nodes, start=1):
            if not edges:
                raise ValueError(f"model.genotype.{kind} node {i}: no edges")
            node = []
            for edge in edges:
                op, j = str(edge[0]), int(edge[1])
                if op not in allowed or op == "none":
                    raise ValueError(f"model.genotype.{kind} node {i}: op {op!r} is not one of "
                                     f"{', '.join(o for o in allowed if o != 'none')}")
                if kind == "normal" and op in REDUCE_ONLY:
                    raise ValueError(f"model.genotype.normal node {i}: {op} is for reduction cells only")
                if not 0 <= j < i:
                    raise ValueError(f"model.genotype.{kind} node {i}: input {j} is not an earlier state (0..{i - 1})")
                node.append([op, j])
            cell.append(node)
        out[kind] = cell
    return out


def leaf_nodes(cell: list) -> list[int]:
    """The nodes no later node reads: their sum is a derived cell's output (the last node for a chain)."""
    read = {j for node in cell for _, j in node}
    return [i for i in range(1, len(cell) + 1) if i not in read]


# ---- networks -----------------------------------------------------------------------------------------------

class _CellNet(BinaryBackbone):
    """stem -> cells -> pooled head (BinaryBackbone's), shared by the supernet and the derived network."""

    def _setup(self, spec, in_channels, width, cells, act, num_classes):
        self._init_hooks()
        self.conv1 = spec.conv(in_channels, width, 3, 1, 1, role="first")
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = _act(act, width)
        self.widths = [width * 2 ** i for i in range(len(cells))]
        self.feature_widths = [width, *self.widths]
        self.plan = []    # (c_in, c_out, reduction) per cell
        c_in = width
        for s, (n, w) in enumerate(zip(cells, self.widths)):
            for k in range(n):
                self.plan.append((c_in, w, s > 0 and k == 0))
                c_in = w

    def _setup_head(self, spec, num_classes):
        self.head_bn = nn.BatchNorm1d(self.widths[-1])
        self.fc = spec.linear(self.widths[-1], num_classes, role="last")

    def init_added(self, module: nn.Module) -> nn.Module:
        """``kaiming_normal_`` on every Conv2d / Linear weight, as the CIFAR binary ResNets."""
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
        return module

    def _stage_feats(self, x, cell_forward):
        h = self.act1(self.bn1(self.conv1(x)))
        feats = [h]                              # stem, then each stage's output (the fusion hook's features)
        for index, (_, _, reduction) in enumerate(self.plan):
            if reduction:
                feats.append(h)
            h = cell_forward(index, h)
        return self._pooled_head(feats + [h])


class DerivedCell(nn.Module):
    """A cell of a fixed genotype: h_i = sum_{(op, j) in node i} op(h_j); output the sum of the leaf nodes."""

    def __init__(self, spec, cell: list, c_in: int, c_out: int, reduction: bool, act: str):
        super().__init__()
        self.cell = cell
        self.leaves = leaf_nodes(cell)
        self.edges = nn.ModuleDict()
        for i in range(1, len(cell) + 1):
            for op, j in cell[i - 1]:
                src = c_in if j == 0 else c_out
                stride = 2 if (reduction and j == 0) else 1
                self.edges[f"{j}_{i}_{op}"] = make_op(op, spec, src, c_out, stride, act)

    def forward(self, x):
        states = [x]
        for i in range(1, len(self.cell) + 1):
            states.append(sum(self.edges[f"{j}_{i}_{op}"](states[j]) for op, j in self.cell[i - 1]))
        return sum(states[i] for i in self.leaves)


class NASBNet(_CellNet):
    """The derived (discrete) network of a genotype."""

    def __init__(self, genotype, num_classes=10, in_channels=3, spec=None, width=16, cells=(3, 3, 3),
                 act="hardtanh"):
        super().__init__()
        spec = _spec(spec)
        self.arch_name = "nasb_cell"
        self.genotype = load_genotype(genotype)
        self._setup(spec, in_channels, width, cells, act, num_classes)
        self.cells = nn.ModuleList(
            DerivedCell(spec, self.genotype["reduce" if r else "normal"], ci, co, r, act) for ci, co, r in self.plan)
        self._setup_head(spec, num_classes)
        self.init_added(self)

    def forward(self, x):
        return self._stage_feats(x, lambda i, h: self.cells[i](h))


class MixedOp(nn.Module):
    """All candidate ops of one edge; ``forward(x, w)`` = sum_o w_o * o(x) (``none`` contributes zero and is not
    computed). The weights w come from the search (methods/nasb.py: mixed_op_weights)."""

    def __init__(self, spec, ops, c_in, c_out, stride, act, affine):
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList(make_op(o, spec, c_in, c_out, stride, act, affine) for o in ops)

    def forward(self, x, weights):
        out = None
        for name, op, w in zip(self.names, self.ops, weights):
            if name == "none":
                continue
            term = w * op(x)
            out = term if out is None else out + term
        if out is None:
            return self.ops[0](x) * weights.sum()
        return out


class SearchCell(nn.Module):
    def __init__(self, spec, ops, nodes, c_in, c_out, reduction, act, affine):
        super().__init__()
        self.nodes = nodes
        self.edges = nn.ModuleList(
            MixedOp(spec, ops, c_in if j == 0 else c_out, c_out, 2 if (reduction and j == 0) else 1, act, affine)
            for j, _ in cell_edges(nodes))

    def forward(self, x, weights):
        states, e = [x], 0
        for i in range(1, self.nodes + 1):
            s = 0
            for j in range(i):
                s = s + self.edges[e](states[j], weights[e])
                e += 1
            states.append(s)
        return states[-1]


class NASBSupernet(_CellNet):
    """The one-shot supernet: every edge a MixedOp; architecture parameters ``alphas_normal`` and
    ``alphas_reduce`` (edges x ops, DARTS init 1e-3 * N(0, 1)) shared by all cells of a type. The weights the
    mixed ops use are set by the method (``arch_weights``: the softmax of the alphas, methods/nasb.py)."""

    def __init__(self, num_classes=10, in_channels=3, spec=None, width=16, cells=(3, 3, 3), nodes=2,
                 normal_ops=NORMAL_OPS, reduce_ops=REDUCE_OPS, act="hardtanh", affine=False):
        super().__init__()
        spec = _spec(spec)
        self.arch_name = "nasb_supernet"
        self.nodes = int(nodes)
        self.normal_ops, self.reduce_ops = list(normal_ops), list(reduce_ops)
        for kind, ops in (("normal", self.normal_ops), ("reduce", self.reduce_ops)):
            bad = [o for o in ops if o not in ALL_OPS or (kind == "normal" and o in REDUCE_ONLY)]
            if bad or len(set(ops)) != len(ops) or not [o for o in ops if o != "none"]:
                raise ValueError(f"model.{kind}_ops={ops}: each once, at least one besides none, from "
                                 f"{', '.join(o for o in ALL_OPS if kind == 'reduce' or o not in REDUCE_ONLY)}")
        self._setup(spec, in_channels, width, cells, act, num_classes)
        self.cells = nn.ModuleList(
            SearchCell(spec, self.reduce_ops if r else self.normal_ops, self.nodes, ci, co, r, act, affine)
            for ci, co, r in self.plan)
        self._setup_head(spec, num_classes)
        self.init_added(self)
        n_edges = len(cell_edges(self.nodes))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(n_edges, len(self.normal_ops)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, len(self.reduce_ops)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def forward(self, x):
        w_normal = F.softmax(self.alphas_normal, dim=-1)     # methods/nasb.py: mixed_op_weights (same formula)
        w_reduce = F.softmax(self.alphas_reduce, dim=-1)
        return self._stage_feats(
            x, lambda i, h: self.cells[i](h, w_reduce if self.plan[i][2] else w_normal))


# ---- registry -----------------------------------------------------------------------------------------------

@register_model
def nasb_cell(num_classes=10, in_channels=3, image_size=32, spec=None, genotype=None, width=16, cells=(3, 3, 3),
              act="auto"):
    """NASB derived network of a genotype (inline, or a YAML path: the search writes nasb_derived.yaml)."""
    geno = load_genotype(genotype)
    model = NASBNet(geno, num_classes, in_channels, spec, int(width), tuple(int(c) for c in cells),
                    _pick_act(act, image_size))
    model.build_kwargs = {"genotype": geno, "width": int(width), "cells": [int(c) for c in cells], "act": act}
    return model


@register_model
def nasb_supernet(num_classes=10, in_channels=3, image_size=32, spec=None, width=16, cells=(3, 3, 3), nodes=2,
                  normal_ops=NORMAL_OPS, reduce_ops=REDUCE_OPS, act="auto", affine=False):
    """NASB one-shot supernet (every edge all candidate ops), searched by method=nasb."""
    model = NASBSupernet(num_classes, in_channels, spec, int(width), tuple(int(c) for c in cells), int(nodes),
                         list(normal_ops), list(reduce_ops), _pick_act(act, image_size), bool(affine))
    model.build_kwargs = {"width": int(width), "cells": [int(c) for c in cells], "nodes": int(nodes),
                          "normal_ops": list(normal_ops), "reduce_ops": list(reduce_ops), "act": act,
                          "affine": bool(affine)}
    return model

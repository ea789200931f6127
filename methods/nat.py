"""``method=nat``: NAT++ (Neural Architecture Transformer; Guo et al., NeurIPS 2019 / TPAMI 2021).

Notes: ../shared/papers/nat.md; docs/nat.md (what comes from the paper, the official code guoyongcs/NATv2 @ e50c9ec,
or is inferred). The input architecture beta is a cell DAG (models/nat_cells.py); a policy pi_theta rewrites the op of
every edge into a valid, no-more-expensive op, keeping the topology; the transformed cell alpha is retrained.

Equations (each a function of this file, by name):

- **Two-level transition rule** (:data:`TRANSITIONS`, :func:`transition_mask`): T(o) = the ops o may become (same
  type at a smaller kernel, a cheaper type, skip_connect, null); ``null`` may become ``skip_connect``. As data: a
  binary matrix M[o, o'] over the 13 ops. ``method.transitions=nat`` is NAT (NeurIPS)'s set {o, skip, null}.
- **Binary-masked softmax** (:func:`bm_softmax`): p(o' | e) = softmax over {o' : M[o_e, o'] = 1} of the edge's
  logits, 0 elsewhere; the official code then adds 1e-5 to the valid probabilities (log p and the entropy use p+1e-5).
- **Graph-convolutional policy** (:class:`NATPolicy`, :func:`cell_adjacency`): node features = an embedding of each
  input node (size 2*edge_hid), and for each intermediate node the concatenation of its two incoming ops' embeddings
  (edge_hid each); a linear map to nfeat (1024); GCN(nfeat -> 100) -> ReLU -> dropout -> GCN(100 -> 100) with
  H' = A H W + b, A[t, f] = number of edges f -> t (no self loops, no normalisation); the intermediate nodes'
  rows -> Linear(100 -> 2|O|): one logit row per incoming edge.
- **Transformation** (:func:`transform_cell`): alpha_e ~ p(. | e) for every edge; log pi = sum_e log p, H = sum_e
  entropy. The same policy rewrites the normal and the reduction cell.
- **Reward** (:func:`reward`): R(alpha | beta) = Acc(alpha; w) - Acc(beta; w), top-1 accuracies on the same policy
  batch under the same shared weights w.
- **REINFORCE with a moving-average baseline and entropy bonus** (:func:`policy_loss`, :func:`advantage`,
  :func:`baseline_update`): L(theta) = -(log pi_normal + log pi_reduce) (R - b) - lambda_n H_normal - lambda_r H_reduce;
  b <- gamma b + (1 - gamma) x, with x = R - b (the official code updates b with the advantage it returns:
  ``baseline_update: official``) or x = R (``baseline_update: reward``, the textbook moving average).
- **Input architectures** (:func:`sample_input_arch`): during the search beta is uniform over the cell space (per
  node two inputs uniform over the earlier nodes, two ops uniform over all but null), as the official ArchMaster.
  ``search_inputs: uniform_null`` (ours) draws the ops over all 13, null included, so the shared weights also see
  nodes with one live input, as an input cell with null edges has (the ResNet block: docs/nat.md); ``target``
  trains on the model's cell only.
- **Shared weights** (models/nat_cells.py NATSupernet): one SGD step of CE(w; beta) per training batch on a fresh
  uniform beta (the engine's step), then ``policy_steps`` REINFORCE steps (:meth:`NAT.after_step`).
- **Inference** (:func:`shared_weight_accuracy`, :meth:`NAT._derive`): K = ``derive.n_archs`` transformed cells of
  the target beta are sampled; the one with the best shared-weight accuracy on a held-out split of the training
  data (``derive.split=heldout``; the official code uses the test split: ``derive.split=test``) is kept and
  retrained from scratch as an ordinary network (``retrain`` stage; ``nat_derived.yaml`` in the run folder).
  The super-net scores every cell with all its intermediate nodes concatenated, whatever the target's ``concat``
  (the official derive builds the super-net without one); the kept cell carries the target's ``concat`` into the
  retrain. ``derive.genotype_concat=true`` scores with the target's ``concat`` instead (ours until 2026-12-02).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from methods import Method, register_method
from methods.base import RunContext, Stage
from core.atomic_files import write_text
from methods.common.heldout import heldout_split
from methods.common.ranks import average_grads
from models.nat_cells import PRIMITIVES, NATNet, NATSupernet, full_concat, load_genotype

#: NAT++ two-level transition rule (official NATv2 search_model.py; FullyConcat and LooseEnd tables are identical)
TRANSITIONS = {
    "conv_5x5": ["conv_5x5", "conv_3x3", "conv_1x1", "sep_conv_5x5", "sep_conv_3x3", "dil_conv_5x5", "dil_conv_3x3",
                 "max_pool_5x5", "max_pool_3x3", "avg_pool_5x5", "avg_pool_3x3", "skip_connect", "null"],
    "conv_3x3": ["conv_3x3", "conv_1x1", "sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3",
                 "skip_connect", "null"],
    "conv_1x1": ["conv_1x1", "skip_connect", "null"],
    "sep_conv_5x5": ["sep_conv_5x5", "sep_conv_3x3", "dil_conv_5x5", "dil_conv_3x3", "max_pool_5x5", "max_pool_3x3",
                     "avg_pool_5x5", "avg_pool_3x3", "skip_connect", "null"],
    "sep_conv_3x3": ["sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "null"],
    "dil_conv_5x5": ["dil_conv_5x5", "dil_conv_3x3", "max_pool_5x5", "max_pool_3x3", "avg_pool_5x5", "avg_pool_3x3",
                     "skip_connect", "null"],
    "dil_conv_3x3": ["dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "null"],
    "avg_pool_5x5": ["avg_pool_5x5", "avg_pool_3x3", "max_pool_5x5", "max_pool_3x3", "skip_connect", "null"],
    "avg_pool_3x3": ["avg_pool_3x3", "max_pool_3x3", "skip_connect", "null"],
    "max_pool_5x5": ["max_pool_5x5", "max_pool_3x3", "avg_pool_5x5", "avg_pool_3x3", "skip_connect", "null"],
    "max_pool_3x3": ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "null"],
    "skip_connect": ["skip_connect", "null"],
    "null": ["skip_connect", "null"],
}
#: NAT (NeurIPS): every op may stay, become skip_connect or be removed (null)
NAT_TRANSITIONS = {o: sorted({o, "skip_connect", "null"}, key=PRIMITIVES.index) for o in PRIMITIVES}
TRANSITION_SETS = {"natpp": TRANSITIONS, "nat": NAT_TRANSITIONS}
BASELINE_UPDATES = ("official", "reward")
DERIVE_ORDERS = ("shuffled", "index")   # the held-out scoring batches: one fixed random order | index order
DERIVE_SPLITS = ("heldout", "test")
SEARCH_INPUTS = ("uniform", "uniform_null", "target")
PHASES = ("search", "retrain")
GENOTYPE_FILE = "nat_derived.yaml"
EPS = 1e-5


# ---- the equations ----------------------------------------------------------------------------------------------
def transition_mask(table: dict = TRANSITIONS, ops=PRIMITIVES) -> torch.Tensor:
    """Binary matrix M (ops x ops): M[i, j] = 1 when op i may become op j."""
    mask = torch.zeros(len(ops), len(ops), dtype=torch.bool)
    for i, o in enumerate(ops):
        for target in table[o]:
            mask[i, ops.index(target)] = True
    return mask


def bm_softmax(logits: torch.Tensor, mask: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Binary-masked softmax of each row: softmax over the valid entries (mask 1) plus ``eps``, 0 on invalid ones."""
    p = F.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.where(mask, p + eps, torch.zeros_like(p))


def masked_log_prob_entropy(probs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p on the valid entries (0 elsewhere) and the entropy -sum_valid p log p of each row."""
    logp = torch.where(mask, torch.log(probs.clamp_min(1e-30)), torch.zeros_like(probs))
    return logp, -(probs * logp).sum(-1)


def cell_adjacency(edges, n_nodes: int) -> torch.Tensor:
    """A[t, f] = number of edges f -> t of the cell (no self loops, no normalisation; the official sparse COO sums
    duplicate edges)."""
    adj = torch.zeros(n_nodes, n_nodes)
    for _, f, t in edges:
        adj[t, f] += 1.0
    return adj


class GraphConvolution(nn.Module):
    """H' = A (H W) + b (Kipf and Welling's layer without normalisation; init U(-1/sqrt(out), 1/sqrt(out)))."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        bound = 1.0 / out_features ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x, adj):
        return adj @ (x @ self.weight) + self.bias


class NATPolicy(nn.Module):
    """The graph-convolutional transformer pi_theta: per-edge logits (2 * steps, |ops|) of a cell. Parameter names
    and sizes follow the official ArchTransformer, so its state_dict loads here."""

    def __init__(self, n_ops: int = len(PRIMITIVES), steps: int = 4, edge_hid: int = 100, nfeat: int = 1024,
                 gcn_hid: int = 100, dropout: float = 0.0):
        super().__init__()
        self.steps, self.dropout = steps, dropout
        self.node_hidden = nn.Embedding(2, 2 * edge_hid)     # the two cell inputs
        self.op_hidden = nn.Embedding(n_ops, edge_hid)        # incoming ops of an intermediate node
        self.emb_attn = nn.Linear(2 * edge_hid, nfeat)
        self.gc1 = GraphConvolution(nfeat, gcn_hid)
        self.gc2 = GraphConvolution(gcn_hid, gcn_hid)
        self.fc = nn.Linear(gcn_hid, 2 * n_ops)

    def forward(self, op_index: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """``op_index`` (2 * steps,): op ids of the cell's edges in order (two per node); ``adj`` (steps+2,)^2."""
        dev = self.fc.weight.device
        op_index, adj = op_index.to(dev), adj.to(dev)
        ops = self.op_hidden(op_index).view(self.steps, -1)          # [op0 | op1] per intermediate node
        x = torch.cat([self.node_hidden(torch.arange(2, device=dev)), ops], dim=0)
        x = self.emb_attn(x)
        x = F.relu(self.gc1(x, adj))
        x = F.dropout(x, self.dropout, training=self.training)
        x = self.gc2(x, adj)[2:]
        return self.fc(x).view(2 * self.steps, -1)


def transform_cell(policy: NATPolicy, edges, mask: torch.Tensor, generator: torch.Generator | None,
                   ops=PRIMITIVES, greedy: bool = False):
    """alpha ~ pi_theta(. | beta) for one cell: (new edges, log pi (sum over edges), entropy (sum), probs)."""
    idx = torch.tensor([ops.index(op) for op, _, _ in edges])
    logits = policy(idx, cell_adjacency(edges, policy.steps + 2))
    row_mask = mask.to(logits.device)[idx]
    probs = bm_softmax(logits, row_mask)
    logp, ent = masked_log_prob_entropy(probs, row_mask)
    if greedy:
        act = probs.argmax(-1)
    else:
        act = torch.multinomial(probs.detach().cpu(), 1, generator=generator).squeeze(1).to(logits.device)
    new = [[ops[int(a)], f, t] for a, (_, f, t) in zip(act.tolist(), edges)]
    return new, logp.gather(1, act[:, None]).sum(), ent.sum(), probs


def sample_input_arch(steps: int, ops, generator: torch.Generator, with_null: bool = False) -> list:
    """A uniform cell (the official ArchMaster with forced-uniform probabilities): per node t = 2..steps+1, two inputs
    uniform over 0..t-1 (independently), then two ops uniform over all ops but null (``with_null``: all ops)."""
    choices = [o for o in ops if with_null or o != "null"]
    edges = []
    for t in range(2, steps + 2):
        f = [int(torch.randint(t, (1,), generator=generator)) for _ in range(2)]
        o = [choices[int(torch.randint(len(choices), (1,), generator=generator))] for _ in range(2)]
        edges += [[o[0], f[0], t], [o[1], f[1], t]]
    return edges


def sample_input_cell(steps: int, generator: torch.Generator, with_null: bool = False) -> dict:
    """A uniform input architecture beta: both cell types drawn by :func:`sample_input_arch`, every node
    concatenated."""
    full = full_concat(steps)
    return {"normal": sample_input_arch(steps, PRIMITIVES, generator, with_null), "normal_concat": full,
            "reduce": sample_input_arch(steps, PRIMITIVES, generator, with_null), "reduce_concat": full}


def reward(acc_alpha: float, acc_beta: float) -> float:
    """R(alpha | beta) = Acc(alpha; w) - Acc(beta; w) (fractions, on the same batch and shared weights)."""
    return acc_alpha - acc_beta


def advantage(r: float, baseline: float) -> float:
    """R - b (the official code uses R itself while b is exactly 0, the same number)."""
    return r - baseline if baseline else r


def baseline_update(baseline: float, r: float, adv: float, gamma: float, rule: str = "official") -> float:
    """b <- gamma b + (1 - gamma) x; x = the advantage (official code) or the reward (``rule="reward"``)."""
    x = adv if rule == "official" else r
    return baseline * gamma + x * (1 - gamma)


def policy_loss(logp_normal, logp_reduce, adv: float, ent_normal, ent_reduce, coeff=(0.003, 0.003)):
    """REINFORCE: -(log pi_n + log pi_r) (R - b) - lambda_n H_n - lambda_r H_r."""
    return -(logp_normal + logp_reduce) * adv - (coeff[0] * ent_normal + coeff[1] * ent_reduce)


def batch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


@torch.no_grad()
def shared_weight_accuracy(supernet: NATSupernet, loader, genotype: dict, device, limit: int | None = None) -> float:
    """Top-1 (fraction) of ``genotype`` under the super-net's shared weights over ``loader``. BN uses batch statistics
    (the official code scores in train mode); the running statistics are left unchanged."""
    supernet.set_arch(genotype["normal"], genotype["reduce"], genotype["normal_concat"], genotype["reduce_concat"])
    bns = [m for m in supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    was_training = supernet.training
    supernet.train()
    for m in bns:
        m.momentum = 0.0
    correct = seen = 0
    try:
        for i, (x, y) in enumerate(loader):
            if limit is not None and i >= limit:
                break
            x, y = x.to(device), y.to(device)
            correct += int((supernet(x).argmax(-1) == y).sum())
            seen += len(y)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        supernet.train(was_training)
    return correct / max(seen, 1)


def changed_edges(a: dict, b: dict) -> int:
    return sum(ea[0] != eb[0] for kind in ("normal", "reduce") for ea, eb in zip(a[kind], b[kind]))


def dead_output(g: dict) -> list[str]:
    """The cell kinds whose output is zero for every input: each ``concat`` node has only null inputs or inputs from
    such nodes (the rules allow it and the official derivation does not reject it)."""
    dead = []
    for kind in ("normal", "reduce"):
        live = {0, 1}
        for op, f, t in sorted(g[kind], key=lambda e: e[2]):
            if op != "null" and f in live:
                live.add(t)
        if not live & set(g[f"{kind}_concat"]):
            dead.append(kind)
    return dead


def genotype_str(g: dict) -> str:
    return "; ".join(f"{k}: " + " ".join(f"{op}({f},{t})" for op, f, t in g[k]) + f" concat {g[k + '_concat']}"
                     for k in ("normal", "reduce"))


# ---- the method -------------------------------------------------------------------------------------------------
@register_method("nat")
class NAT(Method):
    family = "nas"

    def __init__(self, cfg):
        super().__init__(cfg)
        for key, allowed, default in (("transitions", tuple(TRANSITION_SETS), "natpp"),
                                      ("search_inputs", SEARCH_INPUTS, "uniform")):
            if cfg.get(key, default) not in allowed:
                raise ValueError(f"method.{key}={cfg.get(key)!r}; choose one of {', '.join(allowed)}")
        self.table = TRANSITION_SETS[cfg.get("transitions", "natpp")]
        self.mask = transition_mask(self.table)
        s = dict(cfg.get("search") or {})
        self.search = {"width": s.get("width"), "layers": s.get("layers"),
                       "w_share": float(s.get("w_share", 0.4)), "policy_steps": int(s.get("policy_steps", 1)),
                       "policy_batch_size": s.get("policy_batch_size")}
        p = dict(cfg.get("policy") or {})
        self.pcfg = {"edge_hid": int(p.get("edge_hid", 100)), "nfeat": int(p.get("nfeat", 1024)),
                     "gcn_hid": int(p.get("gcn_hid", 100)), "dropout": float(p.get("dropout", 0.0)),
                     "lr": float(p.get("lr", 3e-4)), "betas": tuple(float(b) for b in p.get("betas", (0.5, 0.999))),
                     "weight_decay": float(p.get("weight_decay", 5e-4)),
                     "entropy_coeff": tuple(float(c) for c in p.get("entropy_coeff", (0.003, 0.003))),
                     "gamma": float(p.get("gamma", 0.99)), "baseline_update": p.get("baseline_update", "official")}
        if self.pcfg["baseline_update"] not in BASELINE_UPDATES:
            raise ValueError(f"method.policy.baseline_update={self.pcfg['baseline_update']!r}; choose one of "
                             f"{', '.join(BASELINE_UPDATES)}")
        d = dict(cfg.get("derive") or {})
        self.dcfg = {"n_archs": int(d.get("n_archs", 10)), "split": d.get("split", "heldout"),
                     "heldout_size": int(d.get("heldout_size", 5000)), "batch_size": int(d.get("batch_size", 64)),
                     "order": d.get("order", "shuffled"), "genotype_concat": bool(d.get("genotype_concat", False))}
        if self.dcfg["split"] not in DERIVE_SPLITS:
            raise ValueError(f"method.derive.split={self.dcfg['split']!r}; choose one of {', '.join(DERIVE_SPLITS)}")
        if self.dcfg["order"] not in DERIVE_ORDERS:
            raise ValueError(f"method.derive.order={self.dcfg['order']!r}; choose one of {', '.join(DERIVE_ORDERS)}")
        phases = [st.params.get("phase") for st in self.stages()]
        if any(ph not in PHASES for ph in phases) or "search" not in phases:
            raise ValueError(f"method.stages phases {phases}: each one of {', '.join(PHASES)}, with one search stage "
                             f"(to train the input architecture alone use method=baseline)")
        self.target: dict | None = None       # the input architecture beta (model=nat_cell's genotype)
        self.genotype: dict | None = None     # the derived alpha
        self.derived_final = False
        self.policy: NATPolicy | None = None
        self.baseline = 0.0
        self.phase = None
        self._kw: dict | None = None
        self._opt = None
        self._opt_state = None
        self._policy_state = None
        self._beta: list | None = None        # the input architecture of the next weight step (normal, reduce)
        self._policy_pos = (0, 0)             # (pass, batch) of the policy split
        self._policy_loader = None
        self._policy_iter = None
        self._derive_loader = None
        self._stats = {"policy_steps": 0, "reward_sum": 0.0, "entropy_sum": 0.0, "n": 0}
        self._history: list[dict] = []
        self._derive_report: dict = {}
        self.genotype_path = None
        self._theta0: torch.Tensor | None = None     # the policy's parameters at the start of the search

    def policy_shift(self) -> float | None:
        """||theta - theta_0|| / ||theta_0||: how far the search moved the policy (a run where it did not tests nothing)."""
        if self._theta0 is None or self.policy is None:
            return None
        theta = torch.cat([p.detach().cpu().flatten() for p in self.policy.parameters()])
        return float((theta - self._theta0).norm() / self._theta0.norm().clamp_min(1e-12))

    # ---- structure --------------------------------------------------------------------------------------------
    def _net(self, genotype: dict, ctx: RunContext) -> NATNet:
        kw = self._kw
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(ctx.seed))
            net = NATNet(genotype, ctx.num_classes, ctx.in_channels, kw["width"], kw["layers"], kw["steps"],
                         kw["stem_multiplier"])
        net.build_kwargs = {**kw, "genotype": genotype}
        return net

    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        if not isinstance(model, NATNet):
            raise ValueError(f"method=nat transforms a cell network: use model=nat_cell (model.genotype: darts, "
                             f"resblock or a dict); got {type(model).__name__}")
        self._kw = {k: v for k, v in model.build_kwargs.items() if k != "genotype"}
        self.target = load_genotype(model.build_kwargs["genotype"], self._kw["steps"])
        if self.derived_final and self.genotype is not None:       # evaluate.py: the saved final structure
            return self._net(self.genotype, ctx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(ctx.seed))
            supernet = NATSupernet(ctx.num_classes, ctx.in_channels, int(self.search["width"] or self._kw["width"]),
                                   int(self.search["layers"] or self._kw["layers"]), self._kw["steps"],
                                   self._kw["stem_multiplier"])
            self.policy = NATPolicy(len(PRIMITIVES), self._kw["steps"], self.pcfg["edge_hid"], self.pcfg["nfeat"],
                                    self.pcfg["gcn_hid"], self.pcfg["dropout"]).to(ctx.device)
        if self._policy_state is not None:
            self.policy.load_state_dict(self._policy_state)
        return supernet

    # ---- data -------------------------------------------------------------------------------------------------
    def _splits(self, ctx: RunContext):
        """(weights loader, policy loader, derivation loader): the derivation split is held out of the training data
        (or the test split), the rest is divided w_share : 1 - w_share between the weights and the policy."""
        from data.tensor_loader import TensorLoader
        train = ctx.train_loader
        rest, derive = self._derivation_split(train, ctx.test_loader, ctx.seed)
        n_policy = int(round(len(rest.labels) * (1 - self.search["w_share"])))
        w_loader, pol = heldout_split(rest, n_policy)
        c = pol.images.shape[1]
        policy_loader = TensorLoader(pol.images, pol.labels, int(self.search["policy_batch_size"] or train.batch_size),
                                     (pol.mean.view(c) / 255).tolist(), (pol.std.view(c) / 255).tolist(), train=True,
                                     device=pol.device, crop_padding=rest.crop_padding, flip=rest.flip,
                                     seed=int(ctx.seed) + 1)
        return w_loader, policy_loader, derive

    def _derivation_split(self, train, test, seed):
        """(the training data left to the search, the derivation loader)."""
        if self.dcfg["split"] == "test":
            return train, test
        mix = int(seed) if self.dcfg["order"] == "shuffled" else None   # class-mixed scoring batches
        return heldout_split(train, self.dcfg["heldout_size"], eval_batch_size=self.dcfg["batch_size"], mix_seed=mix)

    def derivation_loader(self, train, test, seed):
        """The images the derivation scores candidates on, for ``train``/``test`` loaders and ``seed`` as a run's."""
        return self._derivation_split(train, test, seed)[1]

    def train_batches(self, stage: Stage, tcfg, ctx: RunContext):
        if stage.params.get("phase") != "search":
            return None
        w_loader, self._policy_loader, self._derive_loader = self._splits(ctx)
        return w_loader

    def _policy_batch(self):
        epoch, pos = self._policy_pos
        if self._policy_iter is None:
            self._policy_loader.set_epoch(epoch)
            self._policy_iter = iter(self._policy_loader)
            for _ in range(pos):                   # after a resume: continue where the pass stopped
                next(self._policy_iter)
        try:
            batch = next(self._policy_iter)
        except StopIteration:
            self._policy_pos, self._policy_iter = (epoch + 1, 0), None
            return self._policy_batch()
        self._policy_pos = (epoch, pos + 1)
        return batch

    # ---- stages -----------------------------------------------------------------------------------------------
    def _next_beta(self) -> dict:
        steps = self._kw["steps"]
        inputs = self.cfg.get("search_inputs", "uniform")
        if inputs == "target":
            return self.target
        return sample_input_cell(steps, self.generator, with_null=inputs == "uniform_null")

    def _set_beta(self, model, beta: dict) -> None:
        self._beta = beta
        model.set_arch(beta["normal"], beta["reduce"], beta["normal_concat"], beta["reduce_concat"])

    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.phase = stage.params.get("phase")
        if self.phase == "search":
            self.policy.train()
            self._opt = torch.optim.Adam(self.policy.parameters(), lr=self.pcfg["lr"], betas=self.pcfg["betas"],
                                         weight_decay=self.pcfg["weight_decay"])
            if self._opt_state is not None:
                self._opt.load_state_dict(self._opt_state)
                self._opt_state = None
            if self._theta0 is None:
                self._theta0 = torch.cat([p.detach().cpu().flatten() for p in self.policy.parameters()])
            self._set_beta(model, self._beta or self._next_beta())
        return model

    def policy_step(self, model: NATSupernet, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One REINFORCE step of the transformer on one batch of the policy split (a fresh uniform beta)."""
        beta = self._next_beta()
        alpha_n, logp_n, ent_n, _ = transform_cell(self.policy, beta["normal"], self.mask, self.generator)
        alpha_r, logp_r, ent_r, _ = transform_cell(self.policy, beta["reduce"], self.mask, self.generator)
        with torch.no_grad():      # shared weights, train-mode BN as the official code
            model.set_arch(beta["normal"], beta["reduce"], beta["normal_concat"], beta["reduce_concat"])
            acc_beta = batch_accuracy(model(x), y)
            model.set_arch(alpha_n, alpha_r, beta["normal_concat"], beta["reduce_concat"])
            acc_alpha = batch_accuracy(model(x), y)
        r = reward(acc_alpha, acc_beta)
        adv = advantage(r, self.baseline)
        loss = policy_loss(logp_n, logp_r, adv, ent_n, ent_r, self.pcfg["entropy_coeff"])
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        average_grads(p for g in self._opt.param_groups for p in g["params"])   # one policy across DDP ranks
        self._opt.step()
        self.baseline = baseline_update(self.baseline, r, adv, self.pcfg["gamma"], self.pcfg["baseline_update"])
        return {"reward": r, "entropy": float((ent_n + ent_r).detach()), "acc_alpha": acc_alpha, "acc_beta": acc_beta}

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.phase != "search":
            return
        device = next(model.parameters()).device
        for _ in range(self.search["policy_steps"]):
            x, y = self._policy_batch()
            out = self.policy_step(model, x.to(device), y.to(device))
            st = self._stats
            st["policy_steps"] += 1
            st["n"] += 1
            st["reward_sum"] += out["reward"]
            st["entropy_sum"] += out["entropy"]
        self._set_beta(model, self._next_beta())       # the input architecture of the next weight step

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        if self.phase != "search":
            return
        st = self._stats
        if st["n"]:
            self._history.append({"epoch": epoch + 1, "mean_reward": round(st["reward_sum"] / st["n"], 5),
                                  "mean_entropy": round(st["entropy_sum"] / st["n"], 4),
                                  "baseline": round(self.baseline, 5)})
            ctx.log({"nat/mean_reward": st["reward_sum"] / st["n"], "nat/mean_entropy": st["entropy_sum"] / st["n"]})
        st.update(reward_sum=0.0, entropy_sum=0.0, n=0)

    def _derive(self, model: NATSupernet, ctx: RunContext) -> dict:
        """K transformed cells of the target, the best by shared-weight accuracy on the derivation split."""
        device = next(model.parameters()).device
        beta = self.target
        acc_beta = shared_weight_accuracy(model, self._derive_loader, self._scored(beta), device)
        best, best_acc, accs = None, -1.0, []
        self.policy.eval()
        with torch.no_grad():
            for _ in range(self.dcfg["n_archs"]):
                n, *_ = transform_cell(self.policy, beta["normal"], self.mask, self.generator)
                r, *_ = transform_cell(self.policy, beta["reduce"], self.mask, self.generator)
                cand = {"normal": n, "normal_concat": beta["normal_concat"], "reduce": r,
                        "reduce_concat": beta["reduce_concat"]}
                acc = shared_weight_accuracy(model, self._derive_loader, self._scored(cand), device)
                accs.append(round(acc, 5))
                if acc > best_acc:      # strict: the first of equals (official)
                    best, best_acc = cand, acc
        self.policy.train()
        self._derive_report = {"input_acc": round(acc_beta, 5), "candidate_accs": accs, "best_acc": round(best_acc, 5),
                               "split": self.dcfg["split"], "dead_output": dead_output(best)}
        return best

    def _scored(self, genotype: dict) -> dict:
        """``genotype`` as the super-net scores it: every intermediate node concatenated (official), or with its own
        ``concat`` (``derive.genotype_concat``)."""
        if self.dcfg["genotype_concat"]:
            return genotype
        full = full_concat(self._kw["steps"])
        return {**genotype, "normal_concat": full, "reduce_concat": full}

    def on_stage_end(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        if stage.params.get("phase") != "search":
            return model
        if self.genotype is None:              # (a replayed search stage has its genotype in the method state)
            if self._derive_loader is None:
                _, self._policy_loader, self._derive_loader = self._splits(ctx)
            self.genotype = self._derive(model, ctx)
        self._write_genotype(ctx)
        names = [s.name for s in self.stages()]
        later = self.stages()[names.index(stage.name) + 1:]
        self._policy_loader = self._policy_iter = None
        if any(s.params.get("phase") == "retrain" for s in later):
            self.derived_final = True
            return self._net(self.genotype, ctx)
        return model

    def _write_genotype(self, ctx: RunContext) -> None:
        out_dir = getattr(ctx, "out_dir", None)
        if not out_dir:
            return
        path = os.path.join(out_dir, GENOTYPE_FILE)
        header = ["# NAT transformed architecture (methods/nat.py, docs/nat.md): a model config for model=nat_cell.",
                  f"# input:       {genotype_str(self.target)}",
                  f"# transformed: {genotype_str(self.genotype)}",
                  f"# shared-weight accuracies on the {self.dcfg['split']} split: {self._derive_report}"]
        body = {"name": "nat_cell", "genotype": self.genotype, **self._kw}
        write_text("\n".join(header) + "\n" + yaml.safe_dump(body, default_flow_style=None, sort_keys=False), path)
        self.genotype_path = path

    # ---- reporting and state ----------------------------------------------------------------------------------
    def metrics(self, model: nn.Module) -> dict:
        out = {"transitions": self.cfg.get("transitions", "natpp")}
        if self.target is not None:
            out["input_genotype"] = genotype_str(self.target)
        if self.genotype is not None:
            out["genotype"] = genotype_str(self.genotype)
            out["changed_edges"] = changed_edges(self.target, self.genotype)
        out.update({f"derive_{k}": v for k, v in self._derive_report.items()})
        out["policy_steps"] = self._stats["policy_steps"]
        out["baseline"] = round(self.baseline, 6)
        if self.policy_shift() is not None:
            out["policy_shift"] = round(self.policy_shift(), 6)
        if self._history:
            out["search_per_epoch"] = self._history
        if self.genotype_path:
            out["genotype_file"] = self.genotype_path
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "genotype": self.genotype, "derived_final": self.derived_final,
                "policy": self.policy.state_dict() if self.policy is not None else self._policy_state,
                "policy_opt": self._opt.state_dict() if self._opt is not None else self._opt_state,
                "baseline": self.baseline, "beta": self._beta, "policy_pos": list(self._policy_pos),
                "stats": dict(self._stats), "history": list(self._history), "derive_report": self._derive_report,
                "genotype_path": self.genotype_path, "theta0": self._theta0}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.genotype = state.get("genotype", self.genotype)
        self.derived_final = bool(state.get("derived_final", self.derived_final))
        if state.get("policy") is not None:
            if self.policy is not None:
                self.policy.load_state_dict(state["policy"])
            else:
                self._policy_state = state["policy"]
        if state.get("policy_opt") is not None:
            if self._opt is not None:
                self._opt.load_state_dict(state["policy_opt"])
            else:
                self._opt_state = state["policy_opt"]
        self.baseline = float(state.get("baseline", self.baseline))
        self._beta = state.get("beta", self._beta)
        self._policy_pos = tuple(state.get("policy_pos", self._policy_pos))
        self._policy_iter = None
        self._stats = dict(state.get("stats", self._stats))
        self._history = list(state.get("history", self._history))
        self._derive_report = state.get("derive_report", self._derive_report)
        self.genotype_path = state.get("genotype_path", self.genotype_path)
        self._theta0 = state.get("theta0", self._theta0)

"""Timing probe for the issue-15 reruns (scripts/reproduce_{dcff,ucp,tt_admm,cc}.sh headers): seconds per training
step (batch 128, random inputs, no data loading) of every arm's model, the TT-ADMM Z/U update and projection, and
CC's Stage 1 + 2 on one 16x16 and one 64x64 layer. A probe, not a test: ~5 min on 2 busy cores.

    OMP_NUM_THREADS=2 python scripts/probe_step_time.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from models import build_model
from methods import build_method, RunContext
torch.set_num_threads(2)
torch.manual_seed(0)
ctx = RunContext(num_classes=10, in_channels=3, image_size=32, device="cpu")
R56 = "[0.7]*2+[0.5]*3+[0.3]*2+[0.4]+[0.8]+[0.7]*2+[0.8]*4+[0.4]+[0.2]*2+[0.7]+[0.3]+[0.8]+[0.4]*2+[0.7]+[0.3]+[0.4]+[0.8]+[0.0]*3"
def step_time(model, n=3, bs=128, loss_fn=None):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    x, y = torch.randn(bs, 3, 32, 32), torch.randint(0, 10, (bs,))
    model.train()
    ts = []
    for i in range(n + 1):
        t = time.perf_counter()
        out = model(x); loss = F.cross_entropy(out, y)
        if loss_fn: loss = loss_fn(model, loss)
        opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.perf_counter() - t)
    return sum(ts[1:]) / n
res = {}
m = build_method(OmegaConf.create({"name": "dcff", "cprate": R56, "init": "scratch", "temperature": {"epochs": 10}}))
fused = m.transform(build_model("resnet56", num_classes=10), ctx)
from methods.dcff import fused_layers
for l in fused_layers(fused).values(): l.refresh(1.0)
res["dcff_fused_r56"] = step_time(fused)
l1 = build_method(OmegaConf.create({"name": "l1_prune", "rates": R56, "init": "scratch", "latency": {"enabled": False}}))
res["compact_r56"] = step_time(l1.transform(build_model("resnet56", num_classes=10), ctx))
res["dense_r56"] = step_time(build_model("resnet56", num_classes=10))
u = build_method(OmegaConf.create({"name": "ucp", "gate_training": "gates_only", "stages": [{"name": "se_train"}, {"name": "retrain"}]}))
se = u.transform(build_model("resnet56", num_classes=10), ctx)
u.on_stage_start(u.stages()[0], se, ctx)
res["ucp_se_r56_gates_only"] = step_time(se)
res["dense_r20"] = step_time(build_model("resnet20", num_classes=10))
t = build_method(OmegaConf.create({"name": "tt_admm", "target_ratio": 2.3, "layout": "special", "rho": 0.01, "stages": [{"name": "admm", "admm": True}, {"name": "ft", "decompose": True}]}))
r20 = t.transform(build_model("resnet20", num_classes=10), ctx)
t0 = time.perf_counter(); t.on_stage_start(t.stages()[0], r20, ctx); res["tt_admm_init_zu_s"] = time.perf_counter() - t0
res["tt_admm_step_r20"] = step_time(r20, loss_fn=lambda mm, l: t.loss(mm, None, None, None, l))
t0 = time.perf_counter(); t._zu_update(r20); res["tt_zu_update_s"] = time.perf_counter() - t0
tt = t.tt_structure(build_model("resnet20", num_classes=10))
res["tt_ft_step_r20"] = step_time(tt)
# CC: compression time of one 64x64 and one 16x16 layer with random grads, official channel forward
from methods.cc import LayerGeom, compress_layer
for c, hw in ((16, 1024), (64, 64)):
    w = torch.randn(c, c, 3, 3) * 0.1; g = torch.randn(c, c, 3, 3) * 1e-3
    t0 = time.perf_counter(); compress_layer(w, g, LayerGeom(c, c, 9, hw, hw), 0.5 * c * c * 9 * hw, 0.9, ("pruning", "td"), True)
    res[f"cc_compress_layer_{c}_s"] = time.perf_counter() - t0
for k, v in res.items(): print(f"{k}: {v:.3f}")
import os; print("load", os.getloadavg())

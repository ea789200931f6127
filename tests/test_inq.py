"""INQ (methods/inq.py): golden values of the quantization set, Eq. 4, partitions, and frozen training."""
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from conftest import TinyConvNet as Tiny
from conftest import method_steps as steps
from conftest import tiny_ctx as ctx
from core.complexity import measure
from methods import build_method
from methods.common.storage import sparse_entries, storage_report
from methods.inq import in_set, inq_exponents, inq_levels, inq_quantize, partition_counts

pytestmark = pytest.mark.golden

W = torch.tensor([0.9, -0.3, 0.05, 0.6, -0.12, 0.0, 0.02, -0.75])


def inq_cfg(**kw):
    base = {"name": "inq", "family": "quant", "bits": 5, "partition": "magnitude",
            "portions": [0.5, 0.75, 0.875, 1.0], "stage_trainer": {"epochs": 1}, "final_trainer": {"epochs": 0},
            "layers": None, "exclude": [], "index_bits": {"conv": 8, "fc": 5}, "stages": None}
    base.update(kw)
    return OmegaConf.create(base)




def test_exponents_n1_n2():
    # n1 = floor(log2(4s/3)); n2 = n1 + 1 - 2^(b-1)/2
    assert inq_exponents(0.9, 3) == (0, -1)       # log2(1.2) = 0.26
    assert inq_exponents(0.5, 3) == (-1, -2)      # the paper's example: b = 3, n1 = -1 -> n2 = -2
    assert inq_exponents(0.9, 5) == (0, -7)
    assert inq_exponents(0.9, 4) == (0, -3)
    assert inq_exponents(0.9, 2) == (0, 0)        # ternary {0, +-2^n1}
    assert inq_exponents(0.75, 5) == (0, -7)      # 4s/3 = 1 exactly
    assert inq_exponents(0.7499, 5) == (-1, -8)
    assert inq_exponents(3.0, 5) == (2, -5)
    for b in (2, 3, 4, 5):                        # 2^(b-2) exponents plus zero
        n1, n2 = inq_exponents(0.3, b)
        assert n1 - n2 + 1 == 2 ** (b - 2)
        assert len(inq_levels(n1, n2)) == 2 ** (b - 2) + 1
    with pytest.raises(ValueError, match="bits must be in"):
        inq_exponents(0.9, 1)


def test_quantized_values_eq4():
    assert inq_quantize(W, 0, -1).tolist() == [1.0, -0.5, 0.0, 0.5, 0.0, 0.0, 0.0, -1.0]       # 3 bit
    assert inq_quantize(W, 0, -7).tolist() == [1.0, -0.25, 0.0625, 0.5, -0.125, 0.0, 0.015625, -1.0]  # 5 bit
    assert inq_quantize(W, 0, 0).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0]         # 2 bit
    # boundaries of Eq. 4: (alpha+beta)/2 <= |w| maps up; below 2^(n2-1) -> 0; above 1.5*2^n1 saturates
    w = torch.tensor([0.25, 0.2499, 0.75, -0.7499, 1.6])
    assert inq_quantize(w, 0, -1).tolist() == [0.5, 0.0, 1.0, -0.5, 1.0]
    assert in_set(inq_quantize(W, 0, -7), 0, -7) and not in_set(W, 0, -7)


def test_partition_sizes_per_step():
    assert partition_counts(100, [0.5, 0.75, 0.875, 1.0]) == [50, 75, 88, 100]
    assert partition_counts(8, [0.3, 0.6, 0.8, 1.0]) == [2, 5, 6, 8]
    assert partition_counts(520, [0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 1]) == \
        [104, 208, 312, 364, 416, 442, 468, 494, 507, 520]


def test_magnitude_partition_quantizes_largest_first_and_stays_quantized():
    method = build_method(inq_cfg(bits=3, layers=["fc"]))
    model = method.transform(Tiny(), ctx())
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight.view(-1)[:8] = W
    stages = method.stages()
    assert [s.params["portion"] for s in stages] == [0.5, 0.75, 0.875, 1.0]
    assert stages[0].trainer == {"epochs": 1} and stages[-1].trainer == {"epochs": 0}
    method.on_stage_start(stages[0], model, ctx())
    n = model.fc.weight.numel()                                       # 48 weights, 40 of them zero
    assert int(model.fc.quant_mask.sum()) == partition_counts(n, [0.5])[0] == 24
    q = model.fc.quant_mask.view(-1)
    assert q[[0, 1, 2, 3, 4, 6, 7]].tolist() == [1.0] * 7             # the 7 nonzero weights rank above zeros
    assert model.fc.weight.view(-1)[:8].tolist() == [1.0, -0.5, 0.0, 0.5, 0.0, 0.0, 0.0, -1.0]
    assert int(model.fc.quant_n1) == 0 and method.n2(0) == -1
    for stage, expected in zip(stages[1:], (36, 42, 48)):
        method.on_stage_end(stage, model, ctx())
        method.on_stage_start(stage, model, ctx())
        assert int(model.fc.quant_mask.sum()) == expected
    assert model.fc.weight_bits == 3 and getattr(model.conv, "weight_bits", 32) == 32   # only fc quantized


def test_quantized_weights_stay_quantized_through_sgd_momentum_weight_decay():
    torch.manual_seed(0)
    method = build_method(inq_cfg(bits=4))
    model = method.transform(Tiny(), ctx())
    stages = method.stages()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    steps(method, model, opt, 2)                      # momentum history from float training
    method.on_stage_start(stages[0], model, ctx())
    qmask = model.conv.quant_mask.bool()
    frozen = model.conv.weight.detach().clone()
    steps(method, model, opt, 5, seed=1)
    w = model.conv.weight.detach()
    assert torch.equal(w[qmask], frozen[qmask])                 # bitwise unchanged
    assert (w[~qmask] != frozen[~qmask]).all()                  # the float group re-trains
    n1 = int(model.conv.quant_n1)
    assert in_set(w[qmask], n1, method.n2(n1)) and not in_set(w, n1, method.n2(n1))
    for st in stages[1:]:
        method.on_stage_end(st, model, ctx())
        method.on_stage_start(st, model, ctx())
        steps(method, model, opt, 2, seed=2)
    out = method.metrics(model)
    assert out["inq_all_in_set"] is True and out["inq_bits"] == 4 and out["bits_per_weight"] == 4
    assert out["inq_portions"] == [0.5, 0.75, 0.875, 1.0]
    # the complexity counter reads the declared precision
    c = measure(model, (1, 4, 4))
    assert [l.weight_bits for l in c.layers] == [4, 4]
    assert c.size_bits == (36 + 48) * 4 + (4 + 3) * 32


def test_random_partition_is_reproducible_and_sized():
    def run(seed):
        m = build_method(inq_cfg(partition="random", seed=seed))
        net = m.transform(Tiny(), ctx())
        torch.manual_seed(0)
        for p in net.parameters():
            nn.init.normal_(p)
        m.on_stage_start(m.stages()[0], net, ctx())
        return net.fc.quant_mask.clone()

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.equal(a, c) and int(a.sum()) == 24
    with pytest.raises(ValueError, match="partition must be one of"):
        build_method(inq_cfg(partition="largest"))
    with pytest.raises(ValueError, match="end at 1"):
        build_method(inq_cfg(portions=[0.5, 0.75]))


def test_dns_then_inq_keeps_pruned_zeros_and_quantizes_survivors():
    torch.manual_seed(0)
    cfg = OmegaConf.create({
        "name": "dns_inq", "family": "quant",
        "dns": {"gamma": 0.0, "power": 1.0, "c_rate": 0.5, "iter_stop": 1000, "per_layer": {}, "splice": True},
        "inq": {"bits": 5, "partition": "magnitude"},
        "stages": [{"name": "surgery", "kind": "surgery"},
                   {"name": "q1", "kind": "inq", "portion": 0.5},
                   {"name": "q2", "kind": "inq", "portion": 1.0, "trainer": {"epochs": 0}}]})
    method = build_method(cfg)
    model = method.transform(Tiny(), ctx())
    s_dns, s_q1, s_q2 = method.stages()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    method.on_stage_start(s_dns, model, ctx())
    steps(method, model, opt, 3)
    method.on_stage_end(s_dns, model, ctx())
    mask = model.fc.weight_mask.clone()
    kept = int(mask.sum())
    method.on_stage_start(s_q1, model, ctx())
    q = model.fc.quant_mask.bool()
    assert int((q & mask.bool()).sum()) == partition_counts(kept, [0.5])[0]    # half of the survivors
    assert q[mask == 0].all()                                                  # pruned: fixed zeros
    steps(method, model, opt, 3, seed=1)
    assert torch.equal(model.fc.weight_mask, mask) and (model.fc.weight[mask == 0] == 0).all()
    method.on_stage_end(s_q1, model, ctx())
    method.on_stage_start(s_q2, model, ctx())
    out = method.metrics(model)
    assert out["inq_all_in_set"] and out["nonzero_by_layer"]["fc"] <= kept + 3
    assert out["sparse_storage_ratio"] > out["compression_ratio"]      # quantization adds to pruning
    with pytest.raises(ValueError, match="must come before"):
        build_method(OmegaConf.merge(cfg, {"stages": [{"name": "q", "kind": "inq", "portion": 1.0},
                                                      {"name": "s", "kind": "surgery"}]}))


def test_sparse_storage_index_overhead():
    v = torch.zeros(11)
    v[0], v[10] = 1.0, 2.0
    assert sparse_entries(v, 2) == 4         # gap 10 with 2-bit indices (span 4): 2 filler entries
    assert sparse_entries(v, 4) == 2
    assert sparse_entries(torch.zeros(5), 3) == 0
    fc = nn.Linear(10, 1, bias=False)
    with torch.no_grad():
        fc.weight.zero_()
        fc.weight[0, 9] = 1.0
    rep = storage_report(fc, index_bits=3)   # gap 10 -> 1 filler: 2 entries x (32 + 3) bits
    assert rep["sparse_storage_bits"] == 70 and rep["compression_ratio"] == 10.0
    assert rep["dense_storage_bits"] == 320 and rep["dense_storage_ratio"] == 1.0


def test_exported_dns_weights_keep_their_zeros_under_inq(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("export_sparse", "scripts/export_sparse.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    dns = build_method(OmegaConf.create({"name": "dns", "gamma": 0.0, "c_rate": 0.5, "iter_stop": 100}))
    pruned = dns.transform(Tiny(), ctx())
    dns.on_stage_start(dns.stages()[0], pruned, ctx())          # masks set, weights not yet folded
    torch.save({"model": pruned.state_dict()}, tmp_path / "final.pt")
    mod.export(str(tmp_path / "final.pt"), str(tmp_path / "sparse.pt"))
    plain = Tiny()
    plain.load_state_dict(torch.load(tmp_path / "sparse.pt", weights_only=True)["model"])   # strict: no mask keys
    assert torch.equal(plain.fc.weight, pruned.fc.weight * pruned.fc.weight_mask)
    method = build_method(inq_cfg(keep_zeros=True))
    model = method.transform(plain, ctx())
    assert torch.equal(model.fc.weight_mask, pruned.fc.weight_mask)
    assert torch.equal(model.conv.bias_mask, pruned.conv.bias_mask)
    method.on_stage_start(method.stages()[0], model, ctx())
    kept = int(pruned.fc.weight_mask.sum())
    assert int((model.fc.quant_mask.bool() & model.fc.weight_mask.bool()).sum()) == partition_counts(kept, [0.5])[0]



def test_a_misspelt_stage_or_final_trainer_key_fails_at_start_naming_its_config_key(compose, tmp_path):
    """The engine checks every stage's trainer overrides before the first stage and names the key they came from."""
    import glob

    from engine.config import ConfigError
    from engine.runner import run
    for key in ("stage_trainer", "final_trainer"):
        with pytest.raises(ConfigError, match=rf"method\.{key}\.epoch"):
            run(compose(["method=inq", "data=synthetic", "model=lenet5", "data.in_channels=1", "data.image_size=28",
                         "data.mean=[0.5]", "data.std=[0.25]", f"++method.{key}={{epoch: 1}}"]))
    assert not glob.glob(f"{tmp_path}/outputs/**/stage*", recursive=True)

"""Committed analysis rows (results/runs/{xgradcam,unit_ablation}.csv) held to the claims of
results/reference/{xgradcam,unit_ablation}.yaml. No computation here; thresholds live in the yaml."""
import os
from collections import defaultdict

import pytest
import yaml

from engine.results import read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _field(row: dict, name: str):
    if name.startswith("extra."):
        return row["extra"].get(name[len("extra."):])
    return row.get(name)


def _matches(row: dict, flt: dict) -> bool:
    return all(str(_field(row, k)) == str(v) for k, v in (flt or {}).items())


def _load(paper: str):
    path = os.path.join(ROOT, "results", "runs", f"{paper}.csv")
    if not os.path.exists(path):
        pytest.skip(f"no committed rows in {path} (run scripts/reproduce_analysis.sh)")
    with open(os.path.join(ROOT, "results", "reference", f"{paper}.yaml")) as f:
        ref = yaml.safe_load(f)
    rows = [r for r in read_rows(path) if r["fidelity"] in ("reduced", "paper")]
    return ref, rows


def _claims(paper: str, kind: str):
    with open(os.path.join(ROOT, "results", "reference", f"{paper}.yaml")) as f:
        return [c for c in yaml.safe_load(f)["claims"] if c.get(kind)]


def _float(v):
    return float(v) if v not in (None, "") else float("nan")


@pytest.mark.repro
@pytest.mark.parametrize("claim", _claims("xgradcam", "compare"), ids=lambda c: c["id"])
def test_xgradcam_claims(claim):
    _, rows = _load("xgradcam")
    cmp = claim["compare"]
    groups = defaultdict(lambda: {"better": [], "worse": []})
    for r in rows:
        key = tuple(str(_field(r, k)) for k in cmp["same"])
        for side in ("better", "worse"):
            if _matches(r, cmp[side]):
                v = _float(_field(r, cmp["metric"]))
                if v == v:
                    groups[key][side].append(v)
    pairs = {k: g for k, g in groups.items() if g["better"] and g["worse"]}
    if not pairs:
        pytest.skip(f"no row pair for claim {claim['id']}")
    failed = {k: (sum(g["better"]) / len(g["better"]), sum(g["worse"]) / len(g["worse"])) for k, g in pairs.items()
              if sum(g["better"]) / len(g["better"]) - sum(g["worse"]) / len(g["worse"]) < cmp["margin"]}
    assert not failed, f"{claim['id']}: better - worse < {cmp['margin']} for {failed}"


@pytest.mark.repro
@pytest.mark.parametrize("claim", _claims("unit_ablation", "within_row"), ids=lambda c: c["id"])
def test_unit_ablation_claims(claim):
    _, rows = _load("unit_ablation")
    spec = claim["within_row"]
    picked = [r for r in rows if _matches(r, spec["filter"])]
    if not picked:
        pytest.skip(f"no row for claim {claim['id']}")
    failed = []
    for r in picked:
        v = _float(_field(r, spec["metric"]))
        ok = v >= spec["min"] if "min" in spec else v - _float(_field(r, spec["other"])) >= spec["margin"]
        if not ok:
            failed.append((r["model"], r["dataset"], r["variant"], v))
    assert not failed, f"{claim['id']} does not hold for {failed}"


@pytest.mark.parametrize("paper", ["xgradcam", "unit_ablation"])
def test_experiments_compose_and_cite_existing_entries(compose, paper):
    import glob

    from omegaconf import OmegaConf

    from engine.config import validate

    with open(os.path.join(ROOT, "results", "reference", f"{paper}.yaml")) as f:
        keys = {e["key"] for e in yaml.safe_load(f)["entries"]}
    files = sorted(glob.glob(os.path.join(ROOT, "conf", "experiment", paper, "*.yaml")))
    assert files
    for path in files:
        cfg = compose([f"experiment={paper}/{os.path.basename(path)[:-5]}"])
        validate(cfg)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        assert cfg.method.family == "analysis" and cfg.paper == paper
        assert cfg.reference.split(":")[1] in keys, f"{path}: reference {cfg.reference} is not an entry of {paper}.yaml"

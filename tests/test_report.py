"""The reproduction report on a temporary results tree with synthetic rows (never the committed results)."""
from __future__ import annotations

import os
import textwrap

import pytest

from engine import report
from engine.results import append_row

REF = textwrap.dedent("""\
    paper: dns
    title: Dynamic Network Surgery (test copy)
    conventions: {flops: macs, params: conv_fc_weights_biases, counter: own}
    entries:
      - key: lenet5_dns
        table: table1_summary
        dataset: mnist
        model: lenet5
        method: dns
        metrics:
          top1_error: {value: 0.91, unit: "%", band: {floor: 0.15}}
          compression_ratio: {value: 108, unit: x, band: {floor: 10.8}}
          params: {value: 431080, unit: count, exact: true}
        source: test
        verified: true
      - key: lenet5_released
        table: table1_summary
        dataset: mnist
        model: lenet5
        method: dns
        variant: released
        metrics:
          top1_error: {value: 0.91, unit: "%", band: {floor: 0.15}}
        source: test
        verified: true
        evidence: recount
      - key: lenet300_dns
        table: table1_summary
        dataset: mnist
        model: lenet300_100
        method: dns
        metrics:
          top1_error: {value: 1.99, unit: "%", band: {floor: 0.15}}
          compression_ratio: {value: 56, unit: x, band: {floor: 5.6}}
        source: test
        verified: false
        known_gap:
          metrics: [compression_ratio]
          reason: "per-layer c_rate unpublished"
      - key: alexnet_dns
        table: table2
        dataset: imagenet
        model: alexnet
        method: dns
        metrics:
          top1_error: {value: 43.09, unit: "%", band: {floor: 0.3}}
        source: test
        verified: false
        runnable: "ImageNet not available"
      - key: lenet5_ref
        table: table1_summary
        dataset: mnist
        model: lenet5
        method: pending_thing
        metrics:
          top1_error: {value: 0.8, unit: "%", band: {floor: 0.15}}
        source: test
        verified: false
    claims:
      - id: dns_keeps_accuracy
        text: "DNS keeps accuracy"
        source: abstract
        compare: {metric: top1, better: {method: dns, model: lenet5}, worse: {method: baseline},
                  same: [dataset, model, fidelity],
                  margin: -0.5}
      - id: dns_lenet300_two_seeds
        text: "DNS beats dense on LeNet-300-100"
        source: abstract
        compare: {metric: top1, better: {method: dns, model: lenet300_100}, worse: {method: baseline},
                  same: [dataset, model, fidelity], margin: 0.0}
      - id: dns_splices
        text: "splicing recovers pruned weights"
        source: section 3
        notes: checked by tests/test_dns.py
    """)

EXPERIMENTS = {   # experiment file -> (reference, method, model, fidelity)
    "mnist_lenet5": ("dns:lenet5_dns", "dns", "lenet5", "paper"),
    "mnist_lenet5_released": ("dns:lenet5_released", "dns", "lenet5", "paper"),
    "mnist_lenet300": ("dns:lenet300_dns", "dns", "lenet300_100", "paper"),
    "mnist_lenet300_caffe": ("dns:lenet300_dns", "dns", "lenet300_100", "paper"),
    "mnist_lenet5_ref": ("dns:lenet5_ref", "pending_thing", "lenet5", "paper"),
    "mnist_lenet5_reduced": (None, "dns", "lenet5", "reduced"),
    "mnist_lenet5_dense_reduced": (None, "baseline", "lenet5", "reduced"),
    "mnist_lenet300_reduced": (None, "dns", "lenet300_100", "reduced"),
    "mnist_lenet300_dense_reduced": (None, "baseline", "lenet300_100", "reduced"),
}


def exp(stem, ref, method, model, fidelity):
    return (f"# @package _global_\n# python train.py experiment=dns/{stem}\ndefaults:\n"
            f"  - override /data: mnist\n  - override /model: {model}\n  - override /method: {method}\n"
            f"paper: dns\nname: {stem}\nreference: {ref or 'null'}\nfidelity: {fidelity}\n")


def add(csv, stem, seed, top1, run_id=None, **kw):
    ref, method, model, fidelity = EXPERIMENTS[stem]
    row = {"run_id": run_id or f"{stem}-s{seed}", "experiment": stem, "experiment_config": f"dns/{stem}",
           "reference": ref or "", "paper": "dns", "dataset": "mnist", "model": model, "method": method,
           "fidelity": fidelity, "seed": seed, "top1": top1, "git_dirty": False, "config_hash": f"h-dns/{stem}",
           "macs": 2293000 if model == "lenet5" else 266200, "ops": 4586000 if model == "lenet5" else 532400,
           "extra": {}}
    row.update(kw)
    append_row(csv, row)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    # experiment files "compose" to h-<name> (composing needs the whole Hydra tree; the rule is what is tested)
    import engine.references.judging as judging
    monkeypatch.setattr(judging, "experiment_hashes",
                        lambda names, conf_dir=None: {n: f"h-{n}" for n in names if n})
    refdir, runs, conf, out = (tmp_path / d for d in ("reference", "runs", "conf", "reports"))
    for d in (refdir, runs, conf / "experiment" / "dns", conf / "method"):
        d.mkdir(parents=True)
    (refdir / "dns.yaml").write_text(REF)
    for name, family in (("dns", "prune"), ("baseline", "baseline"), ("xgradcam", "analysis"), ("inq", "quant")):
        (conf / "method" / f"{name}.yaml").write_text(f"name: {name}\nfamily: {family}\n")
    (conf / "method" / "pending_thing.yaml").write_text("name: pending_thing\nfamily: prune\nimplemented: false\n")
    for stem, spec in EXPERIMENTS.items():
        (conf / "experiment" / "dns" / f"{stem}.yaml").write_text(exp(stem, *spec))
    csv = str(runs / "dns.csv")
    # LeNet-5, our training, 3 seeds: errors 0.95 0.99 0.91 (mean 0.95), ratios 105 110 108: both in band
    for seed, top1, ratio in ((0, 99.05, 105), (1, 99.01, 110), (2, 99.09, 108)):
        add(csv, "mnist_lenet5", seed, top1, extra={"compression_ratio": ratio})
    # the authors' released weights evaluated here: in band, but a recount
    add(csv, "mnist_lenet5_released", 0, 99.09)
    # LeNet-300-100: recipe 1 in band on top-1, far on the ratio (known gap); recipe 2 off on top-1 (not covered
    # by the known gap: out of band) and far on the ratio
    for seed, top1 in ((0, 98.0), (1, 98.02)):
        add(csv, "mnist_lenet300", seed, top1, extra={"compression_ratio": 25 + seed})
    add(csv, "mnist_lenet300_caffe", 0, 98.5, extra={"compression_ratio": 36})
    # reduced-budget claim arms, paired by seed: dns − dense = 1.0, 0.9, 1.0 > −0.5 -> held
    for seed, (d, b) in enumerate(((98.0, 97.0), (98.2, 97.3), (98.1, 97.1))):
        add(csv, "mnist_lenet5_reduced", seed, d)
        add(csv, "mnist_lenet5_dense_reduced", seed, b)
    # two seeds per arm: inconclusive whatever the difference
    for seed, (d, b) in enumerate(((97.0, 96.0), (97.1, 96.1))):
        add(csv, "mnist_lenet300_reduced", seed, d)
        add(csv, "mnist_lenet300_dense_reduced", seed, b)
    # rows that are not what they say: never judged, listed with the reason
    add(csv, "mnist_lenet5", 7, 50.0, run_id="scratch", fidelity="adhoc", extra={"compression_ratio": 1500})
    add(csv, "mnist_lenet5", 8, 60.0, run_id="dirty", git_dirty=True)
    add(csv, "mnist_lenet5", 9, 70.0, run_id="stale", config_hash="h-old")
    return refdir, runs, conf, out


def run(tree):
    refdir, runs, conf, out = tree
    return report.main(["--results-dir", str(runs), "--reference-dir", str(refdir), "--conf-dir", str(conf),
                        "--out", str(out)])


def lines_of(md, key):
    return [ln for ln in md.splitlines() if ln.startswith(f"| {key} |")]


def test_page_opens_with_one_line_at_a_glance(tree):
    assert run(tree) == 0
    md = (tree[3] / "dns.md").read_text().splitlines()
    assert md[0].startswith("# dns: ") and md[1] == ""
    glance = md[2]
    assert glance.startswith("**Reproduced by our own training (paper fidelity):** 1 entry (lenet5_dns)")
    assert "**recounted** (released weights, complexity): 1 entry (lenet5_released) + 1 exact complexity number" \
        in glance
    assert "**claims** at reduced fidelity: 1 held, 0 not held, 1 inconclusive (1 qualitative)" in glance
    assert "**out of band:** 1 entry (0 with a stated known gap)" in glance      # lenet300_dns: top-1 not excused
    assert "**not runnable here:** 1 entry" in glance and "3 rows not judged" in glance
    assert md[3] == ""
    index = (tree[3] / "index.md").read_text()
    assert f"| dns | {glance} | [dns.md](dns.md) |" in index
    assert index.count("**missing reference file**") == 16


def test_statuses_recount_known_gap_per_metric_and_once_per_entry(tree):
    run(tree)
    md = (tree[3] / "dns.md").read_text()
    l5 = lines_of(md, "lenet5_dns")
    # judged rows only: the adhoc / dirty / stale rows (top-1 50-70 %) change nothing
    assert any("top1_error (%) | 0.91 | 0.95 | 0.04 | +0.04 | 0.15 | reproduced | paper | 3 | yes | training | "
               "dns/mnist_lenet5 |" in ln for ln in l5), l5
    assert any("compression_ratio (x) | 108.00 | 107.67 | 2.52 | -0.33 | 10.80 | reproduced |" in ln for ln in l5)
    rel = lines_of(md, "lenet5_released")
    assert len(rel) == 1 and "| recounted | paper | 1 | yes | recount | dns/mnist_lenet5_released |" in rel[0]
    l3 = lines_of(md, "lenet300_dns")
    status = {(ln.split(" | ")[4], ln.split(" | ")[-1].rstrip(" |")): ln.split(" | ")[10] for ln in l3}
    assert status == {("top1_error (%)", "dns/mnist_lenet300"): "in band",
                      ("top1_error (%)", "dns/mnist_lenet300_caffe"): "out of band",    # not named by the gap
                      ("compression_ratio (x)", "dns/mnist_lenet300"): "known gap",
                      ("compression_ratio (x)", "dns/mnist_lenet300_caffe"): "known gap"}
    assert md.count("per-layer c_rate unpublished") == 1                          # once per entry
    assert "- **lenet300_dns** (compression_ratio): per-layer c_rate unpublished" in md
    assert "| alexnet_dns | alexnet | dns |  | top1_error (%) | 43.09 | — | — | — | 0.30 | not runnable here |" in md
    assert "pending method" in lines_of(md, "lenet5_ref")[0]
    assert "| lenet5_dns | lenet5 | params | 431080 count | tests/test_reference_complexity.py |" in md


def test_claims_report_verdicts_with_evidence(tree):
    run(tree)
    md = (tree[3] / "dns.md").read_text()
    assert "- **dns_keeps_accuracy** — held." in md
    assert "- **dns_lenet300_two_seeds** — inconclusive." in md
    assert "- **dns_splices** — qualitative." in md
    evidence = md[md.index("**dns_keeps_accuracy**"):md.index("**dns_lenet300_two_seeds**")]
    assert "n=3" in evidence and "95% CI" in evidence and "paired" in evidence


def test_rows_not_judged_are_listed_with_reason(tree):
    run(tree)
    md = (tree[3] / "dns.md").read_text()
    section = md[md.index("## Rows not judged"):]
    rows = {ln.split(" | ")[0][2:]: ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln
            and not ln.startswith("| run id")}
    assert set(rows) == {"scratch", "dirty", "stale"}
    assert "| dns/mnist_lenet5 | 7 | adhoc | fidelity adhoc" in rows["scratch"]
    assert "| 8 | paper |" in rows["dirty"] and "git_dirty" in rows["dirty"]
    assert "| 9 | paper |" in rows["stale"] and "superseded" in rows["stale"]


def test_plots_compression_methods_only_fixed_distinct_styles(tree):
    run(tree)
    out = tree[3]
    png = out / "pareto_mnist.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 5000
    md = (out / "dns.md").read_text()
    assert "![mnist](pareto_mnist.png)" in md
    key = md[md.index("![mnist](pareto_mnist.png)"):md.index("## Rows not judged")]
    points = [ln for ln in key.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    # dns recipes only, one point per recipe (seeds averaged): no baseline arm, no unjudged row
    assert {ln.split(" | ")[1] for ln in points} == {"dns"}
    assert sorted(ln.split(" | ")[5] for ln in points) == sorted(
        f"dns/{s}" for s in ("mnist_lenet5", "mnist_lenet5_released", "mnist_lenet300", "mnist_lenet300_caffe",
                             "mnist_lenet5_reduced", "mnist_lenet300_reduced"))
    assert "| 1 | dns | dns | lenet300_100 |" in key


def test_plot_points_exclude_analysis_baselines_backbones_fp_controls_and_unjudged():
    families = {"dns": "prune", "inq": "quant", "baseline": "baseline", "xgradcam": "analysis",
                "unit_ablation": "analysis"}
    base = {"dataset": "mnist", "fidelity": "reduced", "top1": 98.0, "ops": 1e6, "_judged": True, "seed": 0}
    rows = [base | {"paper": "dns", "method": "dns", "experiment_config": "dns/a"},
            base | {"paper": "dns", "method": "dns", "experiment_config": "dns/a", "seed": 1, "top1": 97.0},
            base | {"paper": "inq", "method": "inq", "experiment_config": "inq/b", "_judged": False},
            base | {"paper": "dns", "method": "baseline", "experiment_config": "dns/c"},
            base | {"paper": "backbones", "method": "dns", "experiment_config": "backbones/d"},
            base | {"paper": "xgradcam", "method": "gradcam", "experiment_config": "xgradcam/e"},
            base | {"paper": "unit_ablation", "method": "random", "experiment_config": "unit_ablation/f"},
            base | {"paper": "xgradcam", "method": "xgradcam", "experiment_config": "xgradcam/g"},
            base | {"paper": "dns", "method": "dns", "experiment_config": "dns/h", "variant": "fp"}]   # FP control
    (pt,) = report.plot_points(rows, families)["mnist"]
    assert (pt["method"], pt["experiment"], pt["n"], pt["acc"], pt["label"]) == ("dns", "dns/a", 2, 97.5, "1")


def test_method_styles_fixed_and_distinct():
    families = {f"m{i:02d}": "prune" for i in range(24)} | {"baseline": "baseline", "xgradcam": "analysis"}
    styles = report.method_styles(families)
    assert set(styles) == {f"m{i:02d}" for i in range(24)}                     # no style for non-compression
    assert len({c for c, _ in styles.values()}) == 24 and len({str(m) for _, m in styles.values()}) == 24
    # the same method keeps its style whichever methods a plot shows
    assert report.method_styles(families) == styles


def test_report_names_bad_row_and_bad_reference_file(tree):
    refdir, runs, conf, out = tree
    append_row(str(runs / "dns.csv"), {"run_id": "bad", "reference": "dns:lenet5_typo", "paper": "dns",
                                       "fidelity": "paper", "top1": 99.0})
    (refdir / "inq.yaml").write_text(REF.replace("paper: dns", "paper: inq").replace("floor: 0.3", "floor: -0.3"))
    assert run(tree) == 1
    index = (out / "index.md").read_text()
    assert "dns.csv, line 22, run 'bad': field 'reference'" in index and "lenet5_typo" in index
    inq = next(ln for ln in index.splitlines() if ln.startswith("| inq |"))
    assert "**invalid reference file**" in inq and "entry 'alexnet_dns'" in inq
    assert "field 'metrics.top1_error.band.floor'" in inq
    assert "reproduced" in (out / "dns.md").read_text()     # the valid rows are still reported


def test_rows_without_a_reference_file_are_listed_in_the_index(tree):
    """A track no reference file covers (detection): its rows appear in the index with their metric and whether
    they are judged-ready, and never on a paper page."""
    refdir, runs, conf, out = tree
    det = str(runs / "detection.csv")
    for run_id, dirty, map50 in (("det-clean", False, 30.51), ("det-dirty", True, 12.0)):
        append_row(det, {"run_id": run_id, "experiment": "voc_x", "experiment_config": "detection/voc_x",
                         "paper": "detection", "dataset": "voc_synthetic", "model": "ssd_tiny", "method": "baseline",
                         "fidelity": "reduced", "seed": 0, "map50": map50, "params": 301024, "macs": 45268992,
                         "git_dirty": dirty, "config_hash": "h-detection/voc_x", "extra": {}})
    run(tree)
    index = (out / "index.md").read_text()
    section = index[index.index("## Rows outside the papers' references"):]
    table = section[section.index("### detection"):].splitlines()
    assert table[4] == "| detection/voc_x | 0 | — | 30.51 | 301024 | 45268992 | yes |"
    assert table[5].startswith("| detection/voc_x | 0 | — | 12.00 |") and "git_dirty" in table[5]
    assert "### dns" not in section and "voc_x" not in (out / "dns.md").read_text()

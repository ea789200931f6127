"""The reproduction report on a temporary results tree with a few fake rows (never committed)."""
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
          top1_error: {value: 0.91, unit: "%", band: {floor: 0.15, k_std: 2}}
          params: {value: 431080, unit: count, exact: true}
        source: test
        verified: true
      - key: lenet300_dns
        table: table1_summary
        dataset: mnist
        model: lenet300_100
        method: dns
        metrics:
          top1_error: {value: 1.99, unit: "%", band: {floor: 0.15}}
          compression_ratio: {value: 56, unit: x}
        source: test
        verified: false
        known_gap: "solver unknown"
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
      - id: dns_no_loss
        text: "DNS keeps accuracy"
        source: abstract
        compare: {metric: top1, better: {method: dns}, worse: {method: baseline}, same: [dataset, model, fidelity],
                  margin: -0.2}
    """)


def exp(paper, stem, ref, method, data="mnist", model="lenet5"):
    return (f"# @package _global_\n# python train.py experiment={paper}/{stem}\ndefaults:\n"
            f"  - override /data: {data}\n  - override /model: {model}\n  - override /method: {method}\n"
            f"paper: {paper}\nname: {stem}\nreference: {ref}\nfidelity: paper\n")


@pytest.fixture
def tree(tmp_path):
    refdir, runs, conf, out = (tmp_path / d for d in ("reference", "runs", "conf", "reports"))
    for d in (refdir, runs, conf / "experiment" / "dns", conf / "method"):
        d.mkdir(parents=True)
    (refdir / "dns.yaml").write_text(REF)
    (conf / "method" / "dns.yaml").write_text("name: dns\nfamily: prune\n")
    (conf / "method" / "pending_thing.yaml").write_text("name: pending_thing\nfamily: prune\nimplemented: false\n")
    (conf / "experiment" / "dns" / "mnist_lenet5.yaml").write_text(exp("dns", "mnist_lenet5", "dns:lenet5_dns", "dns"))
    (conf / "experiment" / "dns" / "mnist_lenet300.yaml").write_text(
        exp("dns", "mnist_lenet300", "dns:lenet300_dns", "dns", model="lenet300_100"))
    (conf / "experiment" / "dns" / "mnist_lenet5_ref.yaml").write_text(
        exp("dns", "mnist_lenet5_ref", "dns:lenet5_ref", "pending_thing"))
    base = {"paper": "dns", "dataset": "mnist", "epochs": 10, "extra": {}}
    csv = str(runs / "dns.csv")
    # LeNet-5 DNS, 2 seeds: errors 0.95, 0.99 -> mean 0.97, delta +0.06, band 0.15 -> reproduced (verified)
    for seed, top1 in ((0, 99.05), (1, 99.01)):
        append_row(csv, base | {"run_id": f"l5s{seed}", "reference": "dns:lenet5_dns", "model": "lenet5",
                                "method": "dns", "fidelity": "paper", "seed": seed, "top1": top1,
                                "macs": 2293000, "ops": 4586000})
    # LeNet-300-100: error 2.5 vs 1.99 -> out of band, known gap
    append_row(csv, base | {"run_id": "l3", "reference": "dns:lenet300_dns", "model": "lenet300_100", "method": "dns",
                            "fidelity": "paper", "seed": 0, "top1": 97.5, "macs": 266200, "ops": 532400})
    # a dense baseline (ad hoc reference-free, reduced) for the claim: dns 99.03 - 99.10 = -0.07 >= -0.2 -> held
    append_row(csv, base | {"run_id": "b0", "reference": "", "model": "lenet5", "method": "baseline",
                            "fidelity": "paper", "seed": 0, "top1": 99.10, "macs": 2293000, "ops": 4586000})
    return refdir, runs, conf, out


def test_report_tables_statuses_claims_plot_and_index(tree):
    refdir, runs, conf, out = tree
    rc = report.main(["--results-dir", str(runs), "--reference-dir", str(refdir), "--conf-dir", str(conf),
                      "--out", str(out)])
    assert rc == 0
    md = (out / "dns.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| lenet5_dns "))
    assert "| 0.91 | 0.97 ± 0.03 | +0.06 | 0.15 | reproduced | paper | 2 | yes |" in line
    line = next(ln for ln in md.splitlines() if ln.startswith("| lenet300_dns "))
    assert "| 1.99 | 2.50 | +0.51 | 0.15 | known gap: solver unknown | paper | 1 | no (labelled) |" in line
    assert "| lenet300_dns | mnist | lenet300_100 | dns |  | compression_ratio (x) | 56.00 | — | — | — | " \
           "informational (not judged) |" in md
    assert "| alexnet_dns | imagenet | alexnet | dns |  | top1_error (%) | 43.09 | — | — | 0.30 | not runnable here |" in md
    assert "| lenet5_ref |" in md and "pending method |" in md
    assert "| lenet5_dns | lenet5 | params | 431080 count | tests/test_reference_complexity.py |" in md
    assert "**dns_no_loss** — held." in md
    assert "= -0.070 vs margin -0.200 -> held (enforced by tests/test_repro.py)" in md
    assert "![mnist](pareto_mnist.png)" in md
    png = out / "pareto_mnist.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 5000
    index = (out / "index.md").read_text()
    assert index.count("**missing reference file**") == 16
    dns = next(ln for ln in index.splitlines() if ln.startswith("| dns |"))
    assert "| 4 | 3 | 3/0 | 1 reproduced, 1 known gap, 1 not runnable here, 1 pending method | 1/1 of 1 |" in dns


def test_report_names_bad_row_and_bad_reference_file(tree):
    refdir, runs, conf, out = tree
    append_row(str(runs / "dns.csv"), {"run_id": "bad", "reference": "dns:lenet5_typo", "paper": "dns",
                                       "fidelity": "paper", "top1": 99.0})
    (refdir / "inq.yaml").write_text(REF.replace("paper: dns", "paper: inq").replace("floor: 0.3", "floor: -0.3"))
    rc = report.main(["--results-dir", str(runs), "--reference-dir", str(refdir), "--conf-dir", str(conf),
                      "--out", str(out)])
    assert rc == 1
    index = (out / "index.md").read_text()
    assert "dns.csv, line 6, run 'bad': field 'reference'" in index and "lenet5_typo" in index
    inq = next(ln for ln in index.splitlines() if ln.startswith("| inq |"))
    assert "**invalid reference file**" in inq and "entry 'alexnet_dns'" in inq
    assert "field 'metrics.top1_error.band.floor'" in inq
    # the valid rows are still reported
    assert "reproduced" in (out / "dns.md").read_text()

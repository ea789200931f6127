"""The reference registry: validation errors, lookup, bands, claims, counting conventions, config mapping."""
from __future__ import annotations

import os
import shutil
import textwrap

import pytest
import torch.nn as nn

from engine import references as R
from engine.results import COLUMNS, ResultsError, append_row

VALID = textwrap.dedent("""\
    paper: dns
    title: Test paper
    arxiv: null
    conventions: {flops: macs, params: all, counter: thop-0.0.31, bn_counted: true, input_res: [1, 28, 28]}
    entries:
      - key: lenet5_dns
        table: table1
        dataset: mnist
        model: lenet5
        method: dns
        variant: null
        metrics:
          top1_error: {value: 0.91, unit: "%", band: {paper_pm: null, floor: 0.15}}
          compression_ratio: {value: 108, unit: x, band: {floor: 10.8}}
          params: {value: 431080, unit: count, exact: true}
        source: "test"
        protocol: {seeds: 1}
        verified: false
        known_gap: null
        runnable: true
    claims:
      - id: dns_no_loss
        text: "DNS keeps accuracy"
        source: abstract
        compare:
          metric: top1
          better: {method: dns}
          worse: {method: baseline}
          same: [dataset, model, fidelity]
          margin: -0.2
    """)


def write(tmp_path, text, name="dns.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- the committed files ---------------------------------------------------------------------------------

def test_committed_reference_files_validate():
    refs = R.load_references()
    assert {"acp", "aip", "autorecon", "pa", "nasb", "sketch", "nat"} <= set(refs)
    # spot values straight from the notes (acp.md table1/table4, autorecon.md agreed table)
    assert R.lookup(refs, "acp:c10_resnet56_baseline").metrics["flops"].value == 127.62
    assert R.lookup(refs, "acp:in_resnet50_eps040").metrics["top1"].value == 74.64
    assert R.lookup(refs, "acp:in_resnet50_eps040").verified is True
    arc = R.lookup(refs, "autorecon:in_mobilenet_v2_arc_w4a4")
    assert (arc.metrics["top1"].value, arc.verified, arc.variant) == (60.13, False, "W4A4")
    assert R.lookup(refs, "aip:in_resnet18_aip").metrics["flops_reduction_pct"].value == 45.55


def test_valid_file_loads_and_lookup(tmp_path):
    ref = R.load_reference(write(tmp_path, VALID))
    e = R.lookup({"dns": ref}, "dns:lenet5_dns")
    assert e.ref == "dns:lenet5_dns" and e.metrics["params"].exact and e.metrics["top1_error"].band.floor == 0.15
    assert ref.claims[0].margin == -0.2 and ref.conventions.input_res == (1, 28, 28)
    with pytest.raises(R.ReferenceError, match=r"no entry 'nope' in .*dns.yaml"):
        R.lookup({"dns": ref}, "dns:nope")
    with pytest.raises(R.ReferenceError, match=r"no reference file for paper 'inq'"):
        R.lookup({"dns": ref}, "inq:x")
    with pytest.raises(R.ReferenceError, match=r"expected '<paper>:<entry key>'"):
        R.lookup({"dns": ref}, "dns_lenet5")


BAD = [
    # (replace old -> new, expected message fragments)
    ("dataset: mnist", "dataset: mnist3", ["entry 'lenet5_dns'", "field 'dataset'", "unknown value 'mnist3'"]),
    ("floor: 0.15", "floor: -0.15", ["entry 'lenet5_dns'", "field 'metrics.top1_error.band.floor'", ">= 0"]),
    ("paper_pm: null", "paper_pm: -1", ["entry 'lenet5_dns'", "field 'metrics.top1_error.band.paper_pm'"]),
    ("verified: false", "verified: maybe", ["entry 'lenet5_dns'", "field 'verified'", "true/false"]),
    ("    verified: false\n", "", ["entry 'lenet5_dns'", "field 'verified'", "required"]),
    ("runnable: true", "runable: true", ["entry 'lenet5_dns'", "field 'runable'", "unknown field"]),
    ("counter: thop-0.0.31", "counter: thop", ["field 'conventions.counter'", "unknown value 'thop'"]),
    ("flops: macs,", "flops: mac,", ["field 'conventions.flops'"]),
    ("unit: count", "unit: things", ["entry 'lenet5_dns'", "field 'metrics.params.unit'"]),
    ("runnable: true", "runnable: true\n    architecture: 5", ["entry 'lenet5_dns'", "field 'architecture'"]),
    ("runnable: true", "runnable: false", ["entry 'lenet5_dns'", "field 'runnable'", "why it cannot run"]),
    ("band: {paper_pm: null, floor: 0.15}", "band: {floor: 0}",
     ["field 'metrics.top1_error.band'", "no positive width"]),
    # our seed spread never widens a band: k_std is gone from the schema
    ("floor: 0.15}", "floor: 0.15, k_std: 2}", ["field 'metrics.top1_error.band.k_std'", "unknown field",
                                                "['floor', 'paper_pm']"]),
    ("known_gap: null", "known_gap: {metrics: [top5_error], reason: other solver}",
     ["entry 'lenet5_dns'", "field 'known_gap.metrics'", "'top5_error' is not a metric of this entry"]),
    ("known_gap: null", "known_gap: {metrics: [], reason: other solver}",
     ["entry 'lenet5_dns'", "field 'known_gap.metrics'", "non-empty"]),
    ("known_gap: null", "known_gap: {metrics: [compression_ratio]}",
     ["entry 'lenet5_dns'", "field 'known_gap.reason'", "required"]),
    ("known_gap: null", "known_gap: \"a bare string no longer says which metrics\"",
     ["entry 'lenet5_dns'", "field 'known_gap'", "expected a mapping"]),
    ("runnable: true", "runnable: true\n    evidence: released", ["entry 'lenet5_dns'", "field 'evidence'",
                                                               "unknown value 'released'"]),
    ("runnable: true", "runnable: true\n    evidence: recount\n    recount_experiments: [x]",
     ["entry 'lenet5_dns'", "field 'recount_experiments'", "the whole entry is evidence: recount"]),
    ("key: lenet5_dns", "key: LeNet5", ["entry 'LeNet5'", "field 'key'", "lowercase name"]),
    ("same: [dataset, model, fidelity]", "same: dataset", ["claim 'dns_no_loss'", "field 'compare.same'"]),
    ("input_res: [1, 28, 28]", "input_res: [1, 28, -28]", ["field 'conventions.input_res'", "positive ints"]),
    ("      margin: -0.2\n", "      margin: -0.2\n      equal: {metric: compression_ratio}\n",
     ["claim 'dns_no_loss'", "field 'compare.equal.rel_tol'", "required"]),
    ("      margin: -0.2\n", "      margin: -0.2\n      equal: {metric: compression_ratio, rel_tol: 0}\n",
     ["claim 'dns_no_loss'", "field 'compare.equal.rel_tol'", "must be > 0"]),
    ("      margin: -0.2\n", "      margin: -0.2\n      equal: {metric: compression_ratio, tol: 0.1}\n",
     ["claim 'dns_no_loss'", "field 'compare.equal.tol'", "unknown field; allowed: ['metric', 'rel_tol']"]),
    ("model: lenet5", "model: lenet7", ["entry 'lenet5_dns'", "field 'model'", "not a registered model"]),
    ("paper: dns", "paper: inq", ["field 'paper'", "must equal the file name"]),
    ("margin: -0.2", "margin: small", ["claim 'dns_no_loss'", "field 'compare.margin'"]),
    ("      margin: -0.2\n", "", ["claim 'dns_no_loss'", "field 'compare.margin'", "missing"]),
    ("    compare:\n", "    notes_:\n", ["claim 'dns_no_loss'", "field 'notes_'", "unknown field"]),
    ("value: 0.91", "value: '0.91'", ["field 'metrics.top1_error.value'", "finite number"]),
    ("value: 0.91", "value: null", ["field 'metrics.top1_error.value'", "needs a number"]),
]


@pytest.mark.parametrize("old,new,fragments", BAD, ids=[b[2][-1][:30] for b in BAD])
def test_malformed_reference_names_file_entry_field(tmp_path, old, new, fragments):
    assert old in VALID
    path = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(R.ReferenceError) as err:
        R.load_reference(path)
    msg = str(err.value)
    assert path in msg
    for frag in fragments:
        assert frag in msg, msg


def test_duplicate_entry_key_and_yaml_key(tmp_path):
    entry = VALID[VALID.index("  - key: lenet5_dns"):VALID.index("claims:")]
    dup = VALID.replace("claims:", entry + "claims:", 1)
    with pytest.raises(R.ReferenceError, match=r"dns.yaml: entry 'lenet5_dns' \(#1\): field 'key': duplicate key"):
        R.load_reference(write(tmp_path, dup))
    dup_yaml = VALID.replace("      top1_error:", "      params: {value: 1, unit: count, exact: true}\n      top1_error:")
    with pytest.raises(R.ReferenceError, match=r"dns.yaml: duplicate key 'params' at line \d+ \(first at line \d+\)"):
        R.load_reference(write(tmp_path, dup_yaml))


def test_qualitative_claim_needs_notes(tmp_path):
    body = VALID[:VALID.index("    compare:")]
    with pytest.raises(R.ReferenceError, match=r"claim 'dns_no_loss': field 'compare': a claim without 'compare' "
                                               r"must say in 'notes'"):
        R.load_reference(write(tmp_path, body))
    ref = R.load_reference(write(tmp_path, body + "    notes: checked by tests/test_dns.py\n"))
    claim = ref.claims[0]
    assert (claim.kind, claim.metric, claim.better, claim.same, claim.margin, claim.enforce) == \
        ("qualitative", None, {}, [], None, False)
    assert R.evaluate_claim(claim, [row(), row(method="baseline")]).status.startswith("qualitative")
    with pytest.raises(R.ReferenceError, match=r"claim 'dns_no_loss': field 'enforce': only a claim with 'compare'"):
        R.load_reference(write(tmp_path, body + "    notes: by hand\n    enforce: true\n"))


def test_claim_flat_view_of_compare_and_within_row(tmp_path):
    """The judge reads every claim as metric / better / worse / same / margin, whatever its YAML shape."""
    claim = R.load_reference(write(tmp_path, VALID)).claims[0]
    assert (claim.kind, claim.metric, claim.better, claim.worse, claim.same, claim.margin, claim.paper) == \
        ("compare", "top1", {"method": "dns"}, {"method": "baseline"}, ["dataset", "model", "fidelity"], -0.2, "dns")
    assert claim.equal is None
    claim = R.load_reference(write(tmp_path, VALID.replace(
        "      margin: -0.2\n", "      margin: -0.2\n      equal: {metric: compression_ratio, rel_tol: 0.1}\n"))).claims[0]
    assert (claim.equal.metric, claim.equal.rel_tol) == ("compression_ratio", 0.1)
    body = VALID[:VALID.index("    compare:")]
    claim = R.load_reference(write(tmp_path, body + "    within_row: {filter: {method: dns}, metric: extra.p, "
                                                    "other: extra.q, margin: 0.1}\n")).claims[0]
    assert (claim.kind, claim.metric, claim.better, claim.worse, claim.same, claim.margin) == \
        ("within_row", "extra.p", {"method": "dns"}, {}, ["run_id"], 0.1)
    assert claim.within_row["other"] == "extra.q" and claim.within_row["min"] is None
    with pytest.raises(R.ReferenceError, match=r"claim 'dns_no_loss': field 'within_row': give either 'compare' or "):
        R.load_reference(write(tmp_path, VALID + "    within_row: {filter: {method: dns}, metric: x, min: 1}\n"))


def test_within_row_claim(tmp_path):
    """Each experiment's rows on their own: the per-row margin over seeds, judged from its 95% CI."""
    body = VALID[:VALID.index("    compare:")]
    ref = R.load_reference(write(tmp_path, body + "    within_row: {filter: {method: dns}, metric: extra.ratio, min: 3.0}\n"))
    rows = [row(run_id=f"a{s}", seed=s, experiment="a", extra={"ratio": r}) for s, r in enumerate((3.5, 3.6, 3.7))]
    rows += [row(run_id=f"b{s}", seed=s, experiment="b", fidelity="reduced", extra={"ratio": r})
             for s, r in enumerate((2.0, 2.1, 1.9))]
    rows.append(row(run_id="c", method="baseline", experiment="c", extra={"ratio": 0.0}))
    res = R.evaluate_claim(ref.claims[0], rows)
    assert [(c.key, c.verdict, res.enforced(c)) for c in res.comparisons] == \
        [(("a",), "held", True), (("b",), "not held", False)]
    assert res.status == "inconclusive"              # one held, one not: not a verdict for the claim
    assert res.evidence()[0].startswith("per row extra.ratio − 3: a 0.600 ± 0.100 (n=3; seeds 0,1,2), "
                                        "95% CI [+0.352, +0.848] (one-sample t) vs margin +0 -> held")
    ref = R.load_reference(write(tmp_path, body + "    within_row: {filter: {method: dns}, metric: extra.p, "
                                                  "other: extra.q, margin: 0.1}\n"))
    rows = [row(run_id=f"p{s}", seed=s, experiment="a", extra={"p": 0.5, "q": q}) for s, q in
            enumerate((0.45, 0.46, 0.44))]
    (comp,) = R.evaluate_claim(ref.claims[0], rows).comparisons
    assert comp.interval.diff == pytest.approx(0.05) and comp.verdict == "not held"
    assert "per row extra.p − extra.q: a 0.050 ± 0.010" in R.evaluate_claim(ref.claims[0], rows).evidence()[0]
    with pytest.raises(R.ReferenceError, match=r"claim 'dns_no_loss': field 'within_row.min': give exactly one"):
        R.load_reference(write(tmp_path, body + "    within_row: {filter: {method: dns}, metric: x}\n"))


def test_not_yaml_names_file(tmp_path):
    path = write(tmp_path, "paper: dns\nentries: [\n")
    with pytest.raises(R.ReferenceError, match="dns.yaml: not valid YAML"):
        R.load_reference(path)


def test_missing_papers_in_directory(tmp_path):
    write(tmp_path, VALID)
    shutil.copy(R.REFERENCE_DIR / "acp.yaml", tmp_path / "acp.yaml")
    missing = R.missing_papers(tmp_path)
    assert len(missing) == 15 and "dns" not in missing and "acp" not in missing and "sd_bnn" in missing
    assert set(R.load_references(tmp_path)) == {"dns", "acp"}
    write(tmp_path, VALID.replace("paper: dns", "paper: foo"), "foo.yaml")
    with pytest.raises(R.ReferenceError, match=r"foo.yaml: field 'paper': unknown paper 'foo'"):
        R.load_references(tmp_path)


# ---- results rows ----------------------------------------------------------------------------------------

def row(**kw):
    """A judged row (``_judged`` as ``R.mark_judged`` sets it on clean rows of an unchanged experiment file)."""
    base = {"run_id": "r", "paper": "dns", "dataset": "mnist", "model": "lenet5", "method": "dns",
            "fidelity": "paper", "seed": 0, "epochs": 10, "top1": 99.0, "extra": {}, "_judged": True}
    base.update(kw)
    return base


def csv_row(**kw):
    return {k: v for k, v in row(**kw).items() if not k.startswith("_")}


def test_row_with_unknown_reference_names_file_line_field(tmp_path):
    refs = {"dns": R.load_reference(write(tmp_path, VALID))}
    runs = tmp_path / "runs"
    append_row(str(runs / "dns.csv"), csv_row(run_id="a", reference="dns:lenet5_dns"))
    append_row(str(runs / "dns.csv"), csv_row(run_id="b", reference="dns:lenet5_typo"))
    with pytest.raises(R.ReferenceError) as err:
        R.load_result_rows(runs, refs)
    msg = str(err.value)
    assert "dns.csv, line 3" in msg and "run 'b'" in msg and "field 'reference'" in msg and "lenet5_typo" in msg


def test_row_with_unknown_fidelity_and_missing_columns(tmp_path):
    runs = tmp_path / "runs"
    append_row(str(runs / "x.csv"), csv_row(fidelity="full"))
    with pytest.raises(R.ReferenceError, match=r"x.csv, line 2, run 'r': field 'fidelity': unknown value 'full'"):
        R.load_result_rows(runs)
    (runs / "x.csv").write_text("run_id,top1\nq,91.0\n")
    with pytest.raises(ResultsError, match=r"x.csv: missing columns \['timestamp'"):
        R.load_result_rows(runs)


def test_row_value_conversions():
    conv = R.Conventions(flops="macs", params="all", counter="own")
    r = {c: "" for c in COLUMNS} | {"top1": "91.25", "macs": "1000", "flops": "2000", "extra": {"compression_ratio": 108}}
    assert R.row_value(r, "top1_error") == pytest.approx(8.75)
    assert R.row_value(r, "flops", conv) == 1000 and R.row_value(r, "flops") == 2000
    assert R.row_value(r, "compression_ratio") == 108 and R.row_value(r, "extra.compression_ratio") == 108
    assert R.row_value(r, "top5") is None


# ---- bands and judgements --------------------------------------------------------------------------------

def test_band_width_golden():
    """A band is the paper's ± or the entry's floor, whichever is larger; our seed spread has no say in it."""
    assert R.Band(paper_pm=0.1, floor=0.15).width() == 0.15
    assert R.Band(paper_pm=0.5, floor=0.1).width() == 0.5
    assert R.Band(floor=0.2).width() == 0.2 and R.Band(paper_pm=0.3).width() == 0.3
    with pytest.raises(TypeError):
        R.Band(floor=0.15).width(0.2)               # no seed-std argument to widen it with
    with pytest.raises(ValueError, match="k_std"):
        R.Band(floor=0.15, k_std=2)


def test_known_gap_names_its_metrics_and_evidence(tmp_path):
    """A known gap excuses only the metrics it names; ``evidence`` says whether our rows are training or recounts."""
    text = VALID.replace("known_gap: null", "known_gap:\n      metrics: [compression_ratio]\n"
                                            "      reason: \"the starting weights differ\"")
    e = R.load_reference(write(tmp_path, text)).entries["lenet5_dns"]
    assert e.known_gap.metrics == ("compression_ratio",) and e.known_gap.reason == "the starting weights differ"
    assert e.gap("compression_ratio") == "the starting weights differ" and e.gap("top1_error") is None
    assert str(e.known_gap) == "the starting weights differ" and e.known_gap.covers("compression_ratio")
    assert e.evidence == "training" and not e.recount and e.evidence_of("any") == "training"
    e = R.load_reference(write(tmp_path, VALID.replace("runnable: true", "runnable: true\n    evidence: recount"))) \
        .entries["lenet5_dns"]
    assert e.recount and e.evidence_of("mnist_lenet5") == "recount" and e.known_gap is None
    e = R.load_reference(write(tmp_path, VALID.replace(
        "runnable: true", "runnable: true\n    recount_experiments: [mnist_lenet5_released]"))).entries["lenet5_dns"]
    assert not e.recount and e.evidence_of("mnist_lenet5_released") == "recount"
    assert e.evidence_of("dns/mnist_lenet5_released") == "recount"      # an experiment file, <group>/<name>
    assert e.evidence_of("mnist_lenet5") == "training" and e.evidence_of(None) == "training"


def test_committed_known_gaps_and_recounts():
    """Decisions of issue 12 in the committed files: the DNS LeNet-5 gap covers sparsity, and accuracy only on the
    better side (an error above the paper's is still out of band); released weights evaluated here are recounts."""
    refs = R.load_references()
    l5 = R.lookup(refs, "dns:lenet5_dns")
    assert l5.gap("compression_ratio", -57) and l5.gap("remaining_pct_conv1", +6)
    assert l5.gap("top1_error", -0.19) and l5.gap("top1_error", +0.3) is None
    assert l5.evidence == "training"
    for ref in ("dns:lenet5_dns_released_model", "dns:lenet300_100_dns_released_model", "inq:resnet18_fp",
                "autorecon:c10_resnet20_fp"):
        assert R.lookup(refs, ref).recount, ref
    assert R.lookup(refs, "dns:lenet5_reference").evidence_of("mnist_lenet5_reference_released") == "recount"
    assert R.lookup(refs, "dns:lenet5_reference").evidence_of("mnist_lenet5_reference") == "training"
    for paper in refs.values():
        for e in paper.entries.values():
            assert e.known_gap is None or set(e.known_gap.metrics) <= set(e.metrics), e.ref


def _entry(tmp_path, **replace):
    text = VALID
    for old, new in replace.items():
        text = text.replace(old, new)
    return R.load_reference(write(tmp_path, text))


def test_judgement_statuses(tmp_path):
    ref = _entry(tmp_path)
    e, m = ref.entries["lenet5_dns"], ref.entries["lenet5_dns"].metrics["top1_error"]
    rows = [row(reference="dns:lenet5_dns", top1=99.0, run_id="s0"), row(reference="dns:lenet5_dns", top1=99.2,
                                                                          run_id="s1", seed=1)]
    j = R.judge_metric(e, m, rows, "paper", ref.conventions)
    # errors 1.0 and 0.8: mean 0.9, std 0.14142 (shown, never part of the band), band = floor 0.15
    assert j.values == pytest.approx([1.0, 0.8]) and j.mean == pytest.approx(0.9)
    assert j.std == pytest.approx(0.141421, abs=1e-6) and j.band == 0.15 and j.delta == pytest.approx(-0.01)
    assert j.status == "in band"                      # unverified reference: never "reproduced"
    e.verified = True
    assert j.status == "reproduced"
    far = [row(reference="dns:lenet5_dns", top1=98.0)]
    j2 = R.judge_metric(e, m, far, "paper", ref.conventions)
    assert j2.band == 0.15 and j2.status == "out of band"
    e.known_gap = R.KnownGap(metrics=("compression_ratio",), reason="different solver")
    assert j2.status == "out of band"                 # the gap names another metric
    e.known_gap = R.KnownGap(metrics=("top1_error",), reason="different solver")
    assert j2.status == "known gap"
    e.known_gap, e.evidence = None, "recount"
    assert j.status == "recounted"                    # in band, but released weights: never "reproduced"
    assert R.judge_metric(e, m, far, "reduced", ref.conventions).status == "not run"
    red = [row(reference="dns:lenet5_dns", fidelity="reduced")]
    assert R.judge_metric(e, m, red, "reduced", ref.conventions).status.startswith("reduced")
    unjudged = [row(reference="dns:lenet5_dns", top1=50.0, _judged=False)]
    assert R.judge_metric(e, m, unjudged, "paper", ref.conventions).status == "not run"


def test_rounding_and_exact_status():
    assert R.rounding_half_unit(314.59) == pytest.approx(0.005)
    assert R.rounding_half_unit(108) == pytest.approx(0.5)
    assert R.exact_status(127.62, 127.6156) == "exact"
    assert R.exact_status(314.59, 314.3076) == "within 1%"
    assert R.exact_status(314.59, 300.0) == "mismatch"


# ---- claims ----------------------------------------------------------------------------------------------

def test_claim_groups_arms_and_verdicts(tmp_path):
    claim = _entry(tmp_path).claims[0]      # dns.top1 - baseline.top1 > -0.2, same dataset/model/fidelity
    rows = [row(method="dns", top1=t, seed=s, run_id=f"d{s}", experiment="dns5") for s, t in
            enumerate((98.6, 98.4, 98.65))]
    rows += [row(method="baseline", top1=t, seed=s, run_id=f"b{s}", experiment="base5") for s, t in
             enumerate((99.1, 99.0, 99.2))]
    rows += [row(method="dns", model="lenet300_100", top1=t, seed=s, experiment="dns3", fidelity="reduced")
             for s, t in enumerate((97.0, 97.2, 97.1))]
    rows += [row(method="baseline", model="lenet300_100", top1=t, seed=s, experiment="base3", fidelity="reduced")
             for s, t in enumerate((96.0, 96.1, 96.3))]
    rows += [row(method="baseline", model="lenet300_100", top1=90.0, run_id="smoke", fidelity="smoke",
                 _judged=False),
             row(method="dns", model="alexnet", top1=50.0)]   # no baseline partner: no comparison
    res = R.evaluate_claim(claim, rows)
    assert [c.key for c in res.comparisons] == [("mnist", "lenet300_100", "reduced"), ("mnist", "lenet5", "paper")]
    red, paper = res.comparisons
    # paired by seed: differences 1.0 1.1 0.8 (held, reduced: not enforced); -0.5 -0.6 -0.55 (not held, enforced)
    assert red.interval.diff == pytest.approx(0.9667, abs=1e-4) and red.verdict == "held" and not res.enforced(red)
    assert paper.interval.test == "paired t" and paper.interval.high < -0.2
    assert paper.verdict == "not held" and res.enforced(paper)
    assert res.status == "inconclusive"
    ev = res.evidence()[1]
    assert "n=3" in ev and "95% CI" in ev and "not held" in ev
    claim.enforce = True
    assert res.enforced(red)

def test_claim_uses_its_own_papers_rows_unless_a_side_names_another(tmp_path):
    """Another paper's baseline of the same model (e.g. a pretrained evaluation in backbones.csv) is not pooled
    into a claim's float reference; a side that names ``paper`` may use shared rows on purpose."""
    claim = _entry(tmp_path).claims[0]      # dns.top1 - baseline.top1 > -0.2
    rows = [row(method="dns", top1=99.0, run_id="d0"), row(method="baseline", top1=99.1, run_id="own"),
            row(method="baseline", top1=90.0, run_id="other", paper="backbones")]
    (comp,) = R.evaluate_claim(claim, rows).comparisons
    assert list(comp.worse.run_ids.values()) == ["own"] and comp.interval.diff == pytest.approx(-0.1)
    claim.worse = {"method": "baseline", "paper": "backbones"}
    (comp,) = R.evaluate_claim(claim, rows).comparisons
    assert list(comp.worse.run_ids.values()) == ["other"] and comp.interval.diff == pytest.approx(9.0)

# ---- counting conventions --------------------------------------------------------------------------------

class Tiny(nn.Module):
    """conv(1->2, 3x3, bias) -> BN -> ReLU -> maxpool 2 -> adaptive avg 1 -> linear(2->3)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.gap(self.pool(self.relu(self.bn(self.conv(x))))).flatten(1))


@pytest.mark.golden
@pytest.mark.parametrize("counter,total", [
    # raw MACs: conv 2x4x4 outputs x 9 = 288, linear 2x3 = 6 -> 294
    ("own", 294),
    # + conv bias 32 + BN 2x32 + adaptive avg (kernel 4 + 1) x 2 outputs = 294 + 32 + 64 + 10
    ("thop-0.0.31", 400),
    # + BN 4x32 (affine) + adaptive avg 10, bias not counted
    ("thop-0.1.1", 432),
    # + bias 32 + BN 2x32 + ReLU 32 + maxpool input 32 + avgpool input 8 + linear bias 3
    ("ptflops", 465),
])
def test_convention_counts_tiny_model(counter, total):
    conv = R.Conventions(flops="macs", params="all", counter=counter)
    c = R.convention_counts(Tiny(), (1, 6, 6), conv)
    assert c["raw_macs"] == 294 and c["macs"] == total and c["flops"] == total
    assert R.convention_counts(Tiny(), (1, 6, 6), R.Conventions("2macs", "all", counter))["flops"] == 2 * total


@pytest.mark.golden
def test_convention_params_and_bn_override():
    m = Tiny()
    assert R.convention_params(m, "all") == 20 + 4 + 9
    assert R.convention_params(m, "conv_fc_weights_biases") == 20 + 9
    assert R.convention_params(m, "conv_fc_weights") == 18 + 6
    no_bn = R.convention_counts(m, (1, 6, 6), R.Conventions("macs", "all", "thop-0.0.31", bn_counted=False))
    assert no_bn["macs"] == 400 - 64


@pytest.mark.golden
def test_thop_recounts_of_the_notes():
    """Paper notes' README, 'Counting conventions': CIFAR VGG-16 314.03M (thop 0.0.31) / 314.31M (thop 0.1.1),
    CIFAR ResNet-56 126.55M (thop 0.0.31) / 127.62M (thop 0.1.1, = ACP's printed baseline)."""
    from models import build_model
    expected = {"vgg16": (314.03, 314.31), "resnet56": (126.55, 127.62)}
    for name, (t31, t11) in expected.items():
        model = build_model(name, num_classes=10)
        a = R.convention_counts(model, (3, 32, 32), R.Conventions("macs", "all", "thop-0.0.31"))["flops"] / 1e6
        b = R.convention_counts(model, (3, 32, 32), R.Conventions("macs", "all", "thop-0.1.1"))["flops"] / 1e6
        assert round(a, 2) == t31 and round(b, 2) == t11, (name, a, b)


# ---- experiment configs <-> references ----------------------------------------------------------------------

def test_every_entry_has_config_or_reason_and_every_config_a_reference():
    refs = R.load_references()
    configs = R.load_experiment_configs()
    cited = {}
    problems = []
    for c in configs:
        stem = os.path.relpath(c.path, R.ROOT / "conf" / "experiment")[:-5]
        if f"experiment={stem}" not in (c.command or "").split():
            problems.append(f"{c.path}: first command comment is {c.command!r}, expected "
                            f"'python train.py experiment={stem}' (or evaluate.py / a script taking it)")
        if R.method_status(c.method) == "missing":
            problems.append(f"{c.path}: method {c.method!r} has no conf/method/{c.method}.yaml")
        if not c.reference:
            # reduced/smoke cells are judged by claims; experiments outside the 17 papers (e.g. backbones) are
            # not judged. A paper-fidelity config of a paper without a reference must name the variant (an
            # ablation / extra cell, judged by claims).
            if c.paper in R.PAPERS and c.fidelity == "paper" and not c.variant:
                problems.append(f"{c.path}: field 'reference' is missing for a paper-fidelity cell of {c.paper!r} "
                                "(cite the entry, or name the ablation in 'variant')")
            continue
        try:
            e = R.lookup(refs, c.reference)
        except R.ReferenceError as err:
            problems.append(f"{c.path}: field 'reference': {err}")
            continue
        if c.paper != e.paper:
            problems.append(f"{c.path}: field 'paper' is {c.paper!r}, the reference belongs to {e.paper!r}")
        if c.fidelity not in ("paper", "reduced", "smoke"):
            problems.append(f"{c.path}: field 'fidelity' is {c.fidelity!r}")
        cited.setdefault(c.reference, []).append(c.path)
    for ref in refs.values():
        for e in ref.entries.values():
            if e.ref not in cited and not e.not_runnable_reason:
                problems.append(f"{e.path}: entry '{e.key}': no conf/experiment config cites {e.ref} and "
                                "field 'runnable' gives no reason")
    assert not problems, "\n".join(problems)


def test_experiment_configs_compose_and_pending_methods_fail_clearly(compose):
    """One composed config per (paper, method) of this issue's papers; pending methods stop at validation."""
    from engine.config import ConfigError, validate

    picked = {}
    for c in R.load_experiment_configs():
        if c.paper in ("acp", "aip", "autorecon", "pa", "nasb", "sketch", "nat"):
            picked.setdefault((c.paper, c.method), c)
    assert len(picked) >= 5
    for c in picked.values():
        stem = os.path.relpath(c.path, R.ROOT / "conf" / "experiment")[:-5]
        cfg = compose([f"experiment={stem}"])
        assert (cfg.reference, cfg.fidelity, cfg.method.name, cfg.data.name) == (c.reference, c.fidelity, c.method,
                                                                                   c.data)
        if R.method_status(c.method) == "pending":
            with pytest.raises(ConfigError, match=f"method '{c.method}' .* not implemented yet"):
                validate(cfg)
        else:
            validate(cfg)


def test_experiment_config_extending_another_inherits_its_groups_and_fields(tmp_path):
    exp = tmp_path / "experiment" / "p"
    exp.mkdir(parents=True)
    (exp / "base.yaml").write_text("# @package _global_\n# python train.py experiment=p/base\n"
                                   "defaults:\n  - override /method: dns\n  - override /data: mnist\n"
                                   "paper: dns\nname: base\nreference: dns:lenet5_dns\nfidelity: paper\n")
    (exp / "child.yaml").write_text("# @package _global_\n# python train.py experiment=p/child\n"
                                    "defaults:\n  - /experiment/p/base\n  - override /data: mnist_caffe\n  - _self_\n"
                                    "name: child\nvariant: v\n")
    child = next(c for c in R.load_experiment_configs(tmp_path) if c.path.endswith("child.yaml"))
    assert (child.method, child.data, child.paper, child.name, child.reference, child.fidelity, child.variant) == \
        ("dns", "mnist_caffe", "dns", "child", "dns:lenet5_dns", "paper", "v")
    assert child.command == "python train.py experiment=p/child"


def test_two_recipes_citing_one_entry_are_judged_apart(tmp_path):
    """Rows of two experiments citing the same entry are not pooled, and no spread widens a band: a far recipe
    neither passes through its seed std nor hides among a close recipe's seeds."""
    ref = _entry(tmp_path)
    e, m = ref.entries["lenet5_dns"], ref.entries["lenet5_dns"].metrics["top1_error"]
    rows = [row(reference="dns:lenet5_dns", top1=99.1, experiment="faithful"),
            row(reference="dns:lenet5_dns", top1=99.05, experiment="faithful", seed=1),
            row(reference="dns:lenet5_dns", top1=97.0, experiment="other")]
    assert R.judged_experiments(e, rows, "paper") == ["faithful", "other"]
    pooled = R.judge_metric(e, m, rows, "paper", ref.conventions)
    assert pooled.std == pytest.approx(1.198, abs=1e-3) and pooled.band == 0.15 and not pooled.within(3.0)
    faithful = R.judge_metric(e, m, rows, "paper", ref.conventions, "faithful")
    other = R.judge_metric(e, m, rows, "paper", ref.conventions, "other")
    assert faithful.n == 2 and faithful.status == "in band" and faithful.band == pytest.approx(0.15)
    assert other.n == 1 and other.status == "out of band" and not other.within(3.0)


def test_recount_experiments_are_experiments_citing_the_entry():
    refs = R.load_references()
    citing = {(c.reference, c.name) for c in R.load_experiment_configs() if c.reference}
    problems = [f"{e.path}: entry '{e.key}': field 'recount_experiments': no experiment {x!r} cites {e.ref}"
                for ref in refs.values() for e in ref.entries.values() for x in e.recount_experiments
                if (e.ref, x) not in citing]
    assert not problems, "\n".join(problems)


SUPERSEDED = VALID + textwrap.indent(textwrap.dedent("""\
      - id: dns_no_loss_old
        text: "DNS kept accuracy in an older design"
        source: abstract
        superseded:
          by: [dns_no_loss]
          why: "the old design could not tell"
        compare:
          metric: top1
          better: {method: dns}
          worse: {method: baseline}
          same: [dataset, model, fidelity]
          margin: -0.2
    """), "  ")


def test_superseded_claim_is_shown_never_judged(tmp_path):
    """Rows that would hold the claim do not: a superseded claim reports 'superseded', with no comparison."""
    ref = R.load_reference(write(tmp_path, SUPERSEDED))
    old, new = ref.claims[1], ref.claims[0]
    rows = [{"paper": "dns", "dataset": "mnist", "model": "lenet5", "fidelity": "reduced", "method": m,
             "experiment_config": f"dns/{m}", "seed": str(s), "top1": str(v + s * 0.01), "_judged": True}
            for m, v in (("dns", 99.0), ("baseline", 98.0)) for s in range(3)]
    assert R.evaluate_claim(new, rows).status == "held"
    res = R.evaluate_claim(old, rows)
    assert res.status == "superseded" and res.comparisons == [] and old.enforce is False
    with pytest.raises(R.ReferenceError, match=r"claim 'dns_no_loss_old' \(#1\): field 'superseded.by': \['nope'\] "
                                               r"is not another claim id of dns.yaml"):
        R.load_reference(write(tmp_path, SUPERSEDED.replace("by: [dns_no_loss]", "by: [nope]")))


def test_claim_arms_named_by_experiment_can_pair():
    """A claim pairs rows that agree on its ``same`` keys; when its arms name experiment files, the files must agree
    on the file-level ones (paper, fidelity, variant), or the claim could never find a pair and would stay
    inconclusive whatever the rows say (a ResBlock NAT arm renamed its variant alone once)."""
    by_name: dict = {}
    for c in R.load_experiment_configs():
        by_name.setdefault(c.name, []).append(c)

    def files(paper, name):   # names repeat across papers: the claim's own paper first
        return [c for c in by_name.get(name, []) if c.paper == paper] or by_name.get(name, [])

    def names(arm):
        v = arm.get("experiment")
        return [] if not v else [v] if isinstance(v, str) else list(v)

    problems, pairs = [], 0
    for ref in R.load_references().values():
        for claim in ref.claims:
            cmp = claim.compare
            if cmp is None or claim.superseded:
                continue
            for b in names(cmp.better):
                for w in names(cmp.worse):
                    fb, fw = files(ref.paper, b), files(ref.paper, w)
                    if not fb or not fw:
                        problems.append(f"{ref.paper}/{claim.id}: no experiment file named {b if not fb else w!r}")
                        continue
                    pairs += 1
                    for key in ("paper", "fidelity", "variant"):
                        if key in cmp.same and getattr(fb[0], key) != getattr(fw[0], key):
                            problems.append(f"{ref.paper}/{claim.id}: {key} {getattr(fb[0], key)!r} "
                                            f"({fb[0].path}) != {getattr(fw[0], key)!r} ({fw[0].path})")
    assert pairs > 50 and not problems, "\n".join(problems)


def test_claims_with_committed_judged_rows_on_both_sides_pair_them():
    """A claim whose two sides both match judged committed rows must compare some of them: a ``same`` key that the
    two sides can never share (``variant`` naming the generator, ``epochs`` counting a search) kept three abstract
    claims at "not tested" whatever the rows said."""
    import glob
    from engine.references.claims import claim_sides, side_has_judged_rows
    from engine.results import read_rows
    rows = [r for f in sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "runs", "*.csv"))) for r in read_rows(f)]
    rows = R.mark_judged(rows)
    problems = []
    for ref in R.load_references().values():
        for claim in ref.claims:
            if claim.compare is None or claim.superseded or claim.metric is None:
                continue
            if all(side_has_judged_rows(s, rows) for s in claim_sides(claim)) and \
                    not R.evaluate_claim(claim, rows).comparisons:
                problems.append(f"{ref.paper}/{claim.id}: same={claim.same}")
    assert not problems, "\n".join(problems)

"""Verdicts: claims judged from the confidence interval of the difference, and rows judged only when they are
what they say (experiment file's exact config, clean commit, current config hash)."""
from __future__ import annotations

import hashlib
import glob
import os
import subprocess
import sys

import pytest

from engine import references as R
from engine.provenance import Invocation
from engine.references import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _claim(margin=0.0, same=("dataset",)):
    claim = R.Claim.model_validate({
        "id": "a_beats_b", "text": "A beats B", "source": "test",
        "compare": {"metric": "top1", "better": {"method": "a"}, "worse": {"method": "b"}, "same": list(same),
                    "margin": margin}})
    claim._paper = "dns"
    return claim


def _rows(a, b, seeds_a=None, seeds_b=None):
    seeds_a = seeds_a or list(range(len(a)))
    seeds_b = seeds_b or list(range(len(b)))
    rows = [{"paper": "dns", "dataset": "mnist", "method": "a", "experiment_config": "dns/a", "seed": str(s),
             "top1": str(v), "_judged": True} for s, v in zip(seeds_a, a)]
    rows += [{"paper": "dns", "dataset": "mnist", "method": "b", "experiment_config": "dns/b", "seed": str(s),
              "top1": str(v), "_judged": True} for s, v in zip(seeds_b, b)]
    return rows


# ---- the statistics (golden values computed by hand) ------------------------------------------------------

@pytest.mark.golden
def test_paired_interval_golden():
    """differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.302653 -> 2 ± 2.484138."""
    iv = stats.paired_interval([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert iv.diff == pytest.approx(2.0)
    assert iv.low == pytest.approx(2.0 - 4.302653 / 3 ** 0.5, abs=1e-5)
    assert iv.high == pytest.approx(2.0 + 4.302653 / 3 ** 0.5, abs=1e-5)
    # 80 % power: (t(0.975, 2) + t(0.80, 2)) * se = (4.302653 + 1.060660) / sqrt(3)
    assert iv.detectable == pytest.approx((4.302653 + 1.060660) / 3 ** 0.5, abs=1e-5)


@pytest.mark.golden
def test_welch_interval_golden():
    """a = 1,2,3 (var 1), b = 4,6,8 (var 4): se = sqrt(1/3 + 4/3), df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 2.9412."""
    iv = stats.welch_interval([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])
    se, df = (5 / 3) ** 0.5, (5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    from scipy.stats import t
    assert iv.diff == pytest.approx(-4.0)
    assert iv.high == pytest.approx(-4.0 + t.ppf(0.975, df) * se, abs=1e-9)
    assert df == pytest.approx(2.9412, abs=1e-4)


# ---- claims: the means-only rule fails these -------------------------------------------------------------

def test_higher_mean_on_noise_is_inconclusive_not_held():
    """A's mean is higher (78.33 vs 78.00), which a means-only rule calls held; the paired differences 5, -8, 4
    put the CI across zero."""
    res = R.evaluate_claim(_claim(), _rows([85.0, 70.0, 80.0], [80.0, 78.0, 76.0]))
    (c,) = res.comparisons
    assert c.interval.diff == pytest.approx(1 / 3)
    assert c.interval.low < 0 < c.interval.high
    assert res.status == "inconclusive"
    assert "detects differences of about" in c.why


def test_two_seeds_are_inconclusive_however_large_the_difference():
    res = R.evaluate_claim(_claim(), _rows([90.0, 91.0], [50.0, 51.0]))
    assert res.status == "inconclusive"
    assert "fewer than 3 seeds" in res.comparisons[0].why


def test_consistent_paired_difference_is_held_and_below_margin_is_not_held():
    rows = _rows([80.5, 75.4, 85.6], [80.0, 75.0, 85.0])      # differences 0.5, 0.4, 0.6 on very different seeds
    assert R.evaluate_claim(_claim(), rows).status == "held"
    # the same arms against a margin of +2 points: the CI [0.25, 0.75] lies below it
    assert R.evaluate_claim(_claim(margin=2.0), rows).status == "not held"
    # unpaired, the seed-to-seed spread (std ~5) swamps the same difference: Welch's CI crosses zero
    unpaired = _rows([80.5, 75.4, 85.6], [80.0, 75.0, 85.0], seeds_a=[0, 1, 2], seeds_b=[3, 4, 5])
    res = R.evaluate_claim(_claim(), unpaired)
    assert res.comparisons[0].interval.test == "Welch t" and res.status == "inconclusive"


def test_recipes_are_separate_arms_and_unjudged_rows_take_no_part():
    rows = _rows([80.5, 75.4, 85.6], [80.0, 75.0, 85.0])
    rows += [{**r, "experiment_config": "dns/a_other", "top1": "10.0"} for r in rows if r["method"] == "a"]
    rows += [{**r, "top1": "99.0", "_judged": False} for r in rows if r["method"] == "b"]
    res = R.evaluate_claim(_claim(), rows)
    assert sorted(c.better.experiment for c in res.comparisons) == ["dns/a", "dns/a_other"]
    assert {c.better.experiment: c.verdict for c in res.comparisons} == {"dns/a": "held", "dns/a_other": "not held"}
    assert res.status == "inconclusive"      # mixed comparisons: no single verdict


# ---- which rows are judged ----------------------------------------------------------------------------

def test_invocation_records_adhoc_for_any_override_but_seed():
    inv = Invocation(experiment="dns/mnist_lenet5", overrides=("experiment=dns/mnist_lenet5", "seed=2",
                                                                 "logger=none", "paths.output_dir=/tmp/x",
                                                                 "trainer.progress=false"))
    assert inv.fidelity("paper") == ("paper", "")
    short = Invocation(experiment="dns/mnist_lenet5", overrides=("experiment=dns/mnist_lenet5",
                                                                   "trainer.max_steps=20"))
    assert short.fidelity("paper") == ("adhoc", "declared paper, but overridden: trainer.max_steps=20")
    assert Invocation().fidelity("reduced")[0] == "adhoc"
    assert Invocation(overrides=("+data.foo=1",)).fidelity("smoke") == ("smoke", "")


def test_mark_judged_reasons():
    name = "backbones/mnist_lenet5"
    current = R.experiment_hashes([name])[name]
    base = {"fidelity": "paper", "git_dirty": "False", "experiment_config": name, "config_hash": current}
    rows = [dict(base), {**base, "git_dirty": "True"}, {**base, "fidelity": "adhoc", "fidelity_note": "why"},
            {**base, "config_hash": "000000000000"}, {**base, "experiment_config": ""},
            {**base, "experiment_config": "backbones/no_such_file"}]
    R.mark_judged(rows)
    assert [r["_judged"] for r in rows] == [True, False, False, False, False, False]
    reasons = [r["_not_judged"] for r in rows[1:]]
    assert "git_dirty" in reasons[0] and reasons[1] == "fidelity adhoc (why)"
    assert reasons[2].startswith("superseded: config 000000000000") and "no experiment file" in reasons[3]
    assert "no longer exists" in reasons[4]


def _tree_digest(path: str) -> str:
    h = hashlib.sha1()
    for p in sorted(glob.glob(os.path.join(path, "*"))):
        with open(p, "rb") as f:
            h.update(p.encode() + f.read())
    return h.hexdigest()


@pytest.mark.skipif(not os.path.exists(os.path.join(os.environ.get("DATA_ROOT", ""), "MNIST")),
                    reason="needs MNIST under DATA_ROOT")
def test_shortened_experiment_run_leaves_tracked_rows_untouched(tmp_path):
    before = _tree_digest(os.path.join(ROOT, "results", "runs"))
    env = {k: v for k, v in os.environ.items() if k != "RESULTS_DIR"}
    out = subprocess.run([sys.executable, "train.py", "experiment=backbones/mnist_lenet5", "trainer.max_steps=3",
                          "trainer.epochs=1", "trainer.limit_eval_batches=1", "logger=none", "trainer.progress=false",
                          f"paths.output_dir={tmp_path}"], cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _tree_digest(os.path.join(ROOT, "results", "runs")) == before
    (row,) = R.load_result_rows(tmp_path / "results")
    assert row["fidelity"] == "adhoc" and row["experiment_config"] == "backbones/mnist_lenet5"
    assert "trainer.max_steps=3" in row["fidelity_note"]


def test_claim_with_equal_guard_compares_only_at_equal_compression():
    """A no-splice ablation that pruned 12x harder has far lower accuracy: without the guard that 'holds'
    trivially; with ``equal: {metric: compression_ratio}`` it is not compared."""
    claim = R.Claim.model_validate({
        "id": "splice", "text": "splicing not worse", "source": "test",
        "compare": {"metric": "top1", "better": {"method": "a"}, "worse": {"method": "b"}, "same": ["dataset"],
                    "margin": 0.0, "equal": {"metric": "compression_ratio", "rel_tol": 0.1}}})
    claim._paper = "dns"
    rows = _rows([99.0, 99.1, 98.9], [88.0, 88.3, 87.9])
    for r in rows:
        r["extra"] = {"compression_ratio": 108.0 if r["method"] == "a" else 1347.0}
    res = R.evaluate_claim(claim, rows)
    assert res.status == "inconclusive" and "differ in compression_ratio" in res.comparisons[0].why
    for r in rows:
        r["extra"] = {"compression_ratio": 108.0 if r["method"] == "a" else 104.0}
    assert R.evaluate_claim(claim, rows).status == "held"


def test_claim_with_acts_guard_is_inconclusive_when_the_method_did_not_act():
    """IR2Net's erased pass with a mask that keeps every pixel is the first pass again: a difference between the
    arms (here a seed-consistent one that would hold) says nothing about restriction."""
    claim = R.Claim.model_validate({
        "id": "restriction", "text": "restriction adds", "source": "test",
        "compare": {"metric": "top1", "better": {"method": "a"}, "worse": {"method": "b"}, "same": ["dataset"],
                    "margin": 0.0, "acts": {"metric": "extra.restriction_kept_fraction", "below": 0.999,
                                            "why": "a mask that keeps every pixel erases nothing"}}})
    claim._paper = "dns"
    rows = _rows([31.0, 30.1, 30.9], [30.0, 29.3, 30.1])
    for r in rows:
        r["extra"] = {"restriction_kept_fraction": 1.0} if r["method"] == "a" else {}
    res = R.evaluate_claim(claim, rows)
    assert res.status == "inconclusive" and "did not act in dns/a" in res.comparisons[0].why
    assert "restriction_kept_fraction = 1" in res.comparisons[0].why
    for r in rows:
        if r["method"] == "a":
            r["extra"] = {"restriction_kept_fraction": 0.93}
    assert R.evaluate_claim(claim, rows).status == "held"
    with pytest.raises(ValueError, match="exactly one of 'above' and 'below'"):
        R.ActsOn.model_validate({"metric": "x", "above": 1, "below": 2, "why": "w"})


def test_claim_with_a_list_of_acts_guards_needs_every_one():
    """NAT's policy claim: the policy moved (policy_shift) and the super-net can rank cells (the input cell's
    shared-weight accuracy above chance); a moved policy trained on a chance-level reward still tests nothing."""
    claim = R.Claim.model_validate({
        "id": "policy", "text": "policy beats random", "source": "test",
        "compare": {"metric": "top1", "better": {"method": "a"}, "worse": {"method": "b"}, "same": ["dataset"],
                    "margin": 0.0, "acts": [
                        {"metric": "extra.policy_shift", "above": 0.01, "why": "the policy did not move"},
                        {"metric": "extra.derive_input_acc", "above": 0.2, "why": "the super-net ranks at chance"}]}})
    claim._paper = "dns"
    rows = _rows([31.0, 30.1, 30.9], [30.0, 29.3, 30.1])
    for r in rows:
        r["extra"] = {"policy_shift": 0.5, "derive_input_acc": 0.09} if r["method"] == "a" else {}
    res = R.evaluate_claim(claim, rows)
    assert res.status == "inconclusive" and "derive_input_acc = 0.09" in res.comparisons[0].why
    assert "super-net ranks at chance" in res.comparisons[0].why
    for r in rows:
        if r["method"] == "a":
            r["extra"] = {"policy_shift": 0.0, "derive_input_acc": 0.4}
    res = R.evaluate_claim(claim, rows)
    assert res.status == "inconclusive" and "policy_shift = 0" in res.comparisons[0].why
    for r in rows:
        if r["method"] == "a":
            r["extra"] = {"policy_shift": 0.5, "derive_input_acc": 0.4}
    assert R.evaluate_claim(claim, rows).status == "held"
    with pytest.raises(ValueError, match="exactly one of 'above' and 'below'"):
        R.Claim.model_validate({"id": "x", "text": "t", "source": "s", "compare": {
            "metric": "top1", "better": {"method": "a"}, "worse": {"method": "b"}, "same": [], "margin": 0.0,
            "acts": [{"metric": "m", "above": 1, "below": 2, "why": "w"}]}})

"""Reproduction report: ``results/reports/<paper>.md``, Pareto plots and ``index.md``, from CSVs + YAML only.

``python evaluate.py report`` / ``make report`` call ``main()``. Inputs: ``results/reference/*.yaml``
(reported numbers, claims), ``results/runs/*.csv`` (measured rows), ``conf/experiment/**.yaml`` and
``conf/method/*.yaml`` (which cells have a config, which methods are pending). No model is built and
nothing is trained: the report is a pure function of those files.

Status of a reference cell (entry x metric):
- ``reproduced``: paper-fidelity rows, mean within the band, verified reference;
- ``in band``: the same on an unverified reference (labelled, not called reproduced);
- ``out of band`` / ``known gap`` (out of band with the reference's stated reason);
- ``reduced (judged by claims)``: only reduced-budget rows exist (never compared with the paper's number);
- ``not run`` / ``not runnable here`` (the entry's ``runnable`` reason) / ``pending method``
  (``conf/method/<name>.yaml`` says ``implemented: false``) / ``no config``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict

from engine import references as R

ROOT = R.ROOT
EXACT_FROM_MODEL = ("params", "flops", "macs", "bops", "ops", "size_bits")
ORDER = ("reproduced", "in band", "out of band", "known gap", "reduced", "not run", "not runnable here",
         "pending method", "no config")


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "—"
    if float(v).is_integer() and abs(v) >= 1000:
        return str(int(v))
    if abs(v) >= 1e5:
        return f"{v:.4g}"
    return f"{v:.{digits}f}"


def _md_escape(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _load_rows(results_dir: str, refs: dict, errors: list[str]) -> list[dict]:
    """Rows of every CSV; a file with a bad row is reported in ``errors`` and its valid rows are kept."""
    import glob
    from engine.results import ResultsError, read_rows
    rows = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.csv"))):
        try:
            file_rows = read_rows(path)
        except ResultsError as e:
            errors.append(str(e))
            continue
        for line, row in enumerate(file_rows, start=2):
            row["_file"], row["_line"] = path, line
            if row.get("reference"):
                try:
                    R.lookup(refs, row["reference"])
                except R.ReferenceError as e:
                    errors.append(f"{path}, line {line}, run {row.get('run_id')!r}: field 'reference': {e}")
                    continue
            rows.append(row)
    return rows


def _entry_line(e: R.Entry, m: R.Metric, j: R.Judgement, status: str, experiment: str | None) -> str:
    ours = "—" if not j.values else (f"{_fmt(j.mean)} ± {_fmt(j.std)}" if j.std is not None else _fmt(j.mean))
    delta = "—" if j.delta is None else f"{j.delta:+.2f}"
    band = "—" if j.band is None else _fmt(j.band)
    seeds = str(j.n) if j.values else "0"
    fid = j.fidelity if j.values else "—"
    return (f"| {e.key} | {e.dataset} | {e.model} | {e.method} | {_md_escape(e.variant or '')} | "
            f"{m.name} ({m.unit}) | {_fmt(m.value)} | {ours} | {delta} | {band} | "
            f"{_md_escape(status)} | {fid} | {seeds} | {'yes' if e.verified else 'no (labelled)'} | "
            f"{_md_escape(experiment or '')} |")


def cell_status(entry: R.Entry, judgement: R.Judgement | None, configs: list[R.ExperimentConfig],
                conf_dir: str) -> str:
    """Status words of one entry x metric (see module docstring)."""
    if judgement is not None and judgement.values:
        s = judgement.status
        return "reduced (judged by claims)" if s.endswith("(judged by claims)") else s
    words = []
    methods = {c.method for c in configs} or {entry.method}
    if any(R.method_status(m, conf_dir) in ("pending", "missing") for m in methods):
        words.append("pending method")
    if entry.not_runnable_reason:
        words.append("not runnable here")
    if not configs and not entry.not_runnable_reason:
        words.append("no config")
    return "; ".join(words) if words else "not run"


def entry_status(cells: list[str]) -> str:
    """One word per entry for the index: the worst measured status, else the first not-run reason."""
    measured = [c for c in cells if c in ("reproduced", "in band", "out of band", "known gap")]
    if measured:
        for word in ("out of band", "known gap", "in band", "reproduced"):
            if word in measured:
                return word
    if any(c.startswith("reduced") for c in cells):
        return "reduced"
    for word in ("pending method", "not runnable here", "no config", "not run"):
        if any(word in c for c in cells):
            return word
    return "not run"


def pareto_plots(rows: list[dict], out_dir: str) -> dict[str, str]:
    """One accuracy-vs-cost PNG per dataset over paper/reduced rows, points = mean over seeds per
    (paper, method, model, variant, fidelity), the Pareto front drawn; returns dataset -> file name."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if row.get("fidelity") not in ("paper", "reduced"):
            continue
        acc = R.row_value(row, "top1")
        cost = R.row_value(row, "ops") or R.row_value(row, "macs")
        if acc is None or not cost:
            continue
        key = (row.get("dataset", "?"), row.get("paper", "?"), row.get("method", "?"), row.get("model", "?"),
               row.get("variant") or "", row.get("fidelity"))
        groups[key].append((cost, acc))
    by_dataset: dict[str, list] = defaultdict(list)
    for key, pts in groups.items():
        cost = statistics.fmean(p[0] for p in pts)
        acc = statistics.fmean(p[1] for p in pts)
        by_dataset[key[0]].append((cost, acc, key, len(pts)))
    out = {}
    for dataset, pts in sorted(by_dataset.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        methods = sorted({p[2][2] for p in pts})
        cmap = plt.get_cmap("tab10")
        for i, m in enumerate(methods):
            for fid, marker in (("paper", "o"), ("reduced", "^")):
                sel = [p for p in pts if p[2][2] == m and p[2][5] == fid]
                if sel:
                    ax.scatter([p[0] for p in sel], [p[1] for p in sel], color=cmap(i % 10), marker=marker,
                               label=f"{m} ({fid})", s=36)
                    for p in sel:
                        ax.annotate(f"{p[2][3]} {p[2][4]}".strip(), (p[0], p[1]), fontsize=6,
                                    xytext=(3, 3), textcoords="offset points")
        front, best = [], -float("inf")
        for p in sorted(pts, key=lambda p: (p[0], -p[1])):
            if p[1] > best:
                front.append(p)
                best = p[1]
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("cost: OPs per image (FLOPs + BOPs/64, suite counter)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{dataset}: accuracy vs cost (mean over seeds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        name = f"pareto_{dataset}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        out[dataset] = name
    return out


def paper_report(ref: R.PaperReference, rows: list[dict], configs: list[R.ExperimentConfig], conf_dir: str,
                 plots: dict[str, str]) -> tuple[str, dict]:
    """Markdown of one paper and its summary (status counts, claims)."""
    by_ref = defaultdict(list)
    for c in configs:
        if c.reference:
            by_ref[c.reference].append(c)
    paper_rows = [r for r in rows if r.get("reference", "").startswith(ref.paper + ":")]
    conv = ref.conventions
    lines = [f"# {ref.paper}: {ref.title}", "",
             f"arXiv {ref.arxiv or '—'} · {ref.venue or '—'} · code: {ref.code or 'none public'} · "
             f"reference file: `results/reference/{ref.paper}.yaml`", "",
             f"Counting convention: FLOPs = {conv.flops}, params = {conv.params}, counter = {conv.counter}, "
             f"BN counted = {conv.bn_counted}, input = {list(conv.input_res) if conv.input_res else '—'}.", "",
             "_Generated by `python evaluate.py report` from `results/runs/*.csv` and the YAML files; do not edit._",
             ""]
    counts: dict[str, int] = defaultdict(int)
    tables: dict[str, list[R.Entry]] = defaultdict(list)
    for e in ref.entries.values():
        tables[e.table].append(e)
    exact_lines = []
    for table, entries in tables.items():
        lines += [f"## {table}", "",
                  "| entry | dataset | model | method | variant | metric | reported | ours | Δ | band ± | status | "
                  "fidelity | seeds | verified | rows from |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in entries:
            cfgs = by_ref.get(e.ref, [])
            cells = []
            for m in e.metrics.values():
                if m.exact:
                    who = ("tests/test_reference_complexity.py" if m.name in EXACT_FROM_MODEL
                           and not isinstance(e.architecture, str) else "the method's own tests")
                    exact_lines.append(f"| {e.key} | {e.model} | {m.name} | {_fmt(m.value)} {m.unit} | {who} |")
                    continue
                # one line per recipe (experiment) whose rows cite the entry: recipes are not pooled
                fid = "paper" if R.judged_experiments(e, rows, "paper") else "reduced"
                for exp in R.judged_experiments(e, rows, fid) or [None]:
                    j = R.judge_metric(e, m, rows, fid, conv, exp)
                    status = (cell_status(e, j, cfgs, conf_dir) if m.band is not None else
                              "informational (not judged)" if m.value is not None else "no reported value")
                    if status == "known gap":
                        status = f"known gap: {e.known_gap}"
                    if m.band is not None:
                        cells.append(status.split(":")[0] if status.startswith("known gap") else status)
                    lines.append(_entry_line(e, m, j, status, exp))
            if not cells:   # only exact complexity metrics
                cells = [cell_status(e, None, cfgs, conf_dir)]
            counts[entry_status(cells)] += 1
        lines.append("")
    if exact_lines:
        lines += ["## Exact complexity entries", "",
                  "Recomputed from the architecture: params/FLOPs/MACs/BOPs/OPs/size under the paper's convention by "
                  "`tests/test_reference_complexity.py` (held within the paper's rounding, or 1% with both numbers "
                  "printed); method-specific counts by the method's own tests.", "",
                  "| entry | model | metric | reported | recomputed by |", "|---|---|---|---|---|"]
        lines += exact_lines + [""]
    if not ref.entries:
        lines += ["## Entries", "", "No reported number is available for this paper (see the reference file's notes); "
                  "only claims are encoded.", ""]
    not_runnable = sorted({e.not_runnable_reason for e in ref.entries.values() if e.not_runnable_reason})
    if not_runnable:
        lines += ["Not runnable here because: " + "; ".join(f"“{r}”" for r in not_runnable), ""]
    # claims
    lines += ["## Claims", ""]
    claim_summary = {"held": 0, "tested": 0}
    if not ref.claims:
        lines += ["No claims encoded.", ""]
    for c in ref.claims:
        res = R.evaluate_claim(c, rows, conv)
        if res.groups:
            claim_summary["tested"] += 1
            claim_summary["held"] += res.status == "held"
        label = "" if c.verified is not False else " (unverified source)"
        how = (f"metric {c.metric}, margin {c.margin:+g}" if c.metric else f"checked: {_md_escape(c.notes)}")
        lines.append(f"- **{c.id}** — {res.status}{label}. {_md_escape(c.text)} [{_md_escape(c.source)}; {how}]")
        for ev in res.evidence():
            enforced = " (enforced by tests/test_repro.py)" if res.enforced(res.groups[0]) else ""
            lines.append(f"  - {ev}{enforced}")
        if not res.groups and c.metric:
            lines.append("  - no committed paper/reduced rows on both sides of the comparison")
    lines.append("")
    datasets = sorted({r.get("dataset") for r in paper_rows if r.get("dataset") in plots})
    if datasets:
        lines += ["## Accuracy vs cost", ""] + [f"![{d}]({plots[d]})" for d in datasets] + [""]
    if ref.notes:
        lines += ["## Notes", "", str(ref.notes).strip(), ""]
    summary = {"entries": len(ref.entries), "counts": dict(counts), "claims": claim_summary,
               "rows_paper": sum(r.get("fidelity") == "paper" for r in paper_rows),
               "rows_reduced": sum(r.get("fidelity") == "reduced" for r in paper_rows),
               "configs": sum(1 for c in configs if c.paper == ref.paper)}
    return "\n".join(lines), summary


def build(results_dir: str, reference_dir: str, conf_dir: str, out_dir: str) -> list[str]:
    """Write every report; returns the list of problems found (invalid files, unknown references)."""
    os.makedirs(out_dir, exist_ok=True)
    errors: list[str] = []
    refs: dict[str, R.PaperReference] = {}
    invalid: dict[str, str] = {}
    for paper, path in R.reference_files(reference_dir).items():
        try:
            if paper not in R.PAPERS:
                raise R.ReferenceError(f"{path}: field 'paper': unknown paper {paper!r}; allowed: {list(R.PAPERS)}")
            refs[paper] = R.load_reference(path, check_models=False)   # model names: checked by the tests
        except R.ReferenceError as e:
            invalid[paper] = str(e)
            errors.append(str(e))
    rows = _load_rows(results_dir, refs, errors)
    try:
        configs = R.load_experiment_configs(conf_dir)
    except R.ReferenceError as e:
        errors.append(str(e))
        configs = []
    plots = pareto_plots(rows, out_dir)
    index = ["# Reproduction status", "",
             "_Generated by `python evaluate.py report` from `results/runs/*.csv` and `results/reference/*.yaml`; "
             "do not edit._", "",
             "Statuses count reference entries: reproduced (paper fidelity, in band, verified reference) · in band "
             "(unverified reference) · out of band · known gap · reduced (reduced-budget rows, judged by claims) · "
             "not run · not runnable here · pending method · no config.", "",
             "| paper | title | entries | configs | rows paper/reduced | status | claims held/tested | report |",
             "|---|---|---|---|---|---|---|---|"]
    for paper in R.PAPERS:
        if paper in invalid:
            index.append(f"| {paper} | — | — | — | — | **invalid reference file**: {_md_escape(invalid[paper])} | — | — |")
            continue
        if paper not in refs:
            index.append(f"| {paper} | — | — | — | — | **missing reference file** "
                         f"(`results/reference/{paper}.yaml`) | — | — |")
            continue
        text, s = paper_report(refs[paper], rows, configs, conf_dir, plots)
        with open(os.path.join(out_dir, f"{paper}.md"), "w") as f:
            f.write(text + "\n")
        status = ", ".join(f"{s['counts'][k]} {k}" for k in ORDER if s["counts"].get(k)) or "no entries (claims only)"
        index.append(f"| {paper} | {_md_escape(refs[paper].title)} | {s['entries']} | {s['configs']} | "
                     f"{s['rows_paper']}/{s['rows_reduced']} | {status} | "
                     f"{s['claims']['held']}/{s['claims']['tested']} of {len(refs[paper].claims)} | "
                     f"[{paper}.md]({paper}.md) |")
    if plots:
        index += ["", "## Accuracy vs cost (all papers, paper and reduced rows)", ""]
        index += [f"- {d}: ![{d}]({name})" for d, name in plots.items()]
    if errors:
        index += ["", "## Problems", ""] + [f"- {_md_escape(e)}" for e in errors]
    with open(os.path.join(out_dir, "index.md"), "w") as f:
        f.write("\n".join(index) + "\n")
    return errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="evaluate.py report", description=__doc__.split("\n")[0])
    p.add_argument("--results-dir", default=str(ROOT / "results" / "runs"))
    p.add_argument("--reference-dir", default=str(ROOT / "results" / "reference"))
    p.add_argument("--conf-dir", default=str(ROOT / "conf"))
    p.add_argument("--out", default=str(ROOT / "results" / "reports"))
    args = p.parse_args(argv)
    errors = build(args.results_dir, args.reference_dir, args.conf_dir, args.out)
    print(f"report written to {args.out}/index.md")
    for e in errors:
        print(f"problem: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

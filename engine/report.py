"""Reproduction report: ``results/reports/<paper>.md``, Pareto plots and ``index.md``, from CSVs + YAML only.

``python evaluate.py report`` / ``make report`` call ``main()``. Inputs: ``results/reference/*.yaml``
(reported numbers, claims), ``results/runs/*.csv`` (measured rows), ``conf/experiment/**.yaml`` and
``conf/method/*.yaml`` (which cells have a config, which methods are pending, each experiment's config hash).
No model is built and nothing is trained: the report is a function of those files.

Only judged rows count (``engine.references.mark_judged``: paper/reduced fidelity, clean commit, the exact
config of an experiment file that still exists); every other row is listed under "Rows not judged" with its
reason. Each paper page opens with one line: what our own training reproduced at paper fidelity, what was
recounted (released weights evaluated here, exact complexity), the claims' verdicts, what cannot run here.

Status of a reference cell (entry × metric × recipe):
- ``reproduced``: paper-fidelity rows of our own training, mean within the band, verified reference;
- ``in band``: the same on an unverified reference (labelled, not called reproduced);
- ``recounted``: within the band, but the rows evaluate the authors' released weights (``evidence: recount``);
- ``out of band`` / ``known gap`` (out of band on a metric the entry's ``known_gap`` names; its reason is
  printed once per entry under the table);
- ``reduced (judged by claims)``: only reduced-budget rows exist (never compared with the paper's number);
- ``informational``: a number without band; ``not run`` / ``not runnable here`` / ``pending method`` /
  ``no config``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict

import yaml

from engine import references as R

ROOT = R.ROOT
EXACT_FROM_MODEL = ("params", "flops", "macs", "bops", "ops", "size_bits")
#: method families that are not compression (never on an accuracy-vs-cost plot)
NOT_COMPRESSION = ("analysis", "baseline")
#: papers whose rows are infrastructure (pretrained backbones, dense starting points), never plotted
NOT_PLOTTED_PAPERS = ("backbones",)
#: variants that are a compression method's uncompressed control (e.g. sketch's ``variant: fp``), never plotted
FP_CONTROL_VARIANTS = ("fp", "fp32")
IN_BAND = ("reproduced", "in band", "recounted")


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


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _row_id(row: dict) -> str:
    return row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line', '?')}"


def _recipe(row: dict) -> str:
    return str(row.get("experiment_config") or row.get("experiment") or "")


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


def method_families(conf_dir: str) -> dict[str, str]:
    """method name -> ``family`` of ``conf/method/<name>.yaml``."""
    out = {}
    base = os.path.join(conf_dir, "method")
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if name.endswith(".yaml"):
            with open(os.path.join(base, name)) as f:
                out[name[:-5]] = str((yaml.safe_load(f) or {}).get("family") or "")
    return out


# ---- statuses --------------------------------------------------------------------------------------------

def cell_status(entry: R.Entry, judgement: R.Judgement | None, configs: list[R.ExperimentConfig], conf_dir: str,
                experiment: str | None = None) -> str:
    """Status words of one entry × metric × recipe (see module docstring)."""
    if judgement is not None and judgement.values:
        s = judgement.status
        if s.endswith("(judged by claims)"):
            return "reduced (judged by claims)"
        if s in ("reproduced", "in band") and entry.evidence_of(experiment) == "recount":
            return "recounted"
        return s
    words = []
    methods = {c.method for c in configs} or {entry.method}
    if any(R.method_status(m, conf_dir) in ("pending", "missing") for m in methods):
        words.append("pending method")
    if entry.not_runnable_reason:
        words.append("not runnable here")
    if not configs and not entry.not_runnable_reason:
        words.append("no config")
    return "; ".join(words) if words else "not run"


def _entry_outcome(recipes: dict[str, list[str]]) -> tuple[str, str | None]:
    """(outcome, recipe) of one entry from its recipes' banded statuses: ``reproduced`` / ``in band`` /
    ``recounted`` when some recipe is within the band on every banded metric it measures, else the worst
    measured word (``out of band`` before ``known gap``), else ``reduced`` / the first not-run reason."""
    passing: dict[str, str] = {}          # word -> the first recipe that earns it
    for recipe, cells in recipes.items():
        measured = {c for c in cells if c in IN_BAND or c in ("out of band", "known gap")}
        if measured and measured <= set(IN_BAND):
            word = "recounted" if measured == {"recounted"} else ("in band" if "in band" in measured else "reproduced")
            passing.setdefault(word, recipe)
    for word in IN_BAND:
        if word in passing:
            return word, passing[word]
    cells = [c for cs in recipes.values() for c in cs]
    for word in ("out of band", "known gap"):
        if word in cells:
            return word, None
    if any(c.startswith("reduced") for c in cells):
        return "reduced", None
    for word in ("pending method", "not runnable here", "no config", "informational", "not run"):
        if any(word in c for c in cells):
            return word, None
    return "not run", None


# ---- plots -----------------------------------------------------------------------------------------------

#: 24 colours that read on white (filled and hollow markers alike), paired one to one with 24 markers (regular
#: polygons and stars as (sides, style, angle) where matplotlib's letters run out)
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
            "#bcbd22", "#000000", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
            "#31a354", "#756bb1", "#636363", "#d6616b", "#ce6dbd", "#00a3a3")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H", (4, 1, 0), (6, 1, 0),
            (8, 1, 0), (7, 0, 0), (3, 1, 0), (12, 1, 0), (4, 1, 45), (5, 1, 180), (9, 0, 0))


def method_styles(families: dict[str, str]) -> dict[str, tuple[str, str]]:
    """A fixed method -> (colour, marker) map over every compression method of ``conf/method`` (sorted by
    name), so a method looks the same on every plot and no two methods share a colour or a marker pairing."""
    names = sorted(m for m, fam in families.items() if fam not in NOT_COMPRESSION)
    return {m: _style(i) for i, m in enumerate(names)}


def _style(i: int) -> tuple[str, object]:
    """The i-th (colour, marker); beyond 24 methods colours repeat with another marker (24 x 24 pairs)."""
    return _COLOURS[i % len(_COLOURS)], _MARKERS[(i + i // len(_COLOURS)) % len(_MARKERS)]


def plot_points(rows: list[dict], families: dict[str, str]) -> dict[str, list[dict]]:
    """dataset -> points (mean over seeds of one recipe: paper, method, model, variant, experiment, fidelity)
    of judged rows of compression methods only: a method whose ``conf/method`` family is a compression family,
    in a paper that is not itself an analysis method (xgradcam, unit_ablation); no baseline or backbone rows and no
    uncompressed control of a compression method (``FP_CONTROL_VARIANTS``)."""
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        method = row.get("method") or ""
        if not row.get("_judged") or row.get("fidelity") not in ("paper", "reduced"):
            continue
        if families.get(method, "analysis") in NOT_COMPRESSION or row.get("paper") in NOT_PLOTTED_PAPERS \
                or families.get(str(row.get("paper")), "") in NOT_COMPRESSION:
            continue    # analysis papers (xgradcam, unit_ablation) and methods without a compression family
        if str(row.get("variant") or "") in FP_CONTROL_VARIANTS:
            continue    # e.g. sketch's FP control: the method's evaluation path with nothing compressed
        acc = R.row_value(row, "top1")
        cost = R.row_value(row, "ops") or R.row_value(row, "macs")
        if acc is None or not cost:
            continue
        key = (row.get("dataset") or "?", row.get("paper") or "?", method, row.get("model") or "?",
               row.get("variant") or "", _recipe(row), row.get("fidelity"))
        groups[key].append((cost, acc))
    out: dict[str, list[dict]] = defaultdict(list)
    for key, pts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][3], kv[0][5], kv[0][6])):
        out[key[0]].append({"cost": statistics.fmean(p[0] for p in pts), "acc": statistics.fmean(p[1] for p in pts),
                            "paper": key[1], "method": key[2], "model": key[3], "variant": key[4],
                            "experiment": key[5], "fidelity": key[6], "n": len(pts),
                            "label": str(len(out[key[0]]) + 1)})
    return dict(out)


def points_table(pts: list[dict]) -> list[str]:
    """The key of a plot: what each numbered point is."""
    lines = ["| # | method | paper | model | variant | experiment | fidelity | seeds | top-1 % | cost |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in pts:
        lines.append(f"| {p['label']} | {p['method']} | {p['paper']} | {p['model']} | {_md_escape(p['variant'])} | "
                     f"{_md_escape(p['experiment'])} | {p['fidelity']} | {p['n']} | {p['acc']:.2f} | "
                     f"{p['cost']:.4g} |")
    return lines


def _place_labels(ax, fig, pts: list[dict], labels: list[str]) -> None:
    """Short labels next to their points without overlapping each other or the markers: for each point the
    first free spot among offsets at growing distance (a small adjustText)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    markers, placed, clusters = [], [], []       # points drawn on top of each other share one label: "4,5,7"
    for p, text in zip(pts, labels):
        x, y = ax.transData.transform((p["cost"], p["acc"]))
        markers.append((x - 6, y - 6, x + 6, y + 6))
        near = next((c for c in clusters if abs(c[1] - x) < 7 and abs(c[2] - y) < 7), None)
        if near:
            near[3].append(text)
        else:
            clusters.append((p, x, y, [text]))
    axes_box = ax.get_window_extent(renderer)
    for p, text in ((c[0], ",".join(c[3])) for c in clusters):
        best = None        # (overlaps, rank, box, dist, dx, dy): the first free spot, else the least crowded
        rank = 0
        for dist in (6, 12, 20, 30, 42, 56, 72):
            for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)):
                ann = _label(ax, p, text, dist, dx, dy)
                bb = ann.get_window_extent(renderer)
                ann.remove()
                box = (bb.x0, bb.y0, bb.x1, bb.y1)
                if not (box[0] >= axes_box.x0 and box[2] <= axes_box.x1 and box[1] >= axes_box.y0
                        and box[3] <= axes_box.y1):
                    continue
                hits = 10 * _overlaps(box, placed) + _overlaps(box, markers)   # never on another label if avoidable
                rank += 1
                if best is None or (hits, rank) < best[:2]:
                    best = (hits, rank, box, dist, dx, dy)
                if hits == 0:
                    break
            if best is not None and best[0] == 0:
                break
        if best is not None:
            _label(ax, p, text, *best[3:])
            placed.append(best[2])


def _overlaps(box: tuple, boxes: list[tuple]) -> int:
    return sum(not (box[2] < t[0] or box[0] > t[2] or box[3] < t[1] or box[1] > t[3]) for t in boxes)


def _label(ax, p: dict, text: str, dist: float, dx: int, dy: int):
    return ax.annotate(text, (p["cost"], p["acc"]), xytext=(dx * dist, dy * dist), textcoords="offset points",
                       fontsize=8, ha="left" if dx > 0 else ("right" if dx < 0 else "center"),
                       va="bottom" if dy > 0 else ("top" if dy < 0 else "center"),
                       arrowprops=dict(arrowstyle="-", lw=0.5, color="0.45", shrinkA=1, shrinkB=4))


def pareto_plots(rows: list[dict], out_dir: str, families: dict[str, str]) -> dict[str, tuple[str, list[dict]]]:
    """One accuracy-vs-cost PNG per dataset (see ``plot_points``); returns dataset -> (file name, points)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    styles = method_styles(families)
    extra = sorted({p["method"] for pts in plot_points(rows, families).values() for p in pts} - set(styles))
    for i, m in enumerate(extra, start=len(styles)):      # a method without conf/method file: still distinct
        styles[m] = _style(i)
    out = {}
    for dataset, pts in sorted(plot_points(rows, families).items()):
        fig, ax = plt.subplots(figsize=(9, 5.5))
        methods = sorted({p["method"] for p in pts})
        for m in methods:
            colour, marker = styles[m]
            for fid in ("paper", "reduced"):
                sel = [p for p in pts if p["method"] == m and p["fidelity"] == fid]
                if sel:
                    ax.scatter([p["cost"] for p in sel], [p["acc"] for p in sel], s=60, marker=marker, zorder=3,
                               facecolors=colour if fid == "paper" else "white", edgecolors=colour, linewidths=1.6)
        front, best = [], -float("inf")
        for p in sorted(pts, key=lambda p: (p["cost"], -p["acc"])):
            if p["acc"] > best:
                front.append(p)
                best = p["acc"]
        if len(front) > 1:
            ax.plot([p["cost"] for p in front], [p["acc"] for p in front], color="0.6", ls="--", lw=0.8, zorder=1)
        ax.set_xscale("log")
        xlo, xhi = min(p["cost"] for p in pts) / 1.4, max(p["cost"] for p in pts) * 1.6   # room for labels
        ax.set_xlim(xlo, xhi)
        # ticks that fill the span without crowding: every digit within a factor 3, 1-1.5-2-3-5-7 within 20
        subs = tuple(range(1, 10)) if xhi / xlo < 3 else (1, 1.5, 2, 3, 5, 7) if xhi / xlo < 20 else (1, 2, 5)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("cost: OPs per image (FLOPs + BOPs/64, suite counter; MACs where no OPs)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{dataset}: accuracy vs cost, judged rows of compression methods\n(mean over seeds; "
                     f"numbers: the table under the plot)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        lo, hi = min(p["acc"] for p in pts), max(p["acc"] for p in pts)
        pad = max(0.8, 0.15 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)        # room for labels above the best and below the worst points
        handles = [Line2D([], [], ls="", marker=styles[m][1], markersize=8, markerfacecolor=styles[m][0],
                          markeredgecolor=styles[m][0], label=m) for m in methods]
        handles += [Line2D([], [], ls="", marker="o", markersize=8, markerfacecolor="0.3", markeredgecolor="0.3",
                           label="filled: paper fidelity"),
                    Line2D([], [], ls="", marker="o", markersize=8, markerfacecolor="white", markeredgecolor="0.3",
                           label="hollow: reduced budget"),
                    Line2D([], [], color="0.6", ls="--", lw=0.8, label="Pareto front")]
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  frameon=False)
        fig.tight_layout()
        _place_labels(ax, fig, pts, [p["label"] for p in pts])
        name = f"pareto_{dataset}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=120)
        plt.close(fig)
        out[dataset] = (name, pts)
    return out


# ---- one paper -------------------------------------------------------------------------------------------

def _entry_line(e: R.Entry, m: R.Metric, j: R.Judgement, status: str, experiment: str | None) -> str:
    ours = "—" if not j.values else _fmt(j.mean)
    spread = "—" if j.std is None else _fmt(j.std)
    delta = "—" if j.delta is None else f"{j.delta:+.2f}"
    band = "—" if j.band is None else _fmt(j.band)
    seeds = str(j.n) if j.values else "0"
    fid = j.fidelity if j.values else "—"
    return (f"| {e.key} | {e.model} | {e.method} | {_md_escape(e.variant or '')} | "
            f"{m.name} ({m.unit}) | {_fmt(m.value)} | {ours} | {spread} | {delta} | {band} | "
            f"{_md_escape(status)} | {fid} | {seeds} | {'yes' if e.verified else 'no'} | "
            f"{e.evidence_of(experiment)} | {_md_escape(experiment or '')} |")


def _names(keys: list[str], most: int = 6) -> str:
    shown = ", ".join(keys[:most])
    return shown + (f", … (+{len(keys) - most})" if len(keys) > most else "")


def _glance(paper: R.PaperReference, outcomes: dict[str, tuple[str, str | None]], exact: list[str],
            claims: list, not_judged: int) -> str:
    """The page's opening line."""
    by = defaultdict(list)
    for key, (word, _) in outcomes.items():
        by[word].append(key)
    own, unverified, recounted = by["reproduced"], by["in band"], by["recounted"]
    text = f"**Reproduced by our own training (paper fidelity):** {_plural(len(own), 'entry', 'entries')}"
    text += f" ({_names(own)})" if own else ""
    if unverified:
        text += f"; in band of an unverified reference: {len(unverified)} ({_names(unverified)})"
    parts = [text]
    text = f"**recounted** (released weights, complexity): {_plural(len(recounted), 'entry', 'entries')}"
    text += f" ({_names(recounted)})" if recounted else ""
    if exact:
        text += f" + {_plural(len(exact), 'exact complexity number')} recomputed by the tests"
    parts.append(text)
    words: dict[str, int] = defaultdict(int)
    fids: set[str] = set()
    for res in claims:
        words[res.status] += 1
        fids |= {c.fidelity or "mixed" for c in res.comparisons}
    fid = f" at {'/'.join(sorted(fids))} fidelity" if fids else ""
    rest = [f"{words[w]} {w}" for w in ("not tested", "qualitative", "superseded") if words[w]]
    parts.append(f"**claims**{fid}: {words['held']} held, {words['not held']} not held, "
                 f"{words['inconclusive']} inconclusive" + (f" ({', '.join(rest)})" if rest else ""))
    bad = by["out of band"] + by["known gap"]
    if bad:
        parts.append(f"**out of band:** {_plural(len(bad), 'entry', 'entries')} ({len(by['known gap'])} with a "
                     f"stated known gap)")
    not_runnable = sum(1 for e in paper.entries.values() if e.not_runnable_reason)
    parts.append(f"**not runnable here:** {_plural(not_runnable, 'entry', 'entries')}")
    if not_judged:
        parts.append(f"{_plural(not_judged, 'row')} not judged")
    return " · ".join(parts) + "."


def paper_report(ref: R.PaperReference, rows: list[dict], configs: list[R.ExperimentConfig], conf_dir: str,
                 plots: dict[str, tuple[str, list[dict]]]) -> tuple[str, dict]:
    """Markdown of one paper and its summary (the opening line, counts)."""
    by_ref = defaultdict(list)
    for c in configs:
        if c.reference:
            by_ref[c.reference].append(c)
    paper_rows = [r for r in rows if r.get("paper") == ref.paper or
                  str(r.get("reference") or "").startswith(ref.paper + ":")]
    conv = ref.conventions
    body: list[str] = []
    tables: dict[str, list[R.Entry]] = defaultdict(list)
    for e in ref.entries.values():
        tables[e.table].append(e)
    exact_lines, exact_keys = [], []
    outcomes: dict[str, tuple[str, str | None]] = {}
    for table, entries in tables.items():
        body += [f"## {table}", "",
                 "| entry | model | method | variant | metric | reported | ours (mean) | our seed std | Δ | band ± | "
                 "status | fidelity | seeds | verified | evidence | rows from |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        gaps = []
        for e in entries:
            cfgs = by_ref.get(e.ref, [])
            recipes: dict[str, list[str]] = defaultdict(list)
            for m in e.metrics.values():
                if m.exact:
                    who = ("tests/test_reference_complexity.py" if m.name in EXACT_FROM_MODEL
                           and not isinstance(e.architecture, str) else "the method's own tests")
                    exact_lines.append(f"| {e.key} | {e.model} | {m.name} | {_fmt(m.value)} {m.unit} | {who} |")
                    exact_keys.append(f"{e.key}.{m.name}")
                    continue
                # one line per recipe (experiment file) whose judged rows cite the entry: recipes are not pooled
                fid = "paper" if R.judged_experiments(e, rows, "paper") else "reduced"
                for exp in R.judged_experiments(e, rows, fid) or [None]:
                    j = R.judge_metric(e, m, rows, fid, conv, exp)
                    if m.band is not None:
                        status = cell_status(e, j, cfgs, conf_dir, exp)
                        recipes[exp or ""].append(status)
                    else:
                        status = "informational" if m.value is not None else "no reported value"
                    body.append(_entry_line(e, m, j, status, exp))
            if not recipes:   # only exact or informational metrics
                recipes[""].append(cell_status(e, None, cfgs, conf_dir))
            outcomes[e.key] = _entry_outcome(recipes)
            if e.known_gap is not None:
                gaps.append(f"- **{e.key}** ({', '.join(e.known_gap.metrics)}): {_md_escape(e.known_gap.reason)}")
        body.append("")
        if gaps:
            body += ["Known gaps (the metrics named are reported \"known gap\" when out of band; every other metric "
                     "of the entry is judged as usual):", ""] + gaps + [""]
    if exact_lines:
        body += ["## Exact complexity entries", "",
                 "Recomputed from the architecture: params/FLOPs/MACs/BOPs/OPs/size under the paper's convention by "
                 "`tests/test_reference_complexity.py` (held within the paper's rounding, or 1% with both numbers "
                 "printed); method-specific counts by the method's own tests.", "",
                 "| entry | model | metric | reported | recomputed by |", "|---|---|---|---|---|"]
        body += exact_lines + [""]
    if not ref.entries:
        body += ["## Entries", "", "No reported number is available for this paper (see the reference file's notes); "
                 "only claims are encoded.", ""]
    not_runnable = sorted({e.not_runnable_reason for e in ref.entries.values() if e.not_runnable_reason})
    if not_runnable:
        body += ["Not runnable here because: " + "; ".join(f"“{r}”" for r in not_runnable), ""]
    # claims
    body += ["## Claims", "",
             "held: the 95% CI of the difference (paired by seed where the arms share seeds, Welch otherwise) lies "
             "above the margin; not held: below it; inconclusive: anything else, or fewer than 3 seeds per arm.", ""]
    results = []
    if not ref.claims:
        body += ["No claims encoded.", ""]
    for c in ref.claims:
        res = R.evaluate_claim(c, rows, conv)
        results.append(res)
        label = "" if c.verified is not False else " (unverified source)"
        how = (f"metric {c.metric}, margin {c.margin:+g}" if c.metric else f"checked: {_md_escape(c.notes)}")
        status = (f"superseded by {', '.join(c.superseded.by)} ({_md_escape(c.superseded.why)})" if c.superseded
                  else res.status)
        body.append(f"- **{c.id}** — {status}{label}. {_md_escape(c.text)} [{_md_escape(c.source)}; {how}]")
        for comp, ev in zip(res.comparisons, res.evidence()):
            enforced = " (enforced by tests/test_repro.py)" if res.enforced(comp) else ""
            body.append(f"  - {_md_escape(ev)}{enforced}")
        if not res.comparisons and c.metric and not c.superseded:
            body.append("  - no judged paper/reduced rows on both sides of the comparison")
    body.append("")
    datasets = sorted({r.get("dataset") for r in paper_rows if r.get("_judged") and r.get("dataset") in plots})
    if datasets:
        body += ["## Accuracy vs cost", "", "Judged rows of compression methods on each dataset this paper has rows "
                 "for (all papers; one colour and marker per method across every plot).", ""]
        for d in datasets:
            body += [f"![{d}]({plots[d][0]})", ""] + points_table(plots[d][1]) + [""]
    unjudged = [r for r in paper_rows if not r.get("_judged")]
    if unjudged:
        body += ["## Rows not judged", "",
                 "Kept in the CSVs and shown here; never part of a verdict.", "",
                 "| run id | experiment | seed | fidelity | reason |", "|---|---|---|---|---|"]
        body += [f"| {_md_escape(_row_id(r))} | {_md_escape(_recipe(r) or '—')} | {_md_escape(r.get('seed', ''))} | "
                 f"{_md_escape(r.get('fidelity') or '—')} | {_md_escape(r.get('_not_judged') or 'not judged')} |"
                 for r in unjudged] + [""]
    if ref.notes:
        body += ["## Notes", "", str(ref.notes).strip(), ""]
    glance = _glance(ref, outcomes, exact_keys, results, len(unjudged))
    head = [f"# {ref.paper}: {ref.title}", "", glance, "",
            f"arXiv {ref.arxiv or '—'} · {ref.venue or '—'} · code: {ref.code or 'none public'} · "
            f"reference file: `results/reference/{ref.paper}.yaml`", "",
            f"Counting convention: FLOPs = {conv.flops}, params = {conv.params}, counter = {conv.counter}, "
            f"BN counted = {conv.bn_counted}, input = {list(conv.input_res) if conv.input_res else '—'}.", "",
            "_Generated by `python evaluate.py report` from `results/runs/*.csv` and the YAML files; do not edit._",
            ""]
    counts: dict[str, int] = defaultdict(int)
    for word, _ in outcomes.values():
        counts[word] += 1
    summary = {"glance": glance, "entries": len(ref.entries), "counts": dict(counts),
               "claims": {w: sum(r.status == w for r in results) for w in
                          ("held", "not held", "inconclusive", "not tested", "qualitative", "superseded")},
               "rows_judged": sum(bool(r.get("_judged")) for r in paper_rows), "rows_not_judged": len(unjudged)}
    return "\n".join(head + body), summary


# ---- everything ------------------------------------------------------------------------------------------

def unreferenced_rows(rows: list[dict], papers: set[str]) -> list[str]:
    """The rows of tracks without a reference file (``backbones``, ``detection``): shown, never judged against a
    paper. One table per track, in file order: experiment file, seed, top-1 or mAP@0.5, size, cost, and whether the
    row is from a clean commit with its experiment file's config (the rule every page applies)."""
    tracks: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        track = row.get("paper") or "?"
        if track not in papers:
            tracks[track].append(row)
    if not tracks:
        return []
    lines = ["", "## Rows outside the papers' references", "",
             "Measured rows of tracks that no reference file covers (no entry or claim is judged from them).", ""]
    for track, track_rows in sorted(tracks.items()):
        lines += [f"### {track}", "", "| experiment file | seed | top-1 % | mAP@0.5 | params | MACs | judged-ready |",
                  "|---|---|---|---|---|---|---|"]
        for r in track_rows:
            ready = "yes" if r.get("_judged") else _md_escape(r.get("_not_judged") or "no")
            lines.append(f"| {_md_escape(r.get('experiment_config') or r.get('experiment'))} | {r.get('seed')} | "
                         f"{_fmt(R.row_value(r, 'top1'))} | {_fmt(R.row_value(r, 'map50'))} | "
                         f"{_fmt(R.row_value(r, 'params'), 0)} | {_fmt(R.row_value(r, 'macs'), 0)} | {ready} |")
        lines.append("")
    return lines


def _mark(rows: list[dict], conf_dir: str, errors: list[str]) -> None:
    try:
        R.mark_judged(rows, conf_dir)
    except Exception as e:   # noqa: BLE001 - the report still lists every row, as not judged
        errors.append(f"judging rows against {conf_dir}: {e}")
        for row in rows:
            row["_judged"], row["_not_judged"] = False, f"could not be checked ({e})"


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
    _mark(rows, conf_dir, errors)
    try:
        configs = R.load_experiment_configs(conf_dir)
    except R.ReferenceError as e:
        errors.append(str(e))
        configs = []
    plots = pareto_plots(rows, out_dir, method_families(conf_dir))
    index = ["# Reproduction status", "",
             "_Generated by `python evaluate.py report` from `results/runs/*.csv` and `results/reference/*.yaml`; "
             "do not edit._", "",
             "Per paper, the line its page opens with: entries reproduced by our own training at paper fidelity "
             "(in band of a verified reference), recounted (the authors' released weights evaluated here; exact "
             "complexity recomputed by the tests), claims judged from the 95% CI of the difference, entries that "
             "cannot run here. Only judged rows count (clean commit, the exact config of an existing experiment "
             "file); each page lists the others under \"Rows not judged\".", "",
             "| paper | at a glance | report |", "|---|---|---|"]
    for paper in R.PAPERS:
        if paper in invalid:
            index.append(f"| {paper} | **invalid reference file**: {_md_escape(invalid[paper])} | — |")
            continue
        if paper not in refs:
            index.append(f"| {paper} | **missing reference file** (`results/reference/{paper}.yaml`) | — |")
            continue
        text, s = paper_report(refs[paper], rows, configs, conf_dir, plots)
        with open(os.path.join(out_dir, f"{paper}.md"), "w") as f:
            f.write(text + "\n")
        index.append(f"| {paper} | {_md_escape(s['glance'])} | [{paper}.md]({paper}.md) |")
    index += unreferenced_rows(rows, set(refs) | set(invalid))
    if plots:
        index += ["", "## Accuracy vs cost (judged rows of compression methods, all papers)", ""]
        for d, (name, pts) in plots.items():
            index += [f"### {d}", "", f"![{d}]({name})", ""] + points_table(pts) + [""]
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

"""Reference files (``results/reference/<paper>.yaml``): the papers' reported numbers as validated data.

``load_reference(path)`` / ``load_references(directory)`` parse and validate; a malformed file, an unknown field
or value, a band of the wrong sign or a duplicate key raises ``ReferenceError`` naming the file, the entry (or
claim) and the field. ``lookup(refs, "<paper>:<key>")`` gives one entry.
"""
from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = ROOT / "results" / "reference"
RUNS_DIR = ROOT / "results" / "runs"

#: the 17 papers of the suite (keys as in the paper notes' README)
PAPERS = ("sd_bnn", "ir2net", "pa", "nasb", "sketch", "inq", "dns", "aip", "acp", "ucp", "dcff", "cc",
          "tt_admm", "autorecon", "nat", "xgradcam", "unit_ablation")

DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar10_jpeg", "cifar100", "imagenet", "voc", "places365",
            "synthetic")
FLOPS_CONVENTIONS = ("macs", "2macs", "none")
PARAMS_CONVENTIONS = ("all", "conv_fc_weights_biases", "conv_fc_weights")
COUNTERS = ("thop-0.0.31", "thop-0.1.1", "ptflops", "own", "unknown")
FIDELITIES = ("paper", "reduced", "smoke", "adhoc")
#: unit -> scale to the suite's base unit (count, %, x, bits ...)
UNITS = {"count": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "%": 1.0, "pp": 1.0, "points": 1.0, "x": 1.0, "bits": 1.0, "rho": 1.0, "r": 1.0,
         "KB": 8e3, "MB": 8e6, "MiB": 8 * 2.0 ** 20, "ms": 1.0, "s": 1.0, "score": 1.0, "ratio": 1.0}
#: metrics that are complexity counts (compared in base units; `exact: true` allowed)
COMPLEXITY_METRICS = ("params", "flops", "macs", "bops", "ops", "size_bits", "nonzero_params")
ACCURACY_METRICS = ("top1", "top5", "top1_error", "top5_error")

TOP_FIELDS = {"paper", "title", "arxiv", "venue", "code", "conventions", "entries", "claims", "notes", "facts"}
TOP_REQUIRED = {"paper", "title", "conventions", "entries", "claims"}
CONV_FIELDS = {"flops", "params", "counter", "bn_counted", "input_res", "notes"}
ENTRY_FIELDS = {"key", "table", "dataset", "model", "method", "variant", "metrics", "source", "protocol",
                "verified", "known_gap", "runnable", "architecture", "notes"}
ENTRY_REQUIRED = {"key", "table", "dataset", "model", "method", "metrics", "source", "verified"}
METRIC_FIELDS = {"value", "unit", "band", "exact", "notes"}
BAND_FIELDS = {"paper_pm", "floor", "k_std"}
CLAIM_FIELDS = {"id", "text", "source", "compare", "within_row", "enforce", "verified", "notes"}
WITHIN_ROW_FIELDS = {"filter", "metric", "min", "other", "margin"}
COMPARE_FIELDS = {"metric", "better", "worse", "same", "margin"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+\-]*$")


class ReferenceError(ValueError):
    """A reference file, a results row or a claim is malformed; the message names file, entry/row and field."""


# ---- data classes --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Band:
    paper_pm: float | None = None
    floor: float | None = None
    k_std: float | None = None

    def width(self, seed_std: float | None = None) -> float:
        """max(paper's own ±, k_std × our seed std (when we have ≥2 seeds), floor)."""
        parts = [self.paper_pm or 0.0, self.floor or 0.0]
        if seed_std is not None and self.k_std:
            parts.append(self.k_std * seed_std)
        return max(parts)


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | None            # None: the paper's number is not available (a placeholder, never judged)
    unit: str
    band: Band | None = None
    exact: bool = False

    @property
    def scale(self) -> float:
        return UNITS[self.unit]


@dataclass(frozen=True)
class Conventions:
    flops: str
    params: str
    counter: str
    bn_counted: bool | None = None
    input_res: tuple[int, ...] | None = None
    notes: str | None = None


@dataclass
class Entry:
    paper: str
    key: str
    table: str
    dataset: str
    model: str
    method: str
    variant: str | None
    metrics: dict[str, Metric]
    source: str
    verified: bool
    protocol: dict = field(default_factory=dict)
    known_gap: str | None = None
    runnable: bool | str = True
    architecture: dict | str | None = None
    notes: str | None = None
    path: str = ""

    @property
    def ref(self) -> str:
        return f"{self.paper}:{self.key}"

    @property
    def not_runnable_reason(self) -> str | None:
        return self.runnable if isinstance(self.runnable, str) else None


@dataclass
class Claim:
    paper: str
    id: str
    text: str
    source: str
    metric: str | None             # None: a qualitative claim without a row comparison (reported, not tested)
    better: dict
    worse: dict
    same: list[str]
    margin: float | None
    enforce: bool | None = None     # None: enforced for paper-fidelity groups only
    verified: bool | None = None
    notes: str | None = None
    within_row: dict | None = None  # per-row statement: metric >= min, or metric - other >= margin


@dataclass
class PaperReference:
    paper: str
    title: str
    conventions: Conventions
    entries: dict[str, Entry]
    claims: list[Claim]
    path: str
    arxiv: str | None = None
    venue: str | None = None
    code: str | None = None
    notes: str | None = None
    facts: Any = None


# ---- YAML with duplicate-key detection -----------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    pass


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ReferenceError(f"duplicate key '{key}' at line {key_node.start_mark.line + 1} "
                                 f"(first at line {seen[key]})")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _read_yaml(path: str) -> Any:
    try:
        with open(path) as f:
            return yaml.load(f, Loader=_StrictLoader)   # noqa: S506 (SafeLoader subclass)
    except ReferenceError as e:
        raise ReferenceError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ReferenceError(f"{path}: not valid YAML: {e}") from None


# ---- validation ----------------------------------------------------------------------------------------

def _where(path: str, what: str | None, fld: str) -> str:
    return f"{path}: {what + ': ' if what else ''}field '{fld}'"


def _check_keys(obj: Any, allowed: set[str], required: set[str], path: str, what: str | None, prefix: str = ""):
    if not isinstance(obj, dict):
        raise ReferenceError(f"{_where(path, what, prefix or '<top>')}: expected a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ReferenceError(f"{_where(path, what, prefix + unknown[0])}: unknown field; allowed: {sorted(allowed)}")
    missing = sorted(required - set(obj))
    if missing:
        raise ReferenceError(f"{_where(path, what, prefix + missing[0])}: required field is missing")


def _number(v: Any, path: str, what: str, fld: str, allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ReferenceError(f"{_where(path, what, fld)}: expected a finite number, got {v!r}")
    return float(v)


def _choice(v: Any, allowed: Iterable[str], path: str, what: str | None, fld: str) -> str:
    allowed = tuple(allowed)
    if v not in allowed:
        raise ReferenceError(f"{_where(path, what, fld)}: unknown value {v!r}; allowed: {list(allowed)}")
    return v


def _name(v: Any, path: str, what: str, fld: str) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise ReferenceError(f"{_where(path, what, fld)}: expected a lowercase name ([a-z0-9_.+-]), got {v!r}")
    return v


def _band(raw: Any, path: str, what: str, fld: str) -> Band:
    _check_keys(raw, BAND_FIELDS, set(), path, what, fld + ".")
    vals = {}
    for k in BAND_FIELDS:
        v = _number(raw.get(k), path, what, f"{fld}.{k}", allow_none=True)
        if v is not None and v < 0:
            raise ReferenceError(f"{_where(path, what, f'{fld}.{k}')}: a band must be >= 0 (two-sided width), got {v}")
        vals[k] = v
    if not any(vals.values()):
        raise ReferenceError(f"{_where(path, what, fld)}: band has no positive width "
                             "(set paper_pm, floor or k_std)")
    return Band(**vals)


def _metric(name: str, raw: Any, path: str, what: str) -> Metric:
    fld = f"metrics.{name}"
    _name(name, path, what, fld)
    _check_keys(raw, METRIC_FIELDS, {"value", "unit"}, path, what, fld + ".")
    value = _number(raw["value"], path, what, f"{fld}.value", allow_none=True)
    unit = _choice(raw["unit"], UNITS, path, what, f"{fld}.unit")
    exact = raw.get("exact", False)
    if not isinstance(exact, bool):
        raise ReferenceError(f"{_where(path, what, f'{fld}.exact')}: expected true/false, got {exact!r}")
    band = None
    if raw.get("band") is not None:
        band = _band(raw["band"], path, what, f"{fld}.band")
    if value is None and (band is not None or exact):
        raise ReferenceError(f"{_where(path, what, f'{fld}.value')}: a metric with a band or exact: true needs a "
                             "number (null marks a number the paper's notes do not have)")
    # neither band nor exact: an informational number (shown in the report, never judged)
    return Metric(name=name, value=value, unit=unit, band=band, exact=exact)


def _conventions(raw: Any, path: str) -> Conventions:
    _check_keys(raw, CONV_FIELDS, {"flops", "params", "counter"}, path, None, "conventions.")
    bn = raw.get("bn_counted")
    if bn is not None and not isinstance(bn, bool):
        raise ReferenceError(f"{_where(path, None, 'conventions.bn_counted')}: expected true/false, got {bn!r}")
    res = raw.get("input_res")
    if res is not None:
        if not (isinstance(res, list) and all(isinstance(x, int) and x > 0 for x in res) and len(res) in (1, 2, 3)):
            raise ReferenceError(f"{_where(path, None, 'conventions.input_res')}: expected [C, H, W] of positive "
                                 f"ints, got {res!r}")
        res = tuple(res)
    return Conventions(flops=_choice(raw["flops"], FLOPS_CONVENTIONS, path, None, "conventions.flops"),
                       params=_choice(raw["params"], PARAMS_CONVENTIONS, path, None, "conventions.params"),
                       counter=_choice(raw["counter"], COUNTERS, path, None, "conventions.counter"),
                       bn_counted=bn, input_res=res, notes=raw.get("notes"))


def _registered_models() -> set[str] | None:
    try:
        from models import MODELS
        return set(MODELS.list())
    except Exception:   # noqa: BLE001 - models unavailable: skip the check rather than guess
        return None


def _entry(paper: str, i: int, raw: Any, path: str, models: set[str] | None) -> Entry:
    key = raw.get("key") if isinstance(raw, dict) else None
    what = f"entry '{key}'" if key else f"entry #{i}"
    _check_keys(raw, ENTRY_FIELDS, ENTRY_REQUIRED, path, what)
    _name(key, path, what, "key")
    for fld in ("table", "source"):
        if not isinstance(raw[fld], str) or not raw[fld].strip():
            raise ReferenceError(f"{_where(path, what, fld)}: expected a non-empty string, got {raw[fld]!r}")
    dataset = _choice(raw["dataset"], DATASETS, path, what, "dataset")
    method = _name(raw["method"], path, what, "method")
    model = raw["model"]
    if not isinstance(model, str) or not model:
        raise ReferenceError(f"{_where(path, what, 'model')}: expected a model name, got {model!r}")
    runnable = raw.get("runnable", True)
    if not (runnable is True or (isinstance(runnable, str) and runnable.strip())):
        raise ReferenceError(f"{_where(path, what, 'runnable')}: expected true or a string saying why it cannot "
                             f"run here, got {runnable!r}")
    if models is not None and runnable is True and model not in models and not model.startswith("timm:"):
        raise ReferenceError(f"{_where(path, what, 'model')}: {model!r} is not a registered model; use a suite "
                             "model name, or set runnable: '<why not>'")
    if not isinstance(raw["verified"], bool):
        raise ReferenceError(f"{_where(path, what, 'verified')}: expected true/false, got {raw['verified']!r}")
    metrics_raw = raw["metrics"]
    if not isinstance(metrics_raw, dict) or not metrics_raw:
        raise ReferenceError(f"{_where(path, what, 'metrics')}: expected a non-empty mapping name -> "
                             "{value, unit, band}")
    metrics = {n: _metric(n, m, path, what) for n, m in metrics_raw.items()}
    protocol = raw.get("protocol") or {}
    if not isinstance(protocol, dict):
        raise ReferenceError(f"{_where(path, what, 'protocol')}: expected a mapping, got {protocol!r}")
    for fld in ("known_gap", "variant", "notes"):
        if raw.get(fld) is not None and not isinstance(raw[fld], (str, int, float)):
            raise ReferenceError(f"{_where(path, what, fld)}: expected a string or null, got {raw[fld]!r}")
    arch = raw.get("architecture")
    if arch is not None and not isinstance(arch, (dict, str)):
        raise ReferenceError(f"{_where(path, what, 'architecture')}: expected a mapping of build_model kwargs "
                             f"(or a string naming where the architecture is specified), got {arch!r}")
    variant = raw.get("variant")
    return Entry(paper=paper, key=key, table=raw["table"], dataset=dataset, model=model, method=method,
                 variant=None if variant is None else str(variant), metrics=metrics, source=raw["source"],
                 verified=raw["verified"], protocol=protocol, known_gap=raw.get("known_gap"), runnable=runnable,
                 architecture=arch, notes=raw.get("notes"), path=path)


def _claim(paper: str, i: int, raw: Any, path: str) -> Claim:
    cid = raw.get("id") if isinstance(raw, dict) else None
    what = f"claim '{cid}'" if cid else f"claim #{i}"
    _check_keys(raw, CLAIM_FIELDS, {"id", "text", "source"}, path, what)
    _name(cid, path, what, "id")
    for flag in ("enforce", "verified"):
        if raw.get(flag) is not None and not isinstance(raw[flag], bool):
            raise ReferenceError(f"{_where(path, what, flag)}: expected true/false, got {raw[flag]!r}")
    comp = raw.get("compare")
    within = raw.get("within_row")
    if comp is not None and within is not None:
        raise ReferenceError(f"{_where(path, what, 'within_row')}: give either 'compare' or 'within_row', not both")
    if within is not None:   # a statement about each row on its own
        _check_keys(within, WITHIN_ROW_FIELDS, {"filter", "metric"}, path, what, "within_row.")
        if not isinstance(within["filter"], dict) or not within["filter"]:
            raise ReferenceError(f"{_where(path, what, 'within_row.filter')}: expected a non-empty row filter")
        if ("min" in within) == ("other" in within):
            raise ReferenceError(f"{_where(path, what, 'within_row.min')}: give exactly one of 'min' or "
                                 "'other' (+ 'margin')")
        threshold = _number(within.get("min", within.get("margin", 0.0)), path, what,
                            "within_row.min" if "min" in within else "within_row.margin")
        return Claim(paper=paper, id=cid, text=str(raw["text"]), source=str(raw["source"]),
                     metric=str(within["metric"]), better=dict(within["filter"]), worse={}, same=["run_id"],
                     margin=0.0 if "min" in within else threshold, enforce=raw.get("enforce"),
                     verified=raw.get("verified"), notes=raw.get("notes"),
                     within_row={"other": within.get("other"), "min": within.get("min")})
    if comp is None:   # qualitative: no row comparison; needs notes saying how it is checked
        if not raw.get("notes"):
            raise ReferenceError(f"{_where(path, what, 'compare')}: a claim without 'compare' must say in 'notes' "
                                 "how it is checked")
        if raw.get("enforce"):
            raise ReferenceError(f"{_where(path, what, 'enforce')}: only a claim with 'compare' can be enforced")
        return Claim(paper=paper, id=cid, text=str(raw["text"]), source=str(raw["source"]), metric=None, better={},
                     worse={}, same=[], margin=None, enforce=False, verified=raw.get("verified"),
                     notes=raw.get("notes"))
    _check_keys(comp, COMPARE_FIELDS, COMPARE_FIELDS, path, what, "compare.")
    for side in ("better", "worse"):
        if not isinstance(comp[side], dict) or not comp[side]:
            raise ReferenceError(f"{_where(path, what, 'compare.' + side)}: expected a non-empty row filter "
                                 "(column -> value)")
    same = comp["same"]
    if not isinstance(same, list) or not all(isinstance(s, str) for s in same):
        raise ReferenceError(f"{_where(path, what, 'compare.same')}: expected a list of column names")
    return Claim(paper=paper, id=cid, text=str(raw["text"]), source=str(raw["source"]),
                 metric=str(comp["metric"]), better=dict(comp["better"]), worse=dict(comp["worse"]),
                 same=list(same), margin=_number(comp["margin"], path, what, "compare.margin"),
                 enforce=raw.get("enforce"), verified=raw.get("verified"), notes=raw.get("notes"))


def load_reference(path: str | os.PathLike, check_models: bool = True) -> PaperReference:
    """Parse and validate one reference file (schema: results/reference/README.md)."""
    path = str(path)
    raw = _read_yaml(path)
    _check_keys(raw, TOP_FIELDS, TOP_REQUIRED, path, None)
    stem = Path(path).stem
    if raw["paper"] != stem:
        raise ReferenceError(f"{_where(path, None, 'paper')}: {raw['paper']!r} must equal the file name {stem!r}")
    conv = _conventions(raw["conventions"], path)
    if not isinstance(raw["entries"], list):
        raise ReferenceError(f"{_where(path, None, 'entries')}: expected a list (may be empty)")
    if not isinstance(raw["claims"], list):
        raise ReferenceError(f"{_where(path, None, 'claims')}: expected a list (may be empty)")
    models = _registered_models() if check_models else None
    entries: dict[str, Entry] = {}
    for i, e in enumerate(raw["entries"]):
        entry = _entry(stem, i, e, path, models)
        if entry.key in entries:
            raise ReferenceError(f"{_where(path, f'entry {entry.key!r} (#{i})', 'key')}: duplicate key")
        entries[entry.key] = entry
    claims: list[Claim] = []
    for i, c in enumerate(raw["claims"]):
        claim = _claim(stem, i, c, path)
        if any(x.id == claim.id for x in claims):
            raise ReferenceError(f"{_where(path, f'claim {claim.id!r} (#{i})', 'id')}: duplicate id")
        claims.append(claim)
    return PaperReference(paper=stem, title=str(raw["title"]), conventions=conv, entries=entries, claims=claims,
                          path=path, arxiv=raw.get("arxiv"), venue=raw.get("venue"), code=raw.get("code"),
                          notes=raw.get("notes"), facts=raw.get("facts"))


def reference_files(directory: str | os.PathLike = REFERENCE_DIR) -> dict[str, str]:
    return {Path(p).stem: p for p in sorted(glob.glob(os.path.join(str(directory), "*.yaml")))}


def missing_papers(directory: str | os.PathLike = REFERENCE_DIR) -> list[str]:
    """Papers of the suite (``PAPERS``) without a ``<paper>.yaml`` in ``directory``."""
    have = reference_files(directory)
    return [p for p in PAPERS if p not in have]


def load_references(directory: str | os.PathLike = REFERENCE_DIR) -> dict[str, PaperReference]:
    """Every ``*.yaml`` in ``directory`` (whatever subset of the 17 papers exists), validated."""
    out = {}
    for paper, path in reference_files(directory).items():
        if paper not in PAPERS:
            raise ReferenceError(f"{path}: field 'paper': unknown paper {paper!r}; allowed: {list(PAPERS)}")
        out[paper] = load_reference(path)
    return out


def lookup(refs: dict[str, PaperReference], ref: str) -> Entry:
    """The entry for ``"<paper>:<key>"``; a clear error when the paper file or the key is absent."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ReferenceError(f"reference {ref!r}: expected '<paper>:<entry key>'")
    paper, key = ref.split(":")
    if paper not in refs:
        raise ReferenceError(f"reference {ref!r}: no reference file for paper {paper!r} "
                             f"(have: {sorted(refs)})")
    entries = refs[paper].entries
    if key not in entries:
        raise ReferenceError(f"reference {ref!r}: no entry {key!r} in {refs[paper].path} "
                             f"(entries: {sorted(entries)})")
    return entries[key]

"""The reference registry: papers' reported numbers as data, validated, looked up, compared.

Reads ``results/reference/<paper>.yaml`` (schema: ``results/reference/README.md``; optional extensions in
``docs/references.md``). Everything that judges a measured row against a paper goes through here, so
tests, the report and any user script agree:

- ``load_reference(path)`` / ``load_references(directory)``: parse and validate. A malformed file, an unknown
  field or value, a band of the wrong sign or a duplicate key raises ``ReferenceError`` naming the file, the
  entry (or claim) and the field.
- ``lookup(refs, "<paper>:<key>")``: one entry.
- ``convention_counts(model, input_shape, conventions)``: our raw counter (``engine/complexity.py``) plus the
  paper's declared counting convention (thop 0.0.31 / thop 0.1.1 / ptflops / own), as forward hooks over the
  model's BN, bias, activation and pooling layers. The raw counter itself is never changed.
- ``row_value``, ``judge_metric``, ``evaluate_claim``: compare committed result rows with entries and claims.
- ``load_result_rows(directory, refs)``: every ``results/runs/*.csv`` row, checked for a known reference key.
"""
from __future__ import annotations

import glob
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parents[1]
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


# ---- counting conventions ------------------------------------------------------------------------------

def convention_terms(model, input_shape: tuple[int, ...], counter: str, bn_counted: bool | None = None) -> dict:
    """Element operations a counter adds on top of conv/linear MACs, measured with forward hooks.

    Rules (per counter, from its source, module types only; functional calls such as ``F.relu`` are not
    seen by hooks, as in the counters themselves):

    - ``thop-0.0.31``: +1 per conv output element when the conv has a bias; BatchNorm 2 per input element;
      AvgPool 1 per output element; AdaptiveAvgPool (kernel + 1) per output element; ReLU, MaxPool 0.
    - ``thop-0.1.1``: conv bias not counted; BatchNorm 2 per input element, ×2 when affine; pooling as 0.0.31.
    - ``ptflops``: +1 per conv output element with bias; BatchNorm 1 per input element, ×2 when affine;
      ReLU-family 1 per output element; every pooling 1 per input element; Linear bias 1 per output element
      (ptflops' module hooks: equal to ptflops 0.7.5 with ``count_functional=False``).
    - ``own`` / ``unknown``: nothing added (conv + linear MACs only).

    ``bn_counted=False`` drops the BatchNorm term, ``True`` keeps it (``None``: the counter's rule).
    Returns {"bias", "bn", "act", "pool", "total"} in operations per image.
    """
    import torch
    import torch.nn as nn

    terms = {"bias": 0, "bn": 0, "act": 0, "pool": 0}
    if counter not in COUNTERS:
        raise ReferenceError(f"counter {counter!r}: unknown; allowed: {list(COUNTERS)}")
    if counter in ("own", "unknown"):
        return {**terms, "total": 0}
    acts = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU)
    pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
             nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
             nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)

    def hook(m, inputs, out):
        x = inputs[0]
        if isinstance(m, nn.modules.conv._ConvNd):
            if m.bias is not None and counter in ("thop-0.0.31", "ptflops"):
                terms["bias"] += out.numel()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            per = {"thop-0.0.31": 2, "thop-0.1.1": 4 if m.affine else 2, "ptflops": 2 if m.affine else 1}[counter]
            terms["bn"] += per * x.numel()
        elif isinstance(m, nn.Linear):
            if m.bias is not None and counter == "ptflops":
                terms["bias"] += out.numel()
        elif isinstance(m, acts):
            if counter == "ptflops" or (counter.startswith("thop") and isinstance(m, nn.LeakyReLU)):
                terms["act"] += out.numel()
        elif isinstance(m, pools):
            if counter == "ptflops":
                terms["pool"] += x.numel()
            elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
                terms["pool"] += out.numel()
            elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
                kernel = 1.0
                for i_dim, o_dim in zip(x.shape[2:], out.shape[2:]):
                    kernel *= i_dim / o_dim if counter == "thop-0.1.1" else i_dim // o_dim
                terms["pool"] += int((kernel + 1) * out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if bn_counted is False:
        terms["bn"] = 0
    terms["total"] = sum(terms.values())
    return terms


def convention_params(model, params: str) -> int:
    """Parameter count under a paper's ``conventions.params``."""
    import torch.nn as nn
    if params == "all":
        return sum(p.numel() for p in model.parameters())
    counted = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    total = sum(m.weight.numel() for m in counted)
    if params == "conv_fc_weights_biases":
        total += sum(m.bias.numel() for m in counted if m.bias is not None)
    elif params != "conv_fc_weights":
        raise ReferenceError(f"conventions.params {params!r}: unknown; allowed: {list(PARAMS_CONVENTIONS)}")
    return total


def convention_counts(model, input_shape: tuple[int, ...], conv: Conventions) -> dict:
    """Complexity of ``model`` the way the paper counts it, built on ``engine.complexity.measure``.

    Returns ``params``, ``macs`` (conv/linear MACs + the counter's element ops), ``flops`` (``macs`` or
    ``2·macs`` per ``conventions.flops``; None for ``none``), ``raw_macs`` and the added ``terms``.
    """
    from engine.complexity import measure
    raw = measure(model, tuple(input_shape))
    terms = convention_terms(model, tuple(input_shape), conv.counter, conv.bn_counted)
    macs = raw.macs + terms["total"]
    flops = {"macs": macs, "2macs": 2 * macs, "none": None}[conv.flops]
    return {"params": convention_params(model, conv.params), "macs": macs, "flops": flops,
            "raw_macs": raw.macs, "terms": terms, "bops": raw.bops, "ops": raw.ops, "size_bits": raw.size_bits}


def rounding_half_unit(value: float) -> float:
    """Half a unit of the last printed digit of ``value`` (314.59 -> 0.005; 108 -> 0.5)."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        return 0.0
    decimals = len(text.split(".")[1].rstrip("0")) if "." in text else 0
    return 0.5 * 10.0 ** (-decimals)


def exact_status(reported: float, ours: float, rel_tol: float = 0.01) -> str:
    """'exact' within the paper's rounding, 'within 1%' otherwise if close, else 'mismatch' (in ref units)."""
    if abs(ours - reported) <= rounding_half_unit(reported) + 1e-12 * max(1.0, abs(reported)):
        return "exact"
    if abs(ours - reported) <= rel_tol * abs(reported):
        return "within 1%"
    return "mismatch"


# ---- result rows ---------------------------------------------------------------------------------------

def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def row_value(row: dict, name: str, conv: Conventions | None = None) -> float | None:
    """A metric of a results row in base units (``%`` for accuracy, counts for complexity).

    ``top1_error`` = 100 − top1. ``flops`` follows the paper's convention (``macs`` -> our MACs column).
    Complexity from a row is our raw counter's (no BN/bias terms: they need the model). Anything else
    is read from the row's columns, then from its ``extra`` JSON (``extra.<name>`` also accepted).
    """
    if name.startswith("extra."):
        return _float((row.get("extra") or {}).get(name[6:]))
    if name in ("top1_error", "top5_error"):
        acc = _float(row.get(name[:4]))
        return None if acc is None else 100.0 - acc
    if name == "flops" and conv is not None and conv.flops == "macs":
        return _float(row.get("macs"))
    if name in row and name != "extra":
        return _float(row[name])
    return _float((row.get("extra") or {}).get(name))


def load_result_rows(directory: str | os.PathLike = RUNS_DIR,
                     refs: dict[str, PaperReference] | None = None) -> list[dict]:
    """All rows of ``directory/*.csv``; each gets ``_file`` and ``_line``. With ``refs``, a row whose
    ``reference`` names no entry, or whose ``fidelity`` is unknown, raises naming file, line and field."""
    from engine.results import read_rows
    rows = []
    for path in sorted(glob.glob(os.path.join(str(directory), "*.csv"))):
        for line, row in enumerate(read_rows(path), start=2):
            row["_file"], row["_line"] = path, line
            if row.get("fidelity") and row["fidelity"] not in FIDELITIES:
                raise ReferenceError(f"{path}, line {line}, run {row.get('run_id')!r}: field 'fidelity': unknown "
                                     f"value {row['fidelity']!r}; allowed: {list(FIDELITIES)}")
            if refs is not None and row.get("reference"):
                try:
                    lookup(refs, row["reference"])
                except ReferenceError as e:
                    raise ReferenceError(f"{path}, line {line}, run {row.get('run_id')!r}: field 'reference': "
                                         f"{e}") from None
            rows.append(row)
    return rows


@dataclass
class Judgement:
    """One metric of one entry against the rows that cite it (at one fidelity)."""
    entry: Entry
    metric: Metric
    fidelity: str
    values: list[float]            # ours, in the reference's unit
    run_ids: list[str]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    @property
    def delta(self) -> float | None:
        return None if self.mean is None or self.metric.value is None else self.mean - self.metric.value

    @property
    def band(self) -> float | None:
        return None if self.metric.band is None else self.metric.band.width(self.std)

    def within(self, value: float) -> bool:
        return (self.band is not None and self.metric.value is not None
                and abs(value - self.metric.value) <= self.band + 1e-9)

    @property
    def status(self) -> str:
        """reproduced / in band / out of band / known gap / reduced (claims only) / not run."""
        if not self.values:
            return "not run"
        if self.fidelity != "paper":
            return f"{self.fidelity} (judged by claims)"
        if self.band is None:
            return "informational"
        if self.within(self.mean):
            return "reproduced" if self.entry.verified else "in band"
        return "known gap" if self.entry.known_gap else "out of band"


def judged_experiments(entry: Entry, rows: list[dict], fidelity: str) -> list[str]:
    """The experiments (recipes) whose rows cite ``entry`` at ``fidelity``, each judged on its own."""
    return sorted({str(r.get("experiment") or "") for r in rows
                   if r.get("reference") == entry.ref and r.get("fidelity") == fidelity})


def judge_metric(entry: Entry, metric: Metric, rows: list[dict], fidelity: str, conv: Conventions,
                 experiment: str | None = None) -> Judgement:
    """Values of ``metric`` from the rows citing ``entry`` at ``fidelity`` (converted to the metric's unit); with
    ``experiment``, only that recipe's rows (seeds of one recipe give the std; two recipes are not pooled)."""
    values, ids = [], []
    for row in rows:
        if row.get("reference") != entry.ref or row.get("fidelity") != fidelity:
            continue
        if experiment is not None and str(row.get("experiment") or "") != experiment:
            continue
        v = row_value(row, metric.name, conv)
        if v is None:
            continue
        values.append(v / metric.scale if metric.name in COMPLEXITY_METRICS else v)
        ids.append(row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line', '?')}")
    return Judgement(entry=entry, metric=metric, fidelity=fidelity, values=values, run_ids=ids)


# ---- claims --------------------------------------------------------------------------------------------

def _matches(row: dict, flt: dict) -> bool:
    for col, want in flt.items():
        have = (row.get("extra") or {}).get(col[6:]) if col.startswith("extra.") else row.get(col)
        wants = want if isinstance(want, list) else [want]
        if None in wants and have in (None, "", "None", "null"):
            continue
        if str(have) not in {str(w) for w in wants}:
            # numbers written differently ("5" vs "5.0")
            hv = _float(have)
            if hv is None or all(_float(w) != hv for w in wants):
                return False
    return True


@dataclass
class ClaimGroup:
    key: tuple
    better: list[float]
    worse: list[float]
    better_ids: list[str]
    worse_ids: list[str]
    fidelity: str | None

    @property
    def diff(self) -> float:
        return statistics.fmean(self.better) - statistics.fmean(self.worse)


@dataclass
class ClaimResult:
    claim: Claim
    groups: list[ClaimGroup]

    def held(self, group: ClaimGroup) -> bool:
        return group.diff >= self.claim.margin - 1e-9

    def enforced(self, group: ClaimGroup) -> bool:
        if self.claim.enforce is not None:
            return self.claim.enforce
        return group.fidelity == "paper"

    @property
    def status(self) -> str:
        if self.claim.metric is None:
            return "qualitative (no row comparison)"
        if not self.groups:
            return "not tested"
        held = [self.held(g) for g in self.groups]
        return "held" if all(held) else ("not held" if not any(held) else "mixed")

    def evidence(self) -> list[str]:
        out = []
        for g in self.groups:
            label = ", ".join(f"{k}={v}" for k, v in zip(self.claim.same, g.key)) or "all rows"
            out.append(f"{label}: better {statistics.fmean(g.better):.3f} (n={len(g.better)}; "
                       f"{' '.join(g.better_ids)}) − worse {statistics.fmean(g.worse):.3f} (n={len(g.worse)}; "
                       f"{' '.join(g.worse_ids)}) = {g.diff:+.3f} vs margin {self.claim.margin:+.3f} -> "
                       f"{'held' if self.held(g) else 'NOT held'}")
        return out


def evaluate_claim(claim: Claim, rows: list[dict], conv: Conventions | None = None) -> ClaimResult:
    """Group rows by the claim's ``same`` fields, average seeds per side, compare with the margin.

    Only ``paper`` and ``reduced`` rows take part (``smoke``/``adhoc`` rows are never judged), and only rows of
    the claim's own paper unless a side names ``paper`` itself (another paper's baseline of the same model is a
    different recipe: pooling it would compare unlike things)."""
    if claim.metric is None:
        return ClaimResult(claim=claim, groups=[])
    if claim.within_row is not None:
        return _evaluate_within_row(claim, rows, conv)
    better = claim.better if "paper" in claim.better else {**claim.better, "paper": claim.paper}
    worse = claim.worse if "paper" in claim.worse else {**claim.worse, "paper": claim.paper}
    groups: dict[tuple, dict] = {}
    for row in rows:
        if row.get("fidelity") not in ("paper", "reduced"):
            continue
        side = "better" if _matches(row, better) else ("worse" if _matches(row, worse) else None)
        if side is None:
            continue
        v = row_value(row, claim.metric, conv)
        if v is None:
            continue
        key = tuple(row.get(f, "") if not f.startswith("extra.") else (row.get("extra") or {}).get(f[6:])
                    for f in claim.same)
        g = groups.setdefault(key, {"better": [], "worse": [], "better_ids": [], "worse_ids": [], "fid": set()})
        g[side].append(v)
        g[side + "_ids"].append(row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line')}")
        g["fid"].add(row.get("fidelity"))
    out = []
    for key, g in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if g["better"] and g["worse"]:
            fid = g["fid"].pop() if len(g["fid"]) == 1 else None
            out.append(ClaimGroup(key=key, better=g["better"], worse=g["worse"], better_ids=g["better_ids"],
                                  worse_ids=g["worse_ids"], fidelity=fid))
    return ClaimResult(claim=claim, groups=out)


def _evaluate_within_row(claim: Claim, rows: list[dict], conv: Conventions | None) -> ClaimResult:
    """One group per matching row: ``metric >= min`` (worse side = the threshold), or
    ``metric - other >= margin`` (worse side = the row's ``other`` value)."""
    out = []
    better = claim.better if "paper" in claim.better else {**claim.better, "paper": claim.paper}
    for row in rows:
        if row.get("fidelity") not in ("paper", "reduced") or not _matches(row, better):
            continue
        v = row_value(row, claim.metric, conv)
        other = claim.within_row["other"]
        w = float(claim.within_row["min"]) if other is None else row_value(row, other, conv)
        if v is None or w is None:
            continue
        rid = row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line')}"
        out.append(ClaimGroup(key=(rid,), better=[v], worse=[w], better_ids=[rid],
                              worse_ids=["threshold" if other is None else other], fidelity=row.get("fidelity")))
    return ClaimResult(claim=claim, groups=out)


# ---- experiment configs --------------------------------------------------------------------------------

@dataclass
class ExperimentConfig:
    path: str
    paper: str | None
    name: str | None
    reference: str | None
    fidelity: str | None
    variant: str | None
    method: str | None
    data: str | None
    model: str | None
    command: str | None


def read_experiment(path: str, base: str) -> tuple[dict, dict, str]:
    """(top-level fields, config groups, text) of one experiment file, on top of the experiment files it
    extends through its defaults list (``- /experiment/<group>/<name>``)."""
    try:
        with open(path) as f:
            text = f.read()
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ReferenceError(f"{path}: not valid YAML: {e}") from None
    fields, groups = {}, {}
    for d in raw.get("defaults") or []:
        if isinstance(d, str) and d.startswith("/experiment/"):
            parent_fields, parent_groups, _ = read_experiment(os.path.join(base, d[len("/experiment/"):] + ".yaml"),
                                                               base)
            _merge(fields, parent_fields)
            groups.update(parent_groups)
        elif isinstance(d, dict):
            for k, v in d.items():
                groups[k.replace("override", "").strip().lstrip("/")] = v
    _merge(fields, {k: v for k, v in raw.items() if k != "defaults"})
    return fields, groups, text


def _merge(base: dict, over: dict) -> None:
    """Hydra-style override of nested mappings: ``over`` wins key by key."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def load_experiment_configs(conf_dir: str | os.PathLike = ROOT / "conf") -> list[ExperimentConfig]:
    """Plain-YAML view of ``conf/experiment/**.yaml`` (reference, fidelity, method/data/model overrides)."""
    out = []
    base = os.path.join(str(conf_dir), "experiment")
    for path in sorted(glob.glob(os.path.join(base, "**", "*.yaml"), recursive=True)):
        raw, groups, text = read_experiment(path, base)
        command = next((ln.lstrip("# ").strip() for ln in text.splitlines()
                        if ln.startswith("#") and ln.lstrip("# ").startswith("python ")), None)
        out.append(ExperimentConfig(path=path, paper=raw.get("paper"), name=raw.get("name"),
                                    reference=raw.get("reference"), fidelity=raw.get("fidelity"),
                                    variant=None if raw.get("variant") is None else str(raw.get("variant")),
                                    method=groups.get("method"), data=groups.get("data"), model=groups.get("model"),
                                    command=command))
    return out


def method_status(method: str | None, conf_dir: str | os.PathLike = ROOT / "conf") -> str:
    """'implemented', 'pending' (conf/method/<name>.yaml says implemented: false) or 'missing'."""
    if not method:
        return "missing"
    path = os.path.join(str(conf_dir), "method", f"{method}.yaml")
    if not os.path.exists(path):
        return "missing"
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    return "pending" if raw.get("implemented") is False else "implemented"

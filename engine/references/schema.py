"""Reference files (``results/reference/<paper>.yaml``): the papers' reported numbers as validated data.

The schema is described by the pydantic models below (``PaperReference`` > ``Conventions``, ``Entry`` >
``Metric`` > ``Band``, ``KnownGap``; ``Claim`` > ``Compare`` | ``WithinRow`` | qualitative); the models are the
objects the rest of the suite reads. ``load_reference(path)`` / ``load_references(directory)`` parse and validate;
a malformed file, an unknown field or value, a band of the wrong sign or a duplicate key raises ``ReferenceError``
with one message naming the file, the entry (or claim) and the field. ``lookup(refs, "<paper>:<key>")`` gives one
entry. Field by field: ``results/reference/README.md``.
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)

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
#: what an entry's rows are: our own training runs, or evaluations of the authors' released weights / exact
#: complexity recounts (reported "recounted", never "reproduced")
EVIDENCE = ("training", "recount")
#: unit -> scale to the suite's base unit (count, %, x, bits ...)
UNITS = {"count": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "%": 1.0, "pp": 1.0, "points": 1.0, "x": 1.0,
         "bits": 1.0, "rho": 1.0, "r": 1.0, "KB": 8e3, "MB": 8e6, "MiB": 8 * 2.0 ** 20, "ms": 1.0, "s": 1.0,
         "score": 1.0, "ratio": 1.0}
#: metrics that are complexity counts (compared in base units; `exact: true` allowed)
COMPLEXITY_METRICS = ("params", "flops", "macs", "bops", "ops", "size_bits", "nonzero_params")
ACCURACY_METRICS = ("top1", "top5", "top1_error", "top5_error")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+\-]*$")


class ReferenceError(ValueError):
    """A reference file, a results row or a claim is malformed; the message names file, entry/row and field."""


# ---- field types -----------------------------------------------------------------------------------------

#: a finite number (YAML int or float; a string, a bool, inf or nan is rejected)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: a two-sided band width, >= 0
Width = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
Flag = Annotated[bool, Field(strict=True)]
Text = Annotated[str, Field(strict=True, min_length=1)]


def _scalar_text(v: Any) -> Any:
    """YAML scalars written without quotes (``variant: 5``, ``text: 3x``) read as text."""
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _lower_name(v: Any) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f"expected a lowercase name ([a-z0-9_.+-]), got {v!r}")
    return v


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


# ---- models ----------------------------------------------------------------------------------------------

class Band(_Schema):
    """How far our mean may lie from the paper's number: the paper's own ± or the entry's floor, whichever is
    larger. Our seed spread is shown beside it and never widens it."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    paper_pm: Optional[Width] = None
    floor: Optional[Width] = None

    @model_validator(mode="after")
    def _positive(self) -> "Band":
        if not (self.paper_pm or self.floor):
            raise ValueError("band has no positive width (set paper_pm or floor)")
        return self

    def width(self) -> float:
        """max(paper's own ±, floor)."""
        return max(self.paper_pm or 0.0, self.floor or 0.0)


class Metric(_Schema):
    """One reported number of an entry. Neither ``band`` nor ``exact``: informational (shown, never judged);
    ``value: null``: a number the paper's notes do not have (a placeholder, never judged)."""
    value: Optional[Number]
    unit: Literal[tuple(UNITS)]   # type: ignore[valid-type]
    band: Optional[Band] = None
    exact: Flag = False
    notes: Optional[str] = None
    _name: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name

    @property
    def scale(self) -> float:
        return UNITS[self.unit]

    @model_validator(mode="after")
    def _needs_number(self) -> "Metric":
        if self.value is None and (self.band is not None or self.exact):
            raise ValueError("[value] a metric with a band or exact: true needs a number (null marks a number the "
                             "paper's notes do not have)")
        return self


class Conventions(_Schema):
    """The paper's counting convention (how its FLOPs / params were counted)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    flops: Literal[FLOPS_CONVENTIONS]   # type: ignore[valid-type]
    params: Literal[PARAMS_CONVENTIONS]   # type: ignore[valid-type]
    counter: Literal[COUNTERS]   # type: ignore[valid-type]
    bn_counted: Optional[Flag] = None
    input_res: Optional[tuple[int, ...]] = None
    notes: Optional[str] = None

    def __init__(self, *args: Any, **kw: Any):
        """Also ``Conventions("macs", "all", "thop-0.0.31")`` (flops, params, counter positionally)."""
        kw.update(zip(("flops", "params", "counter"), args))
        super().__init__(**kw)

    @field_validator("input_res", mode="before")
    @classmethod
    def _res(cls, v: Any) -> Any:
        if v is None:
            return None
        if not (isinstance(v, (list, tuple)) and len(v) in (1, 2, 3)
                and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
            raise ValueError(f"expected [C, H, W] of positive ints, got {v!r}")
        return tuple(v)


class KnownGap(_Schema):
    """A stated reason why some metrics of an entry do not match the paper; only those metrics are excused."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    metrics: tuple[str, ...] = Field(min_length=1)
    reason: Text
    # metric -> below | above: for that metric the gap explains only values on that side of the paper's (e.g. an
    # error lower than reported), so a deviation the other way is still judged out of band; unnamed: both sides
    sides: dict[str, Literal["below", "above"]] = Field(default_factory=dict)

    def __str__(self) -> str:
        return self.reason

    def covers(self, metric: str, deviation: float | None = None) -> bool:
        """``deviation`` = ours - paper (None: the side is not checked)."""
        if metric not in self.metrics:
            return False
        side = self.sides.get(metric)
        return side is None or deviation is None or (deviation < 0 if side == "below" else deviation > 0)


class Entry(_Schema):
    """One reported row of a paper (a table row, a README row, an abstract number)."""
    key: str
    table: Text
    dataset: Literal[DATASETS]   # type: ignore[valid-type]
    model: Text
    method: str
    variant: Optional[str] = None
    metrics: dict[str, Metric] = Field(min_length=1)
    source: Text
    protocol: dict = Field(default_factory=dict)
    verified: Flag
    known_gap: Optional[KnownGap] = None
    evidence: Literal[EVIDENCE] = "training"   # type: ignore[valid-type]
    #: experiments (names) citing a ``training`` entry whose rows are evaluations of released weights (recounts)
    recount_experiments: tuple[Annotated[str, Field(strict=True, min_length=1)], ...] = ()
    runnable: Any = True
    architecture: Any = None
    notes: Optional[str] = None
    _paper: str = PrivateAttr("")
    _path: str = PrivateAttr("")

    @property
    def paper(self) -> str:
        return self._paper

    @property
    def path(self) -> str:
        return self._path

    @property
    def ref(self) -> str:
        return f"{self.paper}:{self.key}"

    @property
    def not_runnable_reason(self) -> str | None:
        return self.runnable if isinstance(self.runnable, str) else None

    @property
    def recount(self) -> bool:
        """Our rows are evaluations of the authors' released weights or exact recounts: "recounted", never
        "reproduced"."""
        return self.evidence == "recount"

    def evidence_of(self, experiment: str | None = None) -> str:
        """``recount`` for a recount entry or one of its ``recount_experiments``, else ``training``."""
        name = str(experiment or "").rsplit("/", 1)[-1]     # "dns/<name>" (experiment file) or "<name>"
        return "recount" if self.recount or (name and name in self.recount_experiments) else "training"

    def gap(self, metric: str, deviation: float | None = None) -> str | None:
        """The known-gap reason when it covers ``metric`` (and ``deviation`` = ours - paper, when its side is
        stated); else None: that metric is judged as any other."""
        covered = self.known_gap is not None and self.known_gap.covers(metric, deviation)
        return self.known_gap.reason if covered else None

    @field_validator("key", "method", mode="before")
    @classmethod
    def _names(cls, v: Any) -> str:
        return _lower_name(v)

    @field_validator("variant", "notes", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        v = _scalar_text(v)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"expected a string or null, got {v!r}")
        return v

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("runnable")
    @classmethod
    def _runnable(cls, v: Any) -> Any:
        if not (v is True or (isinstance(v, str) and v.strip())):
            raise ValueError(f"expected true or a string saying why it cannot run here, got {v!r}")
        return v

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, (dict, str)):
            raise ValueError("expected a mapping of build_model kwargs (or a string naming where the architecture "
                             f"is specified), got {v!r}")
        return v

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name in v:
                _lower_name(name)
        return v

    @model_validator(mode="after")
    def _cross_fields(self, info: ValidationInfo) -> "Entry":
        for name, m in self.metrics.items():
            m._name = name
        models = (info.context or {}).get("models")
        if (models is not None and self.runnable is True and self.model not in models
                and not self.model.startswith("timm:")):
            raise ValueError(f"[model] {self.model!r} is not a registered model; use a suite model name, or set "
                             "runnable: '<why not>'")
        if self.recount and self.recount_experiments:
            raise ValueError("[recount_experiments] the whole entry is evidence: recount; list experiments only "
                             "for an entry whose other rows come from training")
        if self.known_gap is not None:
            unknown = [m for m in self.known_gap.metrics if m not in self.metrics]
            if unknown:
                raise ValueError(f"[known_gap.metrics] {unknown[0]!r} is not a metric of this entry; "
                                 f"metrics: {list(self.metrics)}")
        return self


class EqualOn(_Schema):
    """The arms are compared only where their means of ``metric`` agree within ``rel_tol`` (relative): e.g. a
    pruning ablation judged at equal compression."""
    metric: Text
    rel_tol: Number = Field(gt=0)


class ActsOn(_Schema):
    """The arm on ``side`` tests its method only where the seed mean of ``metric`` (a signal its runs log) lies
    above ``above`` or below ``below``; ``why`` says what the threshold means. Otherwise the comparison is
    inconclusive: a run whose method parameters did not move tests nothing."""
    metric: Text
    side: Literal["better", "worse"] = "better"
    above: Optional[Number] = None
    below: Optional[Number] = None
    why: Text

    @model_validator(mode="after")
    def _one_bound(self) -> "ActsOn":
        if (self.above is None) == (self.below is None):
            raise ValueError("[above] give exactly one of 'above' and 'below'")
        return self


class Compare(_Schema):
    """better-side rows minus worse-side rows of ``metric``, grouped by ``same``, against ``margin``; with
    ``equal``, only arms that agree on another metric are compared; with ``acts`` (one guard or a list, all
    required), only where the method's own signals show it acted (else inconclusive, saying why)."""
    metric: Text
    better: dict = Field(min_length=1)
    worse: dict = Field(min_length=1)
    same: list[Annotated[str, Field(strict=True)]]
    margin: Number
    equal: Optional[EqualOn] = None
    acts: list[ActsOn] = []

    @field_validator("acts", mode="before")
    @classmethod
    def _one_guard_is_a_list(cls, v):
        return [v] if isinstance(v, dict) else ([] if v is None else v)


class WithinRow(_Schema):
    """A statement about each matching row on its own: ``metric >= min``, or ``metric - other >= margin``."""
    filter: dict = Field(min_length=1)
    metric: Text
    min: Optional[Number] = None
    other: Optional[str] = None
    margin: Optional[Number] = None

    @model_validator(mode="after")
    def _one_of(self) -> "WithinRow":
        if (self.min is None) == (self.other is None):
            raise ValueError("[min] give exactly one of 'min' or 'other' (+ 'margin')")
        return self

    def __getitem__(self, item: str) -> Any:
        return getattr(self, item)


class Supersession(_Schema):
    """A claim whose design later claims of the same paper replaced (``by``, ``why``): kept and shown, never judged."""
    by: list[Annotated[str, Field(strict=True, min_length=1)]] = Field(min_length=1)
    why: Text


class Claim(_Schema):
    """A paper's comparative statement: ``compare`` (two sets of rows), ``within_row`` (each row on its own) or
    neither (qualitative: ``notes`` say how it is checked; reported, not tested).

    The flat view the judge reads: ``metric`` (None: qualitative), ``better``, ``worse``, ``same``, ``margin``,
    ``equal`` (None, or the metric on which the arms must agree)."""
    id: str
    text: str
    source: str
    compare: Optional[Compare] = None
    within_row: Optional[WithinRow] = None
    enforce: Optional[Flag] = None      # None: enforced for paper-fidelity groups only
    verified: Optional[Flag] = None
    superseded: Optional[Supersession] = None
    notes: Any = None
    _paper: str = PrivateAttr("")
    _flat: dict = PrivateAttr(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _name(cls, v: Any) -> str:
        return _lower_name(v)

    @field_validator("text", "source", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return _scalar_text(v)

    @model_validator(mode="after")
    def _shape(self) -> "Claim":
        if self.compare is not None and self.within_row is not None:
            raise ValueError("[within_row] give either 'compare' or 'within_row', not both")
        if self.superseded is not None:
            if self.enforce:
                raise ValueError("[enforce] a superseded claim is never judged, so it cannot be enforced")
            self.enforce = False
        if self.compare is not None:
            c = self.compare
            self._flat = dict(metric=c.metric, better=dict(c.better), worse=dict(c.worse), same=list(c.same),
                              margin=c.margin, equal=c.equal, acts=list(c.acts))
        elif self.within_row is not None:
            w = self.within_row
            self._flat = dict(metric=w.metric, better=dict(w.filter), worse={}, same=["run_id"],
                              margin=0.0 if w.min is not None else (w.margin or 0.0), acts=[])
        else:
            if not self.notes:
                raise ValueError("[compare] a claim without 'compare' must say in 'notes' how it is checked")
            if self.enforce:
                raise ValueError("[enforce] only a claim with 'compare' can be enforced")
            self.enforce = False
            self._flat = dict(metric=None, better={}, worse={}, same=[], margin=None, acts=[])
        return self

    @property
    def paper(self) -> str:
        return self._paper

    @property
    def kind(self) -> str:
        """compare / within_row / qualitative."""
        return "compare" if self.compare else ("within_row" if self.within_row else "qualitative")

    def _get(name: str):   # noqa: N805 - property factory
        def get(self):
            return self._flat.get(name)

        def set_(self, value):
            self._flat[name] = value
        return property(get, set_)

    metric = _get("metric")
    better = _get("better")
    worse = _get("worse")
    same = _get("same")
    margin = _get("margin")
    equal = _get("equal")
    acts = _get("acts")
    del _get


class PaperReference(_Schema):
    """One ``results/reference/<paper>.yaml``."""
    paper: str
    title: Text
    arxiv: Optional[str] = None
    venue: Optional[str] = None
    code: Optional[str] = None
    conventions: Conventions
    entry_list: list[Entry] = Field(alias="entries")
    claims: list[Claim]
    notes: Any = None
    facts: Any = None
    _path: str = PrivateAttr("")

    @field_validator("arxiv", "venue", "code", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return _scalar_text(v)

    @property
    def path(self) -> str:
        return self._path

    @property
    def entries(self) -> dict[str, Entry]:
        """key -> entry, in file order (the YAML holds a list)."""
        return {e.key: e for e in self.entry_list}


# ---- YAML with duplicate-key detection -------------------------------------------------------------------

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


# ---- pydantic errors -> one ReferenceError message ---------------------------------------------------------

_MODEL_AT = {"": PaperReference, "conventions": Conventions, "entries.*": Entry, "entries.*.metrics.*": Metric,
             "entries.*.metrics.*.band": Band, "entries.*.known_gap": KnownGap, "claims.*": Claim,
             "claims.*.compare": Compare, "claims.*.compare.equal": EqualOn,
             "claims.*.compare.acts.*": ActsOn, "claims.*.within_row": WithinRow,
             "claims.*.superseded": Supersession}
_MARK = re.compile(r"^\[([^\]]+)\] (.*)$", re.S)


def _allowed(loc: tuple) -> list[str]:
    parts = []
    for i, p in enumerate(loc):
        parts.append("*" if isinstance(p, int) or (i >= 1 and loc[i - 1] == "metrics") else str(p))
    model = _MODEL_AT.get(".".join(parts))
    return sorted(f.alias or n for n, f in model.model_fields.items()) if model else []


def _message(err: dict) -> tuple[tuple, str]:
    """(location, words) of one pydantic error, in the suite's phrasing."""
    loc = tuple(p for p in err["loc"] if p != "[key]")
    t, got, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if t == "extra_forbidden":
        return loc, f"unknown field; allowed: {_allowed(loc[:-1])}"
    if t == "missing":
        return loc, "required field is missing"
    if t == "literal_error":
        return loc, f"unknown value {got!r}; allowed: [{ctx.get('expected', '')}]"
    if t in ("bool_type", "bool_parsing"):
        return loc, f"expected true/false, got {got!r}"
    if t in ("float_type", "float_parsing", "finite_number", "int_type", "int_parsing"):
        return loc, f"expected a finite number, got {got!r}"
    if t == "greater_than_equal":
        return loc, f"must be >= 0 (a band is a two-sided width), got {got!r}"
    if t == "greater_than":
        return loc, f"must be > {ctx.get('gt', 0)}, got {got!r}"
    if t in ("dict_type", "model_type", "model_attributes_type"):
        return loc, f"expected a mapping, got {type(got).__name__}"
    if t in ("list_type", "tuple_type"):
        return loc, f"expected a list, got {got!r}"
    if t in ("string_type", "string_too_short"):
        return loc, f"expected a non-empty string, got {got!r}"
    if t == "too_short":
        return loc, f"expected a non-empty {'mapping' if isinstance(got, dict) else 'list'}, got {got!r}"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    mark = _MARK.match(msg)
    if mark:
        return loc + tuple(mark.group(1).split(".")), mark.group(2)
    return loc, msg


def _what(raw: Any, loc: tuple) -> tuple[str | None, tuple]:
    """('entry 'key'' / 'claim #i' / None, the rest of the location) of an error location."""
    if len(loc) >= 2 and loc[0] in ("entries", "claims") and isinstance(loc[1], int):
        kind, idx = ("entry", "key") if loc[0] == "entries" else ("claim", "id")
        items = raw.get(loc[0]) if isinstance(raw, dict) else None
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        name = item.get(idx) if isinstance(item, dict) else None
        return (f"{kind} '{name}'" if isinstance(name, str) and name else f"{kind} #{loc[1]}"), loc[2:]
    return None, loc


def _where(path: str, what: str | None, fld: str) -> str:
    return f"{path}: {what + ': ' if what else ''}field '{fld}'"


def _reference_error(path: str, raw: Any, e: ValidationError) -> ReferenceError:
    # an unknown field first: a misspelt field is usually why a required one is "missing"
    errors = sorted(e.errors(include_url=False), key=lambda err: err["type"] != "extra_forbidden")
    loc, words = _message(errors[0])
    what, rest = _what(raw, loc)
    fld = ".".join(str(p) for p in rest) or "<top>"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return ReferenceError(f"{_where(path, what, fld)}: {words}{more}")


def _registered_models() -> set[str] | None:
    try:
        from models import MODELS
        return set(MODELS.list())
    except Exception:   # noqa: BLE001 - models unavailable: skip the check rather than guess
        return None


# ---- loading ---------------------------------------------------------------------------------------------

def load_reference(path: str | os.PathLike, check_models: bool = True) -> PaperReference:
    """Parse and validate one reference file (schema: results/reference/README.md)."""
    path = str(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ReferenceError(f"{_where(path, None, '<top>')}: expected a mapping, got {type(raw).__name__}")
    context = {"models": _registered_models() if check_models else None}
    try:
        ref = PaperReference.model_validate(raw, context=context)
    except ValidationError as e:
        raise _reference_error(path, raw, e) from None
    stem = Path(path).stem
    if ref.paper != stem:
        raise ReferenceError(f"{_where(path, None, 'paper')}: {ref.paper!r} must equal the file name {stem!r}")
    ref._path = path
    entries: dict[str, Entry] = {}
    for i, entry in enumerate(ref.entry_list):
        if entry.key in entries:
            raise ReferenceError(f"{_where(path, f'entry {entry.key!r} (#{i})', 'key')}: duplicate key")
        entry._paper, entry._path = stem, path
        entries[entry.key] = entry
    seen: set[str] = set()
    for i, claim in enumerate(ref.claims):
        if claim.id in seen:
            raise ReferenceError(f"{_where(path, f'claim {claim.id!r} (#{i})', 'id')}: duplicate id")
        seen.add(claim.id)
        claim._paper = stem
    for i, claim in enumerate(ref.claims):
        unknown = [c for c in (claim.superseded.by if claim.superseded else []) if c not in seen or c == claim.id]
        if unknown:
            raise ReferenceError(f"{_where(path, f'claim {claim.id!r} (#{i})', 'superseded.by')}: {unknown} is not "
                                 f"another claim id of {stem}.yaml")
    return ref


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

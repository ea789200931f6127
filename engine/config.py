"""Config checks at start: every key is known (trainer: typed schema; other groups: engine/config_keys.py),
every choice is allowed, every number is in its range, names are plain file names.

Hydra already refuses command-line overrides of keys that do not exist; these checks also catch
misspelt keys in config files, ``+group.key=...`` additions and bad values, with a message naming the key
and the allowed values.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engine import config_keys
from engine.checkpoint import CheckpointError, run_folder_of
from engine.optim import OPTIMIZERS, SCHEDULERS


class ConfigError(ValueError):
    pass


@dataclass
class OptimizerSchema:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    no_decay_bn_bias: bool = False
    decay_conv_only: bool = False      # optional key (absent from conf/trainer/default.yaml): see engine/optim.py


@dataclass
class SchedulerSchema:
    name: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 30
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    power: float = 0.75
    min_lr_scale: float = 0.0


@dataclass
class DistillSchema:
    teacher: Any = None
    teacher_pretrained: bool = True
    teacher_checkpoint: Optional[str] = None
    alpha: float = 0.9
    temperature: float = 4.0


@dataclass
class TrainerSchema:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    optimizer: OptimizerSchema = field(default_factory=OptimizerSchema)
    scheduler: SchedulerSchema = field(default_factory=SchedulerSchema)
    label_smoothing: float = 0.0
    distill: DistillSchema = field(default_factory=DistillSchema)
    init_checkpoint: Optional[str] = None
    precision: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    device: str = "auto"
    num_threads: Optional[int] = None
    resume: str = "auto"
    eval_every: int = 1
    limit_batches: Optional[int] = None
    limit_eval_batches: Optional[int] = None
    max_steps: Optional[int] = None
    log_every: Optional[int] = None
    progress: bool = True
    deterministic: bool = False
    latency: bool = False


CHOICES = {
    "trainer.optimizer.name": OPTIMIZERS,
    "trainer.scheduler.name": SCHEDULERS,
    "trainer.precision": ("auto", "fp32", "bf16"),
    "trainer.channels_last": ("auto", "true", "false", True, False),
    "trainer.device": ("auto", "cpu", "cuda"),
    "fidelity": ("paper", "reduced", "smoke", "adhoc"),
    "logger.name": ("wandb", "csv", "none"),
}
LOGGER_MODES = ("offline", "online", "disabled")
DATASET_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar10_jpeg": 10, "cifar100": 100}
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class Range(NamedTuple):
    ok: Callable[[Any], bool]
    expected: str


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def at_least(low) -> Range:
    return Range(lambda v: _number(v) and v >= low, f">= {low}")


POSITIVE = Range(lambda v: _number(v) and v > 0, "> 0")
FRACTION = Range(lambda v: _number(v) and 0 <= v < 1, "in [0, 1)")
UNIT = Range(lambda v: _number(v) and 0 <= v <= 1, "in [0, 1]")
COUNT_OR_NULL = Range(lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                      "an integer >= 1, or null for no limit")
TRAINER_RANGES = {
    "epochs": at_least(0), "batch_size": POSITIVE, "eval_batch_size": POSITIVE,
    "optimizer.lr": POSITIVE, "optimizer.momentum": FRACTION, "optimizer.weight_decay": at_least(0),
    "scheduler.warmup_epochs": at_least(0), "scheduler.step_size": POSITIVE, "scheduler.gamma": at_least(0),
    "scheduler.power": at_least(0), "scheduler.min_lr_scale": UNIT,
    "label_smoothing": FRACTION, "distill.alpha": UNIT, "distill.temperature": POSITIVE,
    "eval_every": at_least(1), "log_every": COUNT_OR_NULL, "limit_batches": COUNT_OR_NULL,
    "limit_eval_batches": COUNT_OR_NULL, "max_steps": COUNT_OR_NULL, "num_threads": COUNT_OR_NULL,
}


def _allowed_keys(path: list[str]) -> list[str]:
    schema = TrainerSchema
    for part in path:
        f = schema.__dataclass_fields__.get(part)
        if f is None or not hasattr(f.default_factory, "__dataclass_fields__"):
            break
        schema = f.default_factory
    return list(schema.__dataclass_fields__)


def checked_trainer(trainer_cfg, where: str = "trainer"):
    """``trainer_cfg`` merged onto the schema: unknown keys and wrong types fail naming the key."""
    try:
        return OmegaConf.merge(OmegaConf.structured(TrainerSchema), trainer_cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        first_line = str(e).splitlines()[0]
        if "not in" in first_line:
            allowed = _allowed_keys(key.split(".")[:-1])
            raise ConfigError(f"{where}.{key}: unknown key; allowed here: {', '.join(allowed)}") from None
        raise ConfigError(f"{where}.{key}: {first_line}") from None


def check_trainer_ranges(tcfg, where: str = "trainer") -> None:
    for key, allowed in TRAINER_RANGES.items():
        value = OmegaConf.select(tcfg, key)
        if not allowed.ok(value):
            raise ConfigError(f"{where}.{key}={value!r} is out of range: expected {allowed.expected}")
    betas = list(tcfg.optimizer.betas)
    if len(betas) != 2 or not all(FRACTION.ok(b) for b in betas):
        raise ConfigError(f"{where}.optimizer.betas={betas} is out of range: expected two numbers in [0, 1)")


def check_keys(cfg) -> None:
    """Unknown keys at the top level and in the data, model, method and logger groups fail naming the key."""
    from models import MODELS

    problems = config_keys.unknown_keys(cfg, config_keys.top_level_keys(), "config", recurse=True)
    problems = [p.replace("config.", "", 1) for p in problems]
    for group in ("data", "method", "logger"):
        allowed = config_keys.group_keys(group, cfg[group].name)
        if allowed is not None:
            problems += config_keys.unknown_keys(cfg[group], allowed, group, recurse=group == "data")
    allowed = config_keys.model_keys(cfg.model.name, MODELS.get(cfg.model.name))
    if allowed is not None:
        problems += config_keys.unknown_keys(cfg.model, allowed, "model", recurse=False)
    if problems:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def check_model_name(name: str) -> None:
    """``timm:<arch>`` names an architecture timm knows."""
    if name.startswith("timm:"):
        import timm

        arch = name[len("timm:"):]
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"model.name={name!r}: timm has no architecture '{arch}'{hint} (see timm.list_models())")


def check_run_values(cfg) -> None:
    """Seed, names, data sizes and ``trainer.resume``: types and ranges the trainer schema cannot express."""
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed={cfg.seed!r} is not an integer")
    for key in ("name", "paper"):
        value = cfg.get(key)
        if value is not None and (not isinstance(value, str) or not PLAIN_NAME.fullmatch(value) or
                                  value.strip(".") == ""):
            raise ConfigError(f"{key}={value!r} is not a plain file name: use letters, digits, '_', '-' and '.' "
                              f"(it names the results CSV and the run folder)")
    for key in ("train_subset", "test_subset"):
        if not COUNT_OR_NULL.ok(cfg.data.get(key)):
            raise ConfigError(f"data.{key}={cfg.data.get(key)!r} is out of range: expected {COUNT_OR_NULL.expected}")
    expected = DATASET_CLASSES.get(cfg.data.name)
    if expected is not None and cfg.data.get("num_classes") != expected:
        raise ConfigError(f"data.num_classes={cfg.data.get('num_classes')!r} does not match {cfg.data.name}, "
                          f"which has {expected} classes")
    resume = cfg.trainer.resume
    if resume not in ("auto", "never") and not os.path.isfile(str(resume)):
        raise ConfigError(f"trainer.resume={resume!r}: expected auto, never, or the path of a checkpoint file "
                          f"(last.pt or final.pt of a run); no such file")
    try:
        run_folder_of(str(resume))
    except CheckpointError as e:
        raise ConfigError(str(e)) from None


def check_choice(cfg, key: str, allowed) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def validate(cfg, unknown_keys: bool = True) -> None:
    """Fail fast, naming the key, before any data is loaded. ``unknown_keys=False`` skips the unknown-key check of
    the groups outside ``trainer`` (a checkpoint's stored config may hold keys from an older version of conf/)."""
    from data import DATASETS
    from methods import METHODS
    from models import MODELS

    for group in ("data", "model", "method", "trainer", "logger"):
        if OmegaConf.select(cfg, group) is None:
            raise ConfigError(f"config group '{group}' is missing (add {group}=<name>)")
    check_trainer_ranges(checked_trainer(cfg.trainer))
    check_model_name(str(cfg.model.name))
    for key, allowed in CHOICES.items():
        check_choice(cfg, key, allowed)
    if cfg.logger.name == "wandb":
        check_choice(cfg, "logger.mode", LOGGER_MODES)
    for key, registry in (("data.name", DATASETS), ("model.name", MODELS), ("method.name", METHODS)):
        name = OmegaConf.select(cfg, key)
        try:
            registry.get(name)
        except KeyError as e:
            if key == "method.name" and cfg.method.get("implemented") is False:
                raise ConfigError(f"method '{name}' has a config and references but is not implemented yet "
                                  f"(conf/method/{name}.yaml says implemented: false)") from None
            raise ConfigError(f"{key}: {e}") from None
    for stage in cfg.method.get("stages") or []:
        if "name" not in stage:
            raise ConfigError("method.stages: every stage needs a 'name'")
        where = f"method.stages[{stage.name}].trainer"
        check_trainer_ranges(checked_trainer(OmegaConf.merge(cfg.trainer, stage.get("trainer") or {}), where), where)
    if unknown_keys:
        check_keys(cfg)
    check_run_values(cfg)

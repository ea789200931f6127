"""Config checks at start: every key of the trainer and logger is known and typed, every choice is allowed.

Hydra already refuses command-line overrides of keys that do not exist; these checks also catch
misspelt keys in config files and bad values, with a message naming the key and the allowed values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

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
    resume: str = "auto"
    eval_every: int = 1
    limit_batches: Optional[int] = None
    limit_eval_batches: Optional[int] = None
    max_steps: Optional[int] = None
    log_every: int = 50
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


def check_choice(cfg, key: str, allowed) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def validate(cfg) -> None:
    """Fail fast, naming the key, before any data is loaded."""
    from data import DATASETS
    from methods import METHODS
    from models import MODELS

    for group in ("data", "model", "method", "trainer", "logger"):
        if OmegaConf.select(cfg, group) is None:
            raise ConfigError(f"config group '{group}' is missing (add {group}=<name>)")
    checked_trainer(cfg.trainer)
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
        checked_trainer(OmegaConf.merge(cfg.trainer, stage.get("trainer") or {}), f"method.stages[{stage.name}].trainer")
    if cfg.trainer.batch_size <= 0 or cfg.trainer.epochs < 0:
        raise ConfigError("trainer.batch_size must be > 0 and trainer.epochs >= 0")

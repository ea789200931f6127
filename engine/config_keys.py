"""Unknown keys outside ``trainer``: each group's allowed keys are read from its option files in ``conf/``.

``data`` and ``method``: the keys of every ``conf/<group>/*.yaml`` whose ``name`` is the configured name (an
option extending another of its group, like ``data/mnist_caffe``, includes its parent's keys; every method may also
have ``stages`` and ``seed``, read by methods/base.py); ``data``'s nested blocks (``augment``) are checked too.
``model``: its option files' keys and the factory's keyword arguments. ``logger`` and the top level: the keys of
their own files. A key outside these sets is a misspelling or a key that no code reads; to add one, add it (with
its default) to the option file.
"""
from __future__ import annotations

import difflib
import functools
import glob
import inspect
import os

from omegaconf import DictConfig, OmegaConf

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
MODEL_BUILD_KEYS = {"name", "pretrained", "channel_config"}   # models.build_model's own arguments
MODEL_SHAPE_KEYS = {"num_classes", "in_channels", "image_size"}  # given by the data, never by the model config
METHOD_BASE_KEYS = ("stages", "seed")   # read by methods/base.py for every method


@functools.cache
def _option(group: str, option: str) -> DictConfig:
    """An option file with the same-group parents of its ``defaults`` list merged under it."""
    raw = OmegaConf.load(os.path.join(CONF, group, f"{option}.yaml"))
    parents = [d for d in raw.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
    return OmegaConf.merge(*[_option(group, p) for p in parents], raw)


@functools.cache
def group_keys(group: str, name: str) -> DictConfig | None:
    """The union of the option files of ``group`` whose ``name`` is ``name`` (None when no file has it)."""
    options = [os.path.basename(p)[:-5] for p in sorted(glob.glob(os.path.join(CONF, group, "*.yaml")))]
    matching = [_option(group, o) for o in options if _option(group, o).get("name") == name]
    if not matching:
        return None
    base = [OmegaConf.create(dict.fromkeys(METHOD_BASE_KEYS))] if group == "method" else []
    return OmegaConf.merge(*matching, *base)


def unknown_keys(node, allowed, where: str, recurse: bool) -> list[str]:
    """Keys of ``node`` not in ``allowed`` (``<where>.<key>: ... allowed here: ...``), nested blocks if asked. A key
    set to null counts as absent (an experiment switching methods blanks the keys of the one it inherited)."""
    found = []
    for key in node:
        if key not in allowed and node[key] is not None:
            close = difflib.get_close_matches(str(key), [str(k) for k in allowed], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            found.append(f"{where}.{key}: unknown key{hint}; allowed here: {', '.join(map(str, allowed))}")
        elif recurse and isinstance(node[key], DictConfig) and isinstance(allowed[key], DictConfig) and allowed[key]:
            found += unknown_keys(node[key], allowed[key], f"{where}.{key}", recurse)
    return found


def model_keys(name: str, factory) -> list[str] | None:
    """Keys a model config may hold; None when its factory takes any keyword (torchvision, timm)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    from_files = group_keys("model", name)
    return sorted((MODEL_BUILD_KEYS | {p.name for p in params} | set(from_files or ())) - MODEL_SHAPE_KEYS)


def top_level_keys() -> DictConfig:
    """The root config's keys (``config.yaml`` and ``evaluate.yaml``, which extends it), ``paths`` from its group."""
    root = OmegaConf.merge(*(OmegaConf.load(os.path.join(CONF, f)) for f in ("config.yaml", "evaluate.yaml")))
    root.pop("defaults", None)
    root.paths = _option("paths", "default")
    return OmegaConf.merge(root, {g: None for g in ("data", "model", "method", "trainer", "logger", "hydra")})

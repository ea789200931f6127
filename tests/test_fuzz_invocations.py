"""Bad invocations of train.py and evaluate.py, run in-process: each must exit non-zero with a message that names
the key or file, and print no traceback.

An invocation is composed as the command line would be and handed to the script's ``main`` (the Hydra-decorated
function, with the same error wrapper); one that Hydra itself refuses while composing is run through the real
command-line path instead (``runpy``), so its printed message is the one a user sees.
"""
from __future__ import annotations

import contextlib
import glob
import io
import os
import runpy
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from conftest import CONF, ROOT, SHARED_DATA

TINY_DATA = ["data=synthetic", "data.train_size=32", "data.test_size=16", "data.image_size=8", "data.in_channels=1",
             "data.mean=[0.5]", "data.std=[0.25]"]
TINY_RUN = ["model=lenet300_100", "trainer.epochs=1", "trainer.batch_size=16", "trainer.eval_batch_size=16"]

# (script, arguments, text the message must contain); {name} fills in a file made by the ``files`` fixture
CASES = [
    # unknown keys, in every group and at the top level
    ("train", ["+data.foo=1"], "data.foo"),
    ("train", ["+method.strength=0.5"], "method.strength"),
    ("train", ["+model.depth=3"], "model.depth"),
    ("train", ["+logger.foo=1"], "logger.foo"),
    ("train", ["+foo=1"], "foo: unknown key"),
    ("train", ["+paths.scratch=x"], "paths.scratch"),
    ("train", ["+data.augment.rotate=1"], "data.augment.rotate"),
    ("train", ["trainer.foo=1"], "trainer.foo"),
    ("train", ["+trainer.optimizer.lrr=0.1"], "trainer.optimizer.lrr"),
    ("train", ["+trainer.scheduler.warmup=1"], "trainer.scheduler.warmup"),
    ("train", ["method=dns", "+method.gama=1"], "method.gama"),
    ("train", ["model=resnet20", "+model.width=2"], "model.width"),
    ("evaluate", ["+method.strength=0.5", "checkpoint={final}"], "method.strength"),
    ("evaluate", ["+data.foo=1", "checkpoint={final}"], "data.foo"),
    # names that are not registered
    ("train", ["data=cifar11"], "cifar11"),
    ("train", ["model=resnet21"], "resnet21"),
    ("train", ["method=sdbnn"], "sdbnn"),
    ("train", ["model.name=resnet21"], "resnet21"),
    ("train", ["model.name=timm:nosuchnet"], "nosuchnet"),
    ("train", ["logger=wandb", "logger.mode=onlin"], "logger.mode"),
    ("train", ["trainer.optimizer.name=sgdd"], "trainer.optimizer.name"),
    ("train", ["trainer.scheduler.name=cos"], "trainer.scheduler.name"),
    ("train", ["fidelity=full"], "fidelity"),
    ("train", ["trainer.precision=fp16"], "trainer.precision"),
    ("train", ["trainer.device=tpu"], "trainer.device"),
    ("train", ["trainer.num_threads=0"], "trainer.num_threads"),
    # types and ranges
    ("train", ["trainer.optimizer.momentum=2"], "trainer.optimizer.momentum"),
    ("train", ["trainer.optimizer.momentum=-0.1"], "trainer.optimizer.momentum"),
    ("train", ["trainer.optimizer.weight_decay=-1"], "trainer.optimizer.weight_decay"),
    ("train", ["trainer.optimizer.lr=-1"], "trainer.optimizer.lr"),
    ("train", ["trainer.optimizer.lr=0"], "trainer.optimizer.lr"),
    ("train", ["trainer.optimizer.lr=nan"], "trainer.optimizer.lr"),
    ("train", ["trainer.optimizer.betas=[0.9]"], "trainer.optimizer.betas"),
    ("train", ["trainer.scheduler.warmup_epochs=-1"], "trainer.scheduler.warmup_epochs"),
    ("train", ["trainer.scheduler.min_lr_scale=2"], "trainer.scheduler.min_lr_scale"),
    ("train", ["trainer.label_smoothing=2"], "trainer.label_smoothing"),
    ("train", ["trainer.label_smoothing=-0.1"], "trainer.label_smoothing"),
    ("train", ["trainer.limit_batches=0"], "trainer.limit_batches"),
    ("train", ["trainer.limit_eval_batches=0"], "trainer.limit_eval_batches"),
    ("train", ["trainer.max_steps=0"], "trainer.max_steps"),
    ("train", ["trainer.eval_every=0"], "trainer.eval_every"),
    ("train", ["trainer.log_every=0"], "trainer.log_every"),
    ("train", ["trainer.epochs=-1"], "trainer.epochs"),
    ("train", ["trainer.epochs=ten"], "trainer.epochs"),
    ("train", ["trainer.batch_size=0"], "trainer.batch_size"),
    ("train", ["trainer.eval_batch_size=0"], "trainer.eval_batch_size"),
    ("train", ["trainer.distill.alpha=2"], "trainer.distill.alpha"),
    ("train", ["trainer.distill.temperature=0"], "trainer.distill.temperature"),
    ("train", ["data.train_subset=-5"], "data.train_subset"),
    ("train", ["data.train_subset=0"], "data.train_subset"),
    ("train", ["data.test_subset=-1"], "data.test_subset"),
    ("train", ["seed=abc"], "seed"),
    ("train", ["seed=1.5"], "seed"),
    ("train", ["data=mnist", "data.num_classes=5"], "data.num_classes"),
    ("train", ["trainer.batch_size=100000"], "trainer.batch_size"),
    ("train", ["trainer.optimizer.lr=1e30"], "trainer.optimizer.lr"),
    # names that become file names
    ("train", ["name=../escaped"], "name="),
    ("train", ["paper=../../escaped_paper"], "paper="),
    ("train", ["name='a b'"], "name="),
    ("train", ["name=.."], "name="),
    ("train", ["paper='x*?'"], "paper="),
    # resume and init checkpoints
    ("train", ["trainer.resume=maybe"], "trainer.resume"),
    ("train", ["trainer.resume={missing}"], "trainer.resume"),
    ("train", ["trainer.resume={folder}"], "trainer.resume"),
    ("train", ["trainer.resume={truncated}"], "inside a run folder"),
    ("train", ["trainer.init_checkpoint={missing}"], "{missing}"),
    ("train", ["trainer.init_checkpoint={truncated}"], "{truncated}"),
    ("train", ["trainer.init_checkpoint={empty}"], "{empty}"),
    ("train", ["trainer.init_checkpoint={text}"], "{text}"),
    ("train", ["trainer.init_checkpoint={folder}"], "{folder}"),
    ("train", ["trainer.init_checkpoint={other_model}"], "{other_model}"),
    ("train", ["trainer.init_checkpoint={tensor}"], "{tensor}"),
    ("train", ["trainer.init_checkpoint={pickled_object}"], "{pickled_object}"),
    ("train", ["trainer.distill.teacher=lenet300_100", "trainer.distill.teacher_checkpoint={truncated}"],
     "{truncated}"),
    # evaluate.py
    ("evaluate", [], "checkpoint="),
    ("evaluate", ["model=resnet20"], "checkpoint="),
    ("evaluate", ["checkpoint={missing}"], "{missing}"),
    ("evaluate", ["checkpoint={truncated}"], "{truncated}"),
    ("evaluate", ["checkpoint={empty}"], "{empty}"),
    ("evaluate", ["checkpoint={text}"], "{text}"),
    ("evaluate", ["checkpoint={folder}"], "{folder}"),
    ("evaluate", ["checkpoint={other_model}"], "{other_model}"),
    ("evaluate", ["checkpoint={final}", "model=lenet5"], "model"),
    ("evaluate", ["checkpoint={final}", "method=dns"], "method"),
    # data files
    ("train", ["data=mnist", "data.root={nowhere}"], "{nowhere}"),
    ("train", ["data=mnist", "data.root={mnist_truncated}"], "train-images-idx3-ubyte"),
    ("train", ["data=mnist", "data.root={mnist_bad_magic}"], "train-labels-idx1-ubyte"),
    ("train", ["data=mnist", "data.root={mnist_label_count}"], "t10k-labels-idx1-ubyte"),
    ("train", ["data=voc", "model=ssd_tiny", "data.image_size=64", "data.root={nowhere}"], "Annotations"),
    ("train", ["data=voc_synthetic", "model=ssd_tiny", "data.ap_metric=coco"], "data.ap_metric"),
    # output folders
    ("train", ["paths.output_dir={blocked}/outputs"], "{blocked}"),
    ("train", ["paths.results_dir={blocked}/results"], "{blocked}"),
]
# run through the real command line (Hydra makes its run folder in paths.output_dir before main runs)
COMMAND_LINE_CASES = [
    ("train", ["paths.output_dir={blocked}/outputs"], "paths.output_dir={blocked}/outputs cannot be written"),
    ("train", ["paths.results_dir={blocked}/results"], "paths.results_dir={blocked}/results cannot be written"),
    ("evaluate", ["paths.output_dir={blocked}/outputs"], "paths.output_dir={blocked}/outputs cannot be written"),
    ("train", ["+method.strength=0.5"], "method.strength"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained checkpoint of the tiny run and damaged or foreign files to feed the scripts."""
    from models import build_model

    tmp = tmp_path_factory.mktemp("fuzz")
    exit_code, text = invoke("train", [], tmp)
    assert exit_code == 0, text
    final = next(str(p) for p in (tmp / "outputs").rglob("final.pt"))
    raw = open(final, "rb").read()
    paths = {"final": final, "missing": str(tmp / "missing.pt"), "folder": str(tmp), "nowhere": str(tmp / "nowhere")}
    for name, content in (("truncated", raw[: len(raw) // 2]), ("empty", b""), ("text", b"not a checkpoint\n")):
        paths[name] = str(tmp / f"{name}.pt")
        open(paths[name], "wb").write(content)
    for name, obj in (("other_model", {"model": build_model("lenet5", num_classes=10, in_channels=1).state_dict()}),
                      ("tensor", torch.zeros(3)), ("pickled_object", {"model": os.path.join})):
        paths[name] = str(tmp / f"{name}.pt")
        torch.save(obj, paths[name])
    paths.update(damaged_mnist_copies(tmp))
    paths["blocked"] = str(tmp / "a_file")
    open(paths["blocked"], "w").close()
    return paths


def damaged_mnist_copies(tmp) -> dict:
    """Copies of the MNIST IDX files with one file damaged each (truncated, wrong magic, fewer labels)."""
    src = os.path.join(SHARED_DATA, "MNIST", "raw")
    damage = {"mnist_truncated": ("train-images-idx3-ubyte", lambda b: b[:1000]),
              "mnist_bad_magic": ("train-labels-idx1-ubyte", lambda b: b"\x00\x00\x08\x03" + b[4:]),
              "mnist_label_count": ("t10k-labels-idx1-ubyte", lambda b: b[:4] + (9999).to_bytes(4, "big") + b[8:-1])}
    out = {}
    for key, (broken, change) in damage.items():
        raw = tmp / key / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
            target = raw / name
            if name == broken:
                target.write_bytes(change(open(os.path.join(src, name), "rb").read()))
            else:
                target.symlink_to(os.path.join(src, name))
        out[key] = str(tmp / key)
    return out


def invoke(script: str, args: list[str], tmp, command_line: bool = False) -> tuple[int, str]:
    """(exit code, printed text) of ``python <script>.py <args>`` with outputs under ``tmp``, tiny data and model."""
    data = [] if any(a.startswith("data=") for a in args) else TINY_DATA
    overrides = data + TINY_RUN + ["logger=none", "trainer.progress=false", f"paths.output_dir={tmp}/outputs",
                                   f"paths.results_dir={tmp}/results", f"paths.cache_dir={ROOT}/.cache"] + args
    if command_line:
        return run_command_line(script, overrides)
    config_name = "config" if script == "train" else "evaluate"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except Exception:     # Hydra refuses it while composing: run the real command line for its printed message
        return run_command_line(script, overrides)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    module = __import__(script)
    return exit_code_and_text(lambda: module.main(cfg))


def run_command_line(script: str, overrides: list[str]) -> tuple[int, str]:
    GlobalHydra.instance().clear()
    path = os.path.join(ROOT, f"{script}.py")
    argv = [path, *overrides, "hydra/job_logging=none", "hydra/hydra_logging=none", "hydra.output_subdir=null"]
    with patched_argv(argv):
        return exit_code_and_text(lambda: runpy.run_path(path, run_name="__main__"))


@contextlib.contextmanager
def patched_argv(argv: list[str]):
    saved, sys.argv = sys.argv, argv
    try:
        yield
    finally:
        sys.argv = saved


def exit_code_and_text(main) -> tuple[int, str]:
    """Run ``main``; its exit code (0 when it returns) and everything it printed to stdout and stderr."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            main()
            exit_code = 0
        except SystemExit as e:
            exit_code = e.code
    return exit_code, buffer.getvalue()


@pytest.mark.parametrize("script,args,expected", CASES, ids=[f"{s}:{' '.join(a)}" for s, a, _ in CASES])
def test_bad_invocation_fails_with_one_clear_message(files, tmp_path, monkeypatch, script, args, expected):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("DATA_ROOT", os.path.abspath(SHARED_DATA))
    exit_code, text = invoke(script, [a.format(**files) for a in args], tmp_path)
    assert exit_code not in (0, None), text
    assert "Traceback" not in text, text
    assert expected.format(**files) in text, text


@pytest.mark.parametrize("script,args,expected", COMMAND_LINE_CASES,
                         ids=[f"{s}:{' '.join(a)}" for s, a, _ in COMMAND_LINE_CASES])
def test_bad_command_line_fails_with_one_clear_message(files, tmp_path, monkeypatch, script, args, expected):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    exit_code, text = invoke(script, [a.format(**files) for a in args], tmp_path, command_line=True)
    assert exit_code == 2 and "Traceback" not in text, text
    assert text.strip().splitlines()[-1] == f"error: {text.split('error: ')[-1].strip()}"
    assert expected.format(**files) in text, text


def pending_method() -> str | None:
    """A method whose config says ``implemented: false`` and that no module registers (None when every one is done):
    picked at run time, since pending methods get implemented one by one."""
    from omegaconf import OmegaConf

    from methods import METHODS
    for path in sorted(glob.glob(os.path.join(CONF, "method", "*.yaml"))):
        cfg = OmegaConf.load(path)
        if cfg.get("implemented") is False and cfg.get("name") not in METHODS:
            return str(cfg.name)
    return None


def test_pending_method_is_refused_naming_it(files, tmp_path, monkeypatch):
    """A real pending method when one is left; otherwise a made-up one whose conf/method file (implemented: false)
    sits on an extra Hydra search path, so the whole command-line path is exercised either way."""
    name, extra = pending_method(), []
    if name is None:
        name = "future_method"
        (tmp_path / "conf" / "method").mkdir(parents=True)
        (tmp_path / "conf" / "method" / f"{name}.yaml").write_text(
            f"name: {name}\nfamily: prune\nimplemented: false\n")
        extra = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("DATA_ROOT", os.path.abspath(SHARED_DATA))
    exit_code, text = invoke("train", extra + [f"method={name}"], tmp_path)
    assert exit_code not in (0, None) and "Traceback" not in text, text
    assert name in text and "implemented: false" in text, text


def test_cases_are_distinct_and_many():
    keys = [(s, tuple(a)) for s, a, _ in CASES]
    assert len(set(keys)) == len(keys) >= 60
    assert sum(s == "evaluate" for s, _ in keys) >= 10


def test_full_error_shows_the_traceback(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(Exception, match="method.strength"):
        invoke("train", ["+method.strength=0.5"], tmp_path)

"""``run(cfg)``: one composed config, end to end.

validate -> seed -> data -> backbone (+pretrained / init checkpoint) -> ``method.transform`` -> per-layer
complexity table -> stages (each checkpointed; finished stages are replayed from their saved weights on
resume) -> final evaluation -> ``final.pt`` -> one results row (rank 0) -> metrics.

Run directory: ``<paths.output_dir>/<name>/<config hash>-seed<seed>``: named from the config, not the
clock, so a requeued or resumed job finds its own directory again.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
from omegaconf import OmegaConf

from data import build_data
from engine import checkpoint, distributed, provenance
from core.complexity import format_table, measure
from engine.config import ConfigError, checked_trainer, validate
from engine.evaluation import evaluate, primary_metric
from core.latency import measure_latency
from engine.loggers import build_logger, run_tags
from engine.results import append_row, staged_row
from engine.seeding import seed_everything
from engine.trainer import train_stage
from methods import RunContext, build_method, detection_methods
from models import build_model, pretrained_info


def run_name(cfg) -> str:
    return cfg.get("name") or f"{cfg.data.name}_{cfg.model.name}_{cfg.method.name}"


def results_path(cfg) -> str:
    """``<paths.results_dir>/<paper or name>.csv``: under the output folder by default; the reproduce scripts set
    ``paths.results_dir=results/runs`` (the tracked rows)."""
    return os.path.join(cfg.paths.results_dir, f"{cfg.get('paper') or run_name(cfg)}.csv")


def run_dir(cfg, launch_hash: str | None = None) -> str:
    """``<output_dir>/<name>/<config hash as launched>-seed<seed>`` (the hash of ``cfg`` when not given)."""
    launch_hash = launch_hash or provenance.config_hash(cfg)
    return os.path.join(cfg.paths.output_dir, run_name(cfg).replace("/", "_"), f"{launch_hash}-seed{cfg.seed}")


@dataclass(frozen=True)
class Launch:
    """What a row says about how its run was made, fixed at start: the config hash as launched (before the
    pretrained / init-checkpoint normalisation is applied), the experiment file, the recorded fidelity (adhoc when
    the config is not exactly the experiment file's) and the commit the code came from."""

    config_hash: str
    experiment_config: str
    fidelity: str
    fidelity_note: str
    git_sha: str
    git_dirty: bool

    @classmethod
    def of(cls, cfg) -> "Launch":
        invocation = provenance.Invocation.current()
        fidelity, note = invocation.fidelity(str(cfg.fidelity))
        sha, dirty = provenance.git_info()
        return cls(config_hash=provenance.config_hash(cfg), experiment_config=invocation.experiment or "",
                   fidelity=fidelity, fidelity_note=note, git_sha=sha, git_dirty=dirty)

    def announce(self) -> None:
        if self.fidelity_note:
            print(f"note: this run's row is recorded as fidelity={self.fidelity} ({self.fidelity_note}); "
                  "only an experiment file's exact config is judged", flush=True)
        elif self.fidelity in provenance.JUDGED_FIDELITIES and self.git_dirty:
            print("note: uncommitted changes: this run's row will not be judged (commit, then run)", flush=True)


def pick_device(choice: str, num_threads: int | None = None) -> torch.device:
    """The run's device (``trainer.device``); ``trainer.num_threads``, when set, fixes torch's CPU threads."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but CUDA is not available; use trainer.device=auto or cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(choice)


def build_backbone(cfg, num_classes: int, in_channels: int, image_size: int) -> torch.nn.Module:
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in ("name",)}
    try:
        return build_model(cfg.model.name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                           **kwargs)
    except TypeError as e:    # a model.<key> its factory does not take (factories that pass **kwargs on)
        key = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if key is None:
            raise
        raise ConfigError(f"model.{key.group(1)}: unknown key for model={cfg.model.name} ({e}); remove it") from None


def transformed_model(cfg, num_classes: int, in_channels: int, image_size: int, device: torch.device,
                      method_state: dict | None = None, **ctx_fields):
    """(model, method): the backbone of ``cfg`` after its method's transform, as a run builds it before training
    (the method seeded by ``cfg.seed`` and given its saved ``method_state``); a checkpoint's weights load into it.
    ``ctx_fields``: further ``RunContext`` fields (loaders) for transforms that read data; the context's
    ``evaluate`` is the engine's evaluation on ``device``, as in a run."""
    model = build_backbone(cfg, num_classes, in_channels, image_size)
    method = build_method(cfg.method)
    method.generator.manual_seed(int(cfg.get("seed", 0) or 0))
    if method_state is not None:
        method.load_state_dict(method_state)
    ctx = RunContext(num_classes=num_classes, in_channels=in_channels, image_size=image_size, device=device,
                     evaluate=evaluation_on(device), **ctx_fields)
    return method.transform(model, ctx), method


def evaluation_on(device: torch.device):
    """``RunContext.evaluate``: evaluate(model, loader, limit_batches=None) on ``device``."""
    return lambda model, loader, limit_batches=None: evaluate(model, loader, device, limit_batches)


def apply_pretrained_normalization(cfg) -> None:
    """Pretrained weights were trained with their own mean/std; evaluate and fine-tune with the same."""
    if cfg.model.get("pretrained"):
        info = pretrained_info(cfg.model.name)
        if tuple(cfg.data.mean) != info.mean or tuple(cfg.data.std) != info.std:
            print(f"note: model.pretrained=true: using the weights' normalisation mean={info.mean} std={info.std} "
                  f"instead of data.mean/std", flush=True)
            cfg.data.mean, cfg.data.std = list(info.mean), list(info.std)


def load_init_checkpoint(cfg):
    """The ``trainer.init_checkpoint`` blob (None when unset), read once per run."""
    path = cfg.trainer.get("init_checkpoint")
    if not path:
        return None
    if not os.path.exists(path):
        fix = ("a fixed start that the experiment's reproduce script writes (scripts/reproduce_<paper>.sh); run it, or "
               if path.startswith("outputs/ref/") else "")
        raise FileNotFoundError(f"trainer.init_checkpoint={path} does not exist: {fix}pass "
                                f"trainer.init_checkpoint=<final.pt> (or null to start from scratch)")
    return checkpoint.load(path)


def apply_init_checkpoint_normalization(cfg, blob) -> None:
    """A suite checkpoint (the init blob with its saved config, or a ``data_config`` written by
    scripts/export_sparse.py) was trained on inputs normalised with its own data.mean/std: continuing it on the
    same dataset uses those, not the data group's defaults."""
    if not isinstance(blob, dict):
        return
    saved = (blob.get("config") or {}).get("data") or blob.get("data_config")
    if not saved or saved.get("name") != cfg.data.name or not saved.get("mean") or not saved.get("std"):
        return
    if list(saved["mean"]) != list(cfg.data.mean) or list(saved["std"]) != list(cfg.data.std):
        print(f"note: trainer.init_checkpoint was trained with data.mean={list(saved['mean'])} "
              f"std={list(saved['std'])}: using those instead of {list(cfg.data.mean)} / {list(cfg.data.std)}",
              flush=True)
        cfg.data.mean, cfg.data.std = list(saved["mean"]), list(saved["std"])


def stage_trainer_cfg(cfg, stage):
    return checked_trainer(OmegaConf.merge(cfg.trainer, stage.trainer or {}),
                           stage.trainer_key or f"stage {stage.name} trainer")


def run(cfg) -> dict:
    """Train/evaluate the composed config; returns final metrics and complexity; writes the results row."""
    validate(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))   # frozen view of every interpolation
    launch = Launch.of(cfg)
    distributed.from_slurm_tasks()      # a multi-task SLURM job: LOCAL_RANK etc. before the device is picked
    device = pick_device(cfg.trainer.device, cfg.trainer.get("num_threads"))
    dist = distributed.init(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    seed_everything(int(cfg.seed), bool(cfg.trainer.deterministic))
    apply_pretrained_normalization(cfg)
    init_blob = load_init_checkpoint(cfg)
    apply_init_checkpoint_normalization(cfg, init_blob)
    out_dir = checkpoint.run_folder_of(cfg.trainer.resume) or run_dir(cfg, launch.config_hash)
    if dist.is_main:
        launch.announce()
    if cfg.trainer.resume == "never" and os.path.isdir(out_dir) and dist.is_main:
        os.rename(out_dir, f"{out_dir}.old-{datetime.now():%Y%m%d-%H%M%S}")
    distributed.barrier()
    os.makedirs(out_dir, exist_ok=True)
    final_path = os.path.join(out_dir, "final.pt")
    row_marker = os.path.join(out_dir, "row_written")
    if cfg.trainer.resume != "never" and os.path.exists(final_path) and os.path.exists(row_marker):
        done = checkpoint.load(final_path)
        if dist.is_main:
            print(f"run already finished: {out_dir} (use trainer.resume=never to run it again)", flush=True)
        return done["metrics"]

    if cfg.trainer.batch_size % dist.world_size:
        raise ValueError(f"trainer.batch_size={cfg.trainer.batch_size} must divide by the {dist.world_size} processes")
    local_batch = cfg.trainer.batch_size // dist.world_size
    data = build_data(cfg.data, batch_size=local_batch, device=device if cfg.data.name != "imagenet" else "cpu",
                      rank=dist.rank, world_size=dist.world_size, seed=int(cfg.seed),
                      eval_batch_size=int(cfg.trainer.eval_batch_size))
    torch.manual_seed(int(cfg.seed))
    model = build_backbone(cfg, data.num_classes, data.in_channels, data.image_size)
    if init_blob is not None:
        checkpoint.load_weights(model, init_blob, cfg.trainer.init_checkpoint, cfg.model.name)
        init_blob = None          # not kept alive through training
    autocast_dtype = torch.bfloat16 if (cfg.trainer.precision == "bf16" or
                                        (cfg.trainer.precision == "auto" and device.type == "cuda")) else None
    channels_last = cfg.trainer.channels_last in (True, "true") or (
        cfg.trainer.channels_last == "auto" and device.type == "cuda")
    method = build_method(cfg.method)
    stages = method.stages()
    stage_trainers = [stage_trainer_cfg(cfg, stage) for stage in stages]   # any stage's bad key fails here, at start
    if getattr(data.train, "task", "classification") == "detection" and not method.supports_detection:
        raise ValueError(f"method={cfg.method.name} works on classifier logits and cannot train a detector "
                         f"(data.task=detection); methods that can: {', '.join(detection_methods())}")
    logger = build_logger(cfg.logger, cfg, out_dir, run_id=f"{launch.config_hash}-s{cfg.seed}",
                          group=cfg.get("paper") or run_name(cfg), name=f"{run_name(cfg)}-s{cfg.seed}",
                          is_main=dist.is_main, tags=run_tags(cfg, launch.fidelity))
    try:   # from here on a failure still closes the logger (its file, the W&B run)
        ctx = RunContext(num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                         device=device, train_loader=data.train, test_loader=data.test, seed=int(cfg.seed),
                         evaluate=evaluation_on(device),
                         log=lambda metrics: logger.log(metrics, step=0))
        ctx.channels_last = channels_last
        ctx.out_dir = out_dir                 # a method may write files of the run there (NASB: its derived genotype)
        method.generator.manual_seed(int(cfg.seed))   # a method's random draws follow the run seed
        model = method.transform(model, ctx).to(device)
        input_shape = (data.in_channels, data.image_size, data.image_size)
        printed_table = None

        t0 = time.time()
        total_steps, total_epochs, metrics = 0, 0, {}
        for index, (stage, tcfg) in enumerate(zip(stages, stage_trainers)):
            stage_dir = os.path.join(out_dir, f"stage{index}-{stage.name}")
            model = method.on_stage_start(stage, model, ctx).to(device)
            if dist.is_main:   # the per-layer table of what this stage trains, when it differs from the last one
                table = format_table(measure(model, input_shape))
                if table != printed_table:
                    print(f"[{stage.name}] complexity at stage start\n{table}", flush=True)
                    printed_table = table
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            trained_path = os.path.join(stage_dir, "trained.pt")
            if os.path.exists(trained_path):   # finished earlier: replay its end state
                state = checkpoint.load(trained_path)
                model.load_state_dict(state["model"])
                method.load_state_dict(state["method"])
                metrics, steps, epochs = state["metrics"], state["steps"], state["epochs"]
            else:
                wrapped = model
                if dist.world_size > 1:
                    wrapped = torch.nn.parallel.DistributedDataParallel(
                        model, device_ids=[device.index] if device.type == "cuda" else None)
                if cfg.trainer.compile:
                    wrapped = torch.compile(wrapped)
                result = train_stage(model=wrapped, method=method, stage=stage, tcfg=tcfg, data=data, ctx=ctx,
                                     stage_dir=stage_dir, logger=logger, dist=dist, device=device,
                                     autocast_dtype=autocast_dtype, global_step_offset=total_steps)
                metrics, steps, epochs = result.metrics, result.steps, result.epochs
                if dist.is_main:
                    checkpoint.save_atomic({"model": model.state_dict(), "method": method.state_dict(),
                                            "metrics": metrics, "steps": steps, "epochs": epochs}, trained_path)
            total_steps += steps
            total_epochs += epochs
            model = method.on_stage_end(stage, model, ctx).to(device)
        final_eval = evaluate(model, data.test, device, cfg.trainer.limit_eval_batches, autocast_dtype)
        cost = measure(model, input_shape)
        metrics = {**metrics, **final_eval, "steps": total_steps, "epochs": total_epochs,
                   "wall_time_s": time.time() - t0, **cost.summary(),
                   "extra": {**method.metrics(model), **eval_extra(metrics, final_eval)}}
        latency = None
        if cfg.trainer.latency and dist.is_main:
            latency = measured_latency(*method.deployed(model), input_shape)
        if latency:
            metrics["extra"] = {**metrics["extra"], "latency": latency}
        if dist.is_main:
            checkpoint.save_atomic({"model": model.state_dict(), "method": method.state_dict(),
                                    "config": OmegaConf.to_container(cfg), "metrics": metrics}, final_path)
            row = staged_row(os.path.join(out_dir, "row.json"),   # the same row (run id) again after a resume
                             lambda: result_row(cfg, metrics, device, dist.world_size, launch, latency))
            append_row(results_path(cfg), row)      # skipped if this run id is already in the file
            open(row_marker, "w").close()
            logger.summary({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            print(f"final: {headline(metrics)} | params {cost.params} "
                  f"MACs {cost.macs} | row -> {results_path(cfg)} | checkpoint -> {final_path}", flush=True)
    finally:
        logger.finish()
    distributed.barrier()
    return metrics


def eval_extra(stage_metrics: dict, final_eval: dict) -> dict:
    """A detector's evaluation details (mAP variants, per-class AP) and its best mAP over the last stage, for the
    row's ``extra`` (a classifier has none)."""
    if primary_metric(final_eval) != "map50":
        return {}
    best = stage_metrics.get("best_map50")
    return {**final_eval.get("extra", {}), **({"best_map50": best} if best is not None else {})}


def headline(metrics: dict) -> str:
    if primary_metric(metrics) == "map50":
        return f"map50 {metrics['map50']:.2f} ({metrics['extra'].get('ap_metric', '')})"
    return f"top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}"


def measured_latency(model: torch.nn.Module, form: str, input_shape) -> dict:
    """CPU latency of the method's deployed ``form`` of the model (``Method.deployed``) at batch 1 and 64: the median
    and the minimum of repeated runs (the row's latency_ms is the batch-1 median; the minimum is the number least
    moved by other load on a shared machine, docs/pruning.md)."""
    lat = measure_latency(model, input_shape, batch_sizes=(1, 64))
    return {"latency_ms": lat["latency_ms_b1"], "latency_ms_b64": lat["latency_ms_b64"],
            "latency_ms_min": lat["latency_ms_min_b1"], "latency_ms_min_b64": lat["latency_ms_min_b64"],
            "repeats": lat["repeats"], "threads": lat["threads"],
            "device": f"{lat['latency_device']}, batch 1" + (f", {form}" if form else "")}


def result_row(cfg, metrics: dict, device: torch.device, world_size: int, launch: Launch,
               latency: dict | None = None) -> dict:
    keys = ("top1", "top5", "best_top1", "loss", "map50", "params", "macs", "flops", "bops", "ops", "size_bits",
            "sparsity", "nonzero_params", "counter", "input_res", "steps", "epochs", "wall_time_s", "extra")
    return {
        "run_id": uuid.uuid4().hex[:12], "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "experiment": run_name(cfg), "experiment_config": launch.experiment_config,
        "reference": cfg.get("reference") or "", "paper": cfg.get("paper") or "",
        "dataset": cfg.data.name, "model": cfg.model.name, "method": cfg.method.name,
        "variant": cfg.get("variant") or "", "fidelity": launch.fidelity, "fidelity_note": launch.fidelity_note,
        "seed": cfg.seed, "best_or_last": "last",
        **{k: metrics.get(k, "") for k in keys},
        "latency_ms": (latency or {}).get("latency_ms", ""), "latency_device": (latency or {}).get("device", ""),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "world_size": world_size, "global_batch": cfg.trainer.batch_size, "git_sha": launch.git_sha,
        "git_dirty": launch.git_dirty,
        "config_hash": launch.config_hash, "torch_version": provenance.torch_version(),
        "command": provenance.command_line(),
    }

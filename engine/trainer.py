"""The training loop of one stage: epochs of steps, evaluation, per-epoch atomic checkpoints, resume.

Per step: forward (bf16 autocast on CUDA) -> task loss (engine/tasks.py: the classifier's CE with label smoothing,
+ KD if a teacher is set, handed to the method as ``method.task_loss_fn`` for its extra passes; or the detector's own
loss) -> ``method.loss`` -> backward ->
``method.after_backward`` -> optimizer and scheduler step -> ``method.after_step``. No step reads a tensor on the
host: the loss is read at log points and at the epoch end only, where a NaN/inf loss since the last read stops the
run naming its step (engine/loss_watch.py). Per epoch: ``method.on_epoch_end``, evaluation, checkpoint.
A checkpoint holds model, optimizer, scheduler, method state, RNG state, epoch, step and history, so a
killed run resumed with ``trainer.resume=auto`` continues to the result an uninterrupted run gives.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from engine import checkpoint
from engine.evaluation import evaluate, primary_metric
from engine.loss_watch import LossWatch
from engine.optim import build_optimizer, build_scheduler
from engine.tasks import make_task


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class StageResult:
    metrics: dict
    history: list = field(default_factory=list)
    steps: int = 0
    epochs: int = 0


def _unwrap(model):
    return getattr(model, "module", model)


def _row(epoch, epochs, step, lr, train_loss, ev, secs) -> str:
    if ev and "map50" in ev:        # a detector: mAP@0.5 under the top1 column (HEADER_DETECTION)
        ev_txt = f"{ev['map50']:7.2f} {'-':>7} {'-':>8}"
    else:
        ev_txt = f"{ev['top1']:7.2f} {ev['top5']:7.2f} {ev['loss']:8.4f}" if ev else f"{'-':>7} {'-':>7} {'-':>8}"
    return f"{epoch:>5}/{epochs:<5} {step:>8} {lr:>10.3e} {train_loss:>10.4f} {ev_txt} {secs:>7.1f}s"


def log_interval(log_every: int | None, total_steps: int) -> int:
    """Steps between logged training points: ``trainer.log_every`` when set, else about 100 points over the stage
    (every step for stages under 200 steps), at most every 50 steps."""
    return int(log_every) if log_every else max(1, min(50, total_steps // 100))


def _to_device(x, y, device):
    """A batch on ``device``: labels as one tensor, or detection targets as a list of dicts of tensors."""
    x = x.to(device, non_blocking=True)
    if isinstance(y, (list, tuple)):
        return x, [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in y]
    return x, y.to(device, non_blocking=True)


def train_stage(*, model, method, stage, tcfg, data, ctx, stage_dir, logger, dist, device, autocast_dtype,
                global_step_offset: int = 0) -> StageResult:
    """Train ``model`` (possibly DDP-wrapped) for one stage with trainer config ``tcfg``."""
    raw = _unwrap(model)
    optimizer = build_optimizer(raw, tcfg.optimizer)
    # the stage's training batches: the data's loader, or the method's own source (e.g. a generator's images)
    train_src = method.train_batches(stage, tcfg, ctx)
    if train_src is None:
        train_src = data.train
    limit = tcfg.limit_batches
    steps_per_epoch = min(len(train_src), limit) if limit else len(train_src)
    if steps_per_epoch == 0:
        raise ValueError(f"the training split gives no full batch of {tcfg.batch_size} "
                         f"({data.train_size} examples); lower trainer.batch_size")
    total_steps = tcfg.epochs * steps_per_epoch
    if tcfg.max_steps:
        total_steps = min(total_steps, int(tcfg.max_steps))
    scheduler = build_scheduler(optimizer, tcfg.scheduler, steps_per_epoch, max(total_steps, 1))
    log_every = log_interval(tcfg.log_every, total_steps)
    task = make_task(data, tcfg, ctx, device)   # after the optimizer and scheduler, as before: a teacher draws RNG

    start_epoch, step, history, best = 0, 0, [], None
    last_path = os.path.join(stage_dir, "last.pt")
    if os.path.exists(last_path):
        state = checkpoint.load(last_path)
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        method.load_state_dict(state["method"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch, step, history, best = state["epoch"], state["step"], state["history"], state["best"]
        logger.rewind(global_step_offset + step)   # the epochs after the checkpoint are logged again
        if dist.is_main:
            print(f"[{stage.name}] resumed from {last_path} at epoch {start_epoch}, step {step}", flush=True)

    def save(epoch_done: int, path: str = last_path) -> None:
        if dist.is_main:
            checkpoint.save_atomic({"model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "method": method.state_dict(),
                                    "rng": checkpoint.rng_state(), "epoch": epoch_done, "step": step,
                                    "history": history, "best": best}, path)

    if dist.is_main:
        print(f"[{stage.name}] {tcfg.epochs} epochs x {steps_per_epoch} steps, batch {tcfg.batch_size} "
              f"x {dist.world_size} process(es), {tcfg.optimizer.name} lr {tcfg.optimizer.lr}, "
              f"{tcfg.scheduler.name} schedule\n{task.header}", flush=True)
    watch = LossWatch(device, step)
    task.bind(method)

    def stop_on_nonfinite(bad, epoch: int) -> None:
        """Log the first non-finite loss at its step, save the state and stop (``bad``: (step, loss) or None)."""
        if bad is None:
            return
        bad_step, value = bad
        if dist.is_main:   # the curve up to the stop, and the bad value itself
            logger.log({"train/loss": value}, step=global_step_offset + bad_step)
        path = os.path.join(stage_dir, "nonfinite_state.pt")
        save(epoch, path)
        raise NonFiniteLossError(
            f"[{stage.name}] loss became {value} at epoch {epoch}, step {bad_step} (found at step {step}, "
            f"lr there {scheduler.get_last_lr()[0]:.3e}); state saved to {path}. Lower trainer.optimizer.lr, "
            f"add warmup (trainer.scheduler.warmup_epochs) or check the method's loss terms.")

    ev = history[-1]["eval"] if history else None
    for epoch in range(start_epoch, tcfg.epochs):
        if tcfg.max_steps and step >= tcfg.max_steps:
            break
        t0 = time.time()
        train_src.set_epoch(epoch)
        model.train()
        loss_sum, seen = torch.zeros((), device=device), 0
        bar = tqdm(train_src, total=steps_per_epoch, desc=f"{stage.name} {epoch + 1}/{tcfg.epochs}", leave=False,
                   disable=not (tcfg.progress and dist.is_main), file=sys.stderr, mininterval=2.0)
        for i, (x, y) in enumerate(bar):
            if i >= steps_per_epoch or (tcfg.max_steps and step >= tcfg.max_steps):
                break
            x, y = _to_device(x, y, device)
            if ctx.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = task.step_loss(model, method, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward(raw, step)
            optimizer.step()
            scheduler.step()
            method.after_step(raw, step)
            step += 1
            loss_sum += loss.detach()
            seen += 1
            watch.update(loss)
            if step % log_every == 0 or step == 1:   # a curve from the first step; every rank checks the loss here
                value, bad = watch.read(loss)
                stop_on_nonfinite(bad, epoch)
                if dist.is_main:
                    logger.log({"train/loss": value, "train/lr": scheduler.get_last_lr()[0],
                                "epoch": epoch + i / steps_per_epoch}, step=global_step_offset + step)
        train_loss, bad = watch.read(loss_sum / max(seen, 1))
        stop_on_nonfinite(bad, epoch)
        method.on_epoch_end(raw, epoch, ctx)
        last_epoch = epoch + 1 == tcfg.epochs or bool(tcfg.max_steps and step >= tcfg.max_steps)
        ev = None
        if (epoch + 1) % tcfg.eval_every == 0 or last_epoch:
            ev = evaluate(model, data.test, device, tcfg.limit_eval_batches, autocast_dtype)
            best = ev[primary_metric(ev)] if best is None else max(best, ev[primary_metric(ev)])
        history.append({"epoch": epoch + 1, "step": step, "train_loss": train_loss, "eval": ev})
        if dist.is_main:
            point = {"epoch": epoch + 1, "train/epoch_loss": train_loss, "train/lr": scheduler.get_last_lr()[0]}
            if ev:
                point.update({f"eval/{k}": ev[k] for k in ("top1", "top5", "loss", "map50") if k in ev})
            logger.log(point, step=global_step_offset + step)
            print(_row(epoch + 1, tcfg.epochs, step, scheduler.get_last_lr()[0], train_loss, ev, time.time() - t0),
                  flush=True)
        save(epoch + 1)
        if not math.isfinite(train_loss):
            break
    if ev is None:   # no epoch ran (resumed after the last one, or epochs=0): evaluate the model as it is
        ev = evaluate(model, data.test, device, tcfg.limit_eval_batches, autocast_dtype)
        best = ev[primary_metric(ev)] if best is None else best
    metrics = {**ev, f"best_{primary_metric(ev)}": best, "steps": step, "epochs": len(history)}
    return StageResult(metrics=metrics, history=history, steps=step, epochs=len(history))

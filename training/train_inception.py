"""Fine-tune InceptionResnetV1 with triplet loss (online mining) and an optional classification head.

Batch-norm is frozen by default (running statistics and affine parameters): with small P x K batches,
train-mode batch-norm plus batch-hard mining collapsed the embedding in our measurements.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from model.inception_resnet import InceptionResnetV1, l2_normalize
from model.weights import atomic_save
from training.distributed import gather_rows, world
from training.loss import TripletLoss
from training.triplet_selection import TripletSelection

log = logging.getLogger(__name__)

FEATURE_LAYERS = InceptionResnetV1.FEATURE_LAYERS  # defined on the model; re-exported for --train-from


def freeze_batchnorm(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def freeze_below(net: nn.Module, train_from: str | None) -> None:
    """Layers before `train_from` get no gradients (and run without autograd: faster on a CPU)."""
    if train_from is None:
        return
    if train_from not in FEATURE_LAYERS:
        raise ValueError(f"train_from must be one of {FEATURE_LAYERS}")
    for name in FEATURE_LAYERS[:FEATURE_LAYERS.index(train_from)]:
        for p in getattr(net, name).parameters():
            p.requires_grad_(False)


def embed_for_training(net: nn.Module, x: torch.Tensor, train_from: str | None):
    """(unit embeddings, pre-normalisation bottleneck output) with the frozen prefix run under no_grad."""
    split = FEATURE_LAYERS.index(train_from) if train_from else 0
    with torch.no_grad() if split else contextlib.nullcontext():
        x = net.forward_features(x, stop=split)
    head = net.forward_head(net.forward_features(x, start=split))
    return l2_normalize(head.float()), head


class _Embed(nn.Module):
    """What a training step runs, as one module: DDP wraps this (it syncs gradients of modules it calls)."""

    def __init__(self, net: nn.Module, train_from: str | None):
        super().__init__()
        self.net, self.train_from = net, train_from

    def forward(self, x):
        return embed_for_training(self.net, x, self.train_from)


def train_inception(dataloader, batch_size: int, net: nn.Module, criterion: TripletLoss, optimizer,
                    use_gpu: bool, num_epochs: int, *, selector: TripletSelection | None = None,
                    classification_weight: float = 0.0, writer=None, max_steps: int | None = None,
                    max_minutes: float | None = None, freeze_bn: bool = True, train_from: str | None = None,
                    amp: bool | None = None, resume_path: Path | None = None, save_every: int = 50,
                    validate=None, validate_every: int | None = None, on_step=None, scheduler=None,
                    regularizer=None, should_stop=None) -> dict:
    """Train in place; returns the history. `validate(net, step) -> dict` is logged to TensorBoard when given
    (every `validate_every` steps and after the last); `should_stop()` is asked after each of those (early
    stop). `scheduler` steps once per optimiser step; `regularizer(net)` is added to the loss (L2-SP).
    `on_step(step, loss)` is called after every optimiser step (progress reports)."""
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    net.to(device)
    selector = selector or TripletSelection("batch_all", criterion.margin)
    if amp is None:
        amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    freeze_below(net, train_from)
    step, start_epoch = 0, 0
    if resume_path is not None and Path(resume_path).is_file():
        state = torch.load(resume_path, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        step, start_epoch = state["step"], state["epoch"]
        log.info("resumed from %s at step %d", resume_path, step)
    history = {"loss": [], "active_fraction": [], "triplets": [], "validation": [], "penalty": [],
               "stopped_early": False}
    rank, world_size = world()
    step_fn = _Embed(net, train_from)
    if world_size > 1:  # torchrun: gradients averaged by DDP, mining over the gathered global batch
        from torch.nn.parallel import DistributedDataParallel

        step_fn = DistributedDataParallel(step_fn, device_ids=[device] if device.type == "cuda" else None,
                                          find_unused_parameters=True)
    main = rank == 0
    t0 = time.perf_counter()
    done = False
    for epoch in range(start_epoch, num_epochs):
        bar = tqdm(dataloader, desc=f"epoch {epoch + 1}/{num_epochs}", mininterval=5, disable=None if main else True)
        for batch in bar:
            net.train()
            if freeze_bn:
                freeze_batchnorm(net)
            x, y = batch[0].to(device), batch[1].to(device)
            not_y = batch[2].to(device) if len(batch) > 2 else None  # reported "not this identity" (-1: none)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                emb, head = step_fn(x)
            y_local = y
            if world_size > 1:
                emb, y = gather_rows(emb), gather_rows(y)
                not_y = gather_rows(not_y) if not_y is not None else None
            a, p, n = selector(emb, y) if not_y is None else selector(emb, y, not_y)
            loss, active = criterion.forward_mined(emb, a, p, n)
            if classification_weight > 0 and hasattr(net, "logits"):
                loss = loss + classification_weight * F.cross_entropy(net.logits(head.float()), y_local)
            optimizer.zero_grad(set_to_none=True)
            if regularizer is not None:
                penalty = regularizer(net)
                history["penalty"].append(float(penalty.detach()))
                loss = loss + penalty
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            loss = loss.detach()
            history["loss"].append(float(loss))
            history["active_fraction"].append(active)
            history["triplets"].append(int(a.numel()))
            bar.set_postfix(loss=f"{float(loss):.4f}", active=f"{active:.2f}", triplets=int(a.numel()))
            if on_step is not None and main:
                on_step(step, float(loss))
            if writer is not None and main:
                writer.add_scalar("train/loss", float(loss), step)
                writer.add_scalar("train/active_triplet_fraction", active, step)
                writer.add_scalar("train/triplets", int(a.numel()), step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            early = False
            evaluated = bool(validate is not None and validate_every and step % validate_every == 0 and main)
            if evaluated:
                _validate(net, validate, writer, step, history)
                early = bool(should_stop and should_stop())
            if resume_path is not None and step % save_every == 0 and main:
                state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch}
                if scheduler is not None:
                    state["scheduler"] = scheduler.state_dict()
                atomic_save(state, Path(resume_path))
            elapsed_min = (time.perf_counter() - t0) / 60
            budget_spent = bool((max_steps and step >= max_steps) or (max_minutes and elapsed_min >= max_minutes))
            if evaluated:
                history["stopped_early"] = early and not budget_spent  # the budget ended it anyway: not early
            stop = budget_spent or early
            if world_size > 1:  # every rank stops at the same step (clocks differ), or the others would hang
                flag = torch.tensor([float(stop)], device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                stop = bool(flag.item())
            if stop:
                done = True
                break
        if done:
            break
    net.eval()
    history["steps"] = step
    history["train_minutes"] = (time.perf_counter() - t0) / 60
    if validate is not None and main and not (history["validation"] and history["validation"][-1]["step"] == step):
        _validate(net, validate, writer, step, history)
    return history


def _validate(net, validate, writer, step, history) -> None:
    net.eval()
    metrics = validate(net, step)
    history["validation"].append({"step": step, **metrics})
    if writer is not None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                writer.add_scalar(f"val/{k}", v, step)

"""`python -m training.main --from-gallery`: fine-tune on the gallery's own crops and corrections, then publish
only through the gate (training/gate.py).

    python -m training.main --from-gallery --epochs 1 --max-minutes 10 --publish-url http://127.0.0.1:8000

The database URL, checkpoints folder and target FPIR come from the service's settings (FACEID_*). Training
starts from the model the gallery serves. The candidate and its report are always written to
`<checkpoints>/candidates/`; only a candidate that passes the gate is written to `<checkpoints>/<name>.pt`
(published) and, with `--publish-url`, hot-swapped. Exit code 0: published; 3: kept, not published.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from model.pipeline import build_network, load_checkpoint
from training.data import cached_crops, make_loader
from training.distributed import DistributedPKSampler, cleanup, setup
from training.evaluate import calibrate
from training.gallery import GallerySettings, collection_url, load_gallery, serving_model, split_identities
from training.gate import decide, identification_report, lfw_accuracy, lfw_allowance, lfw_pairs
from training.loss import TripletLoss
from training.publish import checkpoint_payload, notify_server, write_checkpoint
from training.recipe import L2SP, KeepBest, blend_state, step_schedule
from training.train_inception import embed_for_training, train_inception
from training.triplet_selection import TripletSelection

log = logging.getLogger(__name__)
NOT_PUBLISHED = 3


class Progress:
    """The job's state as one JSON file, replaced atomically (GET /admin/train reads it)."""

    def __init__(self, path: str | None, every_s: float = 1.0):
        self.path = Path(path) if path else None
        self.every_s = every_s
        self.state: dict = {"phase": "starting", "step": 0, "total_steps": None, "loss": None, "eta_s": None,
                            "validation": [], "started_at": datetime.now(timezone.utc).isoformat()}
        self._t0, self._train_t0, self._written = time.monotonic(), None, 0.0
        self.write(force=True)

    def update(self, force: bool = True, **kw) -> None:
        self.state.update(kw)
        self.write(force)

    def step(self, step: int, loss: float) -> None:
        if self._train_t0 is None:
            self._train_t0 = time.monotonic() - 1e-9
        elapsed = time.monotonic() - self._train_t0
        eta = None
        total = self.state.get("total_steps")
        if total:
            eta = elapsed / step * max(0, total - step)
        limit = self.state.get("max_seconds")
        if limit:
            eta = min(eta if eta is not None else limit, max(0.0, limit - elapsed))
        self.state.update(phase="training", step=step, loss=round(loss, 6), eta_s=None if eta is None else round(eta, 1))
        self.write()

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._written < self.every_s):
            return
        self._written = now
        self.state["elapsed_s"] = round(now - self._t0, 1)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)


def serving_spec(database_url: str, settings) -> str:
    """The checkpoint the gallery's servers serve: the hot swap's record, else FACEID_WEIGHTS (as app.main)."""
    from model.weights import REGISTRY

    for name in (serving_model(database_url), settings.weights):
        if name and (Path(settings.checkpoints_dir) / name).is_file():
            return str(Path(settings.checkpoints_dir) / name)
        if name and name in REGISTRY:
            return name
    return settings.weights  # a path of its own (load_checkpoint says what is wrong with it)


def embed(net, crops: np.ndarray, normalization: str, batch: int = 64) -> np.ndarray:
    from model.preprocessing import normalize

    net.eval()
    device = next(net.parameters()).device  # on CUDA during training's evaluations
    out = [np.zeros((0, 512), np.float32)]
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            x = normalize(torch.from_numpy(crops[i:i + batch]).permute(0, 3, 1, 2), normalization).to(device)
            out.append(embed_for_training(net, x, None)[0].float().cpu().numpy())
    return np.concatenate(out)


def run(args) -> int:
    """Under torchrun every rank trains its share of each global batch; rank 0 evaluates, gates and publishes."""
    rank, world_size, _ = setup()
    try:
        return _run(args, rank, world_size)
    finally:
        cleanup()


def _run(args, rank: int, world_size: int) -> int:
    main_rank = rank == 0
    settings = GallerySettings()
    url = args.database_url or settings.database_url
    ckdir = Path(settings.checkpoints_dir)
    progress = Progress(args.progress if main_rank else None)
    serving = load_checkpoint(serving_spec(url, settings))
    ckpt = load_checkpoint(args.weights) if args.weights else serving  # where training starts
    pre = ckpt.preprocessing
    data = load_gallery(collection_url(url, args.collection), pre.image_size)  # the serving model: the service's
    train, val = split_identities(data, args.val_identities, seed=args.seed)
    max_lfw_drop = lfw_allowance(args.max_lfw_drop, data.counts["reports"])
    progress.update(phase="evaluating the serving model", base=serving.name, data=data.counts,
                    train_crops=int(train.sum()), validation_crops=int(val.sum()))
    torch.manual_seed(args.seed)
    net = build_network(serving)
    val_crops, val_labels = data.crops[val], data.labels[val]

    gallery_names = set(data.classes[:int(data.is_identity.sum())])

    def lfw_set(max_pairs):
        """(crops, pair index, issame, folds, names, not-in-the-gallery mask) of `max_pairs` LFW View 2 pairs."""
        paths, idx, issame, folds = lfw_pairs(max_pairs)
        names = [p.parent.name for p in paths]
        return (cached_crops(paths, ".cache/training", pre), idx, issame, folds, names,
                np.array([n not in gallery_names for n in names], bool))

    lfw = lfw_set(args.lfw_pairs) if args.lfw_pairs != 0 and main_rank else None
    # during training: the same evaluation on fewer LFW pairs (the full gate runs once, at the end)
    # (as many pairs as the gate's, or more: the gate's own, and a step kept is a step the gate passes)
    fewer = lfw is not None and args.select_lfw_pairs and args.select_lfw_pairs < len(lfw[1])
    lfw_select = lfw_set(args.select_lfw_pairs) if fewer else lfw

    def evaluate(n, pairs=None) -> tuple[dict, float | None, np.ndarray | None]:
        """(held-out identification, LFW accuracy, LFW embeddings) of network `n` on the LFW `pairs` (default
        the gate's); the LFW people who are not in the gallery are the held-out searches' strangers too."""
        pairs = lfw if pairs is None else pairs
        emb_lfw = embed(n, pairs[0], pre.normalization) if pairs else None
        figures = identification_report(embed(n, val_crops, pre.normalization), val_labels, data.is_identity,
                                        settings.target_fpir, strangers=emb_lfw[pairs[5]] if pairs else None)
        return figures, (lfw_accuracy(emb_lfw, *pairs[1:4]) if pairs else None), emb_lfw

    base, base_lfw, _ = evaluate(net) if main_rank else (None, None, None)
    if ckpt is not serving:
        net = build_network(ckpt)
    result = {"base": {"checkpoint": serving.name, "version": serving.version, "held_out": base,
                       "lfw_accuracy": base_lfw}, "started_from": ckpt.name,
              "data": {**data.counts, "train_crops": int(train.sum()), "validation_crops": int(val.sum())}}
    progress.update(phase="training", base_figures={"held_out": base, "lfw_accuracy": base_lfw})

    classes, y = np.unique(data.labels[train], return_inverse=True)
    remap = {int(c): i for i, c in enumerate(classes)}
    not_y = np.array([remap.get(int(c), -1) for c in data.not_labels[train]], np.int64)
    sampler = DistributedPKSampler(y, max(2, args.bs // args.k), args.k, rank, world_size, seed=args.seed,
                                   batches=args.max_steps, not_labels=not_y) if world_size > 1 else None
    loader = make_loader(data.crops[train], y, args.bs, args.k, normalization=pre.normalization, not_labels=not_y,
                         seed=args.seed, batches=args.max_steps, augment=args.augment, sampler=sampler)
    total = len(loader) * args.epochs if not args.max_steps else min(args.max_steps, len(loader) * args.epochs)
    progress.update(total_steps=total, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    params = [p for n, p in net.named_parameters() if not n.startswith("logits.")]
    use_gpu = args.device in ("auto", "cuda") and torch.cuda.is_available()
    optimizer = torch.optim.Adam(params, args.lrin)
    warmup = int(round(args.warmup * total))
    scheduler = step_schedule(optimizer, total, warmup, args.schedule)
    regularizer = L2SP(net, args.l2sp) if args.l2sp > 0 else None  # toward the weights training starts from
    select = args.keep == "best" and main_rank
    every = args.validate_every or (max(5, total // 6) if select else None)
    keeper = None
    if select:
        base_sel, base_sel_lfw = base, base_lfw  # the gate's pairs: the serving model's figures are those
        if lfw_select is not lfw:
            progress.update(phase="evaluating the serving model (selection)")
            base_sel, base_sel_lfw, _ = evaluate(build_network(serving) if ckpt is not serving else net, lfw_select)
        keeper = KeepBest(base_sel, base_sel_lfw, max_lfw_drop, args.patience)
    blends = sorted(set(args.blend or [])) if select else []  # offered only where a keeper chooses
    recipe = {"steps": total, "schedule": args.schedule, "warmup_steps": warmup, "lr": args.lrin,
              "l2sp": args.l2sp, "train_from": args.train_from, "keep": args.keep, "evaluate_every": every,
              "patience": args.patience, "selection_lfw_pairs": len(lfw_select[1]) if lfw_select else 0,
              "blend": blends, "max_lfw_drop_points": max_lfw_drop}
    progress.update(phase="training", recipe=recipe)

    start = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()} if blends else None
    blended = copy.deepcopy(net) if blends else None

    def validate(n, step) -> dict:
        points = []
        for alpha in blends:  # nearest the starting weights first: a tie keeps the nearer
            blended.to(next(n.parameters()).device).load_state_dict(blend_state(start, n.state_dict(), alpha))
            figures, lfw_acc, _ = evaluate(blended, lfw_select)
            points.append(keeper.offer(step, blended, figures, lfw_acc, blend=alpha))
        figures, lfw_acc, _ = evaluate(n, lfw_select)
        point = keeper.offer(step, n, figures, lfw_acc) if keeper else {
            "step": step, **{k: figures[k] for k in ("rank1", "fnir")}, "lfw_accuracy": lfw_acc}
        progress.update(validation=progress.state["validation"] + points + [point], phase="training")
        metrics = {k: v for k, v in point.items() if isinstance(v, float) and k not in ("score", "blend")}
        for p in points:  # TensorBoard: val/blend_0.5/rank1 beside val/rank1
            metrics.update({f"blend_{p['blend']:g}/{k}": p[k] for k in ("rank1", "fnir", "lfw_accuracy")
                            if isinstance(p[k], float)})
        return metrics

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(args.logdir) if main_rank else None
    history = train_inception(loader, args.bs, net, TripletLoss(args.margin), optimizer,
                              use_gpu, args.epochs, selector=TripletSelection(args.mining, args.margin),
                              writer=writer, max_minutes=args.max_minutes, max_steps=args.max_steps,
                              train_from=args.train_from, validate=validate if every else None,
                              validate_every=every, on_step=progress.step, scheduler=scheduler,
                              regularizer=regularizer, should_stop=(lambda: keeper.stop) if keeper else None)
    if not main_rank:
        return 0
    net = net.cpu()
    if keeper:
        kept = keeper.restore(net, history["stopped_early"])
    else:
        kept = {"step": history["steps"], "reason": "the last step (--keep last)"}
    writer.add_text("kept", f"step {kept['step']}: {kept['reason']}", history["steps"])
    writer.close()
    progress.update(phase="evaluating the candidate", kept=kept)
    new, new_lfw, new_emb_lfw = evaluate(net)
    ok, reasons = decide(base, new, base_lfw, new_lfw, max_lfw_drop)
    if lfw is None:
        ok, reasons = False, reasons + ["LFW not checked (--lfw-pairs 0): the gate cannot pass without it"]
    result.update({"candidate": {"held_out": new, "lfw_accuracy": new_lfw}, "steps": history["steps"],
                   "kept": kept, "recipe": recipe, "stopped_early": history["stopped_early"],
                   "curve": progress.state["validation"],
                   "l2sp_distance": round(regularizer.distance(net).item(), 6) if regularizer else None,
                   "loss": {"first": history["loss"][:1], "last": history["loss"][-1:]},
                   "train_minutes": history["train_minutes"], "published": ok, "gate": reasons or ["passed"]})

    # calibration: the held-out identities and the LFW gate's people, all different-person pairs
    cal_emb = [embed(net, val_crops, pre.normalization)]
    cal_lab = [f"heldout:{c}" for c in val_labels]
    if lfw:
        cal_emb.append(new_emb_lfw)
        cal_lab += [f"lfw:{n}" for n in lfw[4]]
    thresholds = calibrate(np.concatenate(cal_emb), cal_lab, "held-out gallery identities + LFW gate pairs",
                           args.target_far)
    name = Path(args.out).stem if args.out else f"gallery-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    published_path = Path(args.out) if args.out else ckdir / f"{name}.pt"
    payload = checkpoint_payload(net, name=name, base_weights=ckpt.name, preprocessing=pre, thresholds=thresholds,
                                 metrics={"held_out": new, "lfw_accuracy": new_lfw},
                                 data={"gallery": _redact(url), **data.counts})
    candidate = write_checkpoint(payload, published_path.parent / "candidates" / published_path.name)
    result["candidate"]["checkpoint"] = str(candidate)
    result["candidate"]["version"] = payload["metadata"]["version"]
    if ok:
        result["checkpoint"] = str(write_checkpoint(payload, published_path))
        if args.publish_url:
            progress.update(phase="publishing")
            result["swap"] = notify_server(args.publish_url, published_path.name, api_key=args.api_key)
    candidate.with_suffix(".report.json").write_text(json.dumps(result, indent=2))
    if ok:
        published_path.with_suffix(".report.json").write_text(json.dumps(result, indent=2))
    progress.update(phase="published" if ok else "not published", result=result, eta_s=0)
    print(json.dumps(result, indent=2))
    return 0 if ok else NOT_PUBLISHED


def _redact(url: str) -> str:
    """A database URL without its password, for the checkpoint's metadata."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is not worth failing a run for
        return "(unparsed)"

"""Command line: fine-tune (--train 1) or evaluate (--train 0) FaceNet on root/<class_label>/<image>, or on the
gallery's own crops and corrections (--from-gallery, published only through the gate: training/from_gallery.py).

    python -m training.main --rootdir datasets/custom_images --lrin 1e-5 --lrcl 1e-3 --bs 64 --epochs 5 --train 1
    python -m training.main --from-gallery --epochs 1 --max-minutes 10 --publish-url http://127.0.0.1:8000

Preprocessing (crop size, margin, normalisation) is the starting checkpoint's, and the fine-tuned checkpoint
carries it on. `--publish-url` tells a server to swap; a keyed server needs `--api-key` (or FACEID_API_KEY)
with the admin scope.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from model.pipeline import build_network, load_checkpoint
from training.data import aligned_crops, cached_crops, list_images, make_loader
from training.distributed import DistributedPKSampler, cleanup, rank_zero_first, setup
from training.evaluate import calibrate, plot_roc, verification_report
from training.loss import TripletLoss
from model.preprocessing import normalize
from training.publish import checkpoint_payload, notify_server, write_checkpoint
from training.recipe import SCHEDULES
from training.train_inception import FEATURE_LAYERS, embed_for_training, train_inception
from training.tiny import TinyEmbedder
from training.triplet_selection import MINING, TripletSelection


def embed_crops(net, crops: np.ndarray, batch: int = 64, normalization: str = "fixed_standardization") -> np.ndarray:
    """(n, 512) unit embeddings of uint8 crops with the network as it is now (eval mode, fp32)."""
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch):
            x = normalize(torch.from_numpy(crops[i:i + batch]).permute(0, 3, 1, 2), normalization)
            out.append(embed_for_training(net, x, None)[0].float().numpy())
    return np.concatenate(out)


def reference_set(net, root: Path, exclude: set[str], pre) -> tuple[np.ndarray, list[str]]:
    """Embeddings by `net` of root/<label>/<images>, labels in `exclude` (the training identities) left out."""
    paths, labels = list_images(root)
    keep = [i for i, lab in enumerate(labels) if lab not in exclude]
    crops = cached_crops([paths[i] for i in keep], ".cache/training", pre)
    return embed_crops(net, crops, normalization=pre.normalization), [labels[i] for i in keep]


def all_pairs(labels: np.ndarray, n_negative: int = 100_000, seed: int = 0):
    """Every same-label pair and `n_negative` random different-label pairs (fixed seed)."""
    labels = np.asarray(labels)
    same = [(i, j) for lab in np.unique(labels) for idx in [np.nonzero(labels == lab)[0]]
            for a, i in enumerate(idx) for j in idx[a + 1:]]
    rng = np.random.default_rng(seed)
    counts = np.unique(labels, return_counts=True)[1]
    n_negative = min(n_negative, int((len(labels) ** 2 - (counts ** 2).sum()) // 2))  # no more exist
    neg = set()
    while len(neg) < n_negative:
        i, j = rng.integers(0, len(labels), 2)
        if labels[i] != labels[j]:
            neg.add((min(i, j), max(i, j)))
    pairs = np.array(same + sorted(neg))
    issame = np.r_[np.ones(len(same), bool), np.zeros(len(neg), bool)]
    return pairs, issame


def pair_report(emb: np.ndarray, pairs: np.ndarray, issame: np.ndarray) -> dict:
    scores = np.sum(emb[pairs[:, 0]] * emb[pairs[:, 1]], axis=1)
    return verification_report(scores, issame), scores


def publish(args: argparse.Namespace, checkpoint: Path) -> dict:
    """Tell the server at `--publish-url` to swap to `checkpoint` (a name inside its checkpoints folder),
    with `--api-key` / FACEID_API_KEY when given (a keyed server answers 401 without it)."""
    return notify_server(args.publish_url, Path(checkpoint).name, api_key=args.api_key)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--rootdir", help="image root: <rootdir>/<class_label>/<image>")
    src.add_argument("--from-gallery", action="store_true",
                     help="train on the gallery's stored crops and POST /feedback corrections (database from "
                     "FACEID_DATABASE_URL); publish only if better than the serving model (the gate)")
    ap.add_argument("--lrin", type=float, default=1e-5, help="learning rate of the InceptionResnetV1 body")
    ap.add_argument("--lrcl", type=float, default=0.0, help="learning rate of the classification head (0: off)")
    ap.add_argument("--bs", type=int, default=64, help="batch size (P identities x K images)")
    ap.add_argument("--k", type=int, default=4, help="images per identity in a batch")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train", type=int, choices=[0, 1], default=1, help="1: train, 0: evaluate only")
    ap.add_argument("--weights", default=None, help="registry name or checkpoint to start from (default: "
                    "casia-webface; --from-gallery: the model the gallery serves)")
    ap.add_argument("--out", default=None, help="checkpoint path (default checkpoints/finetuned.pt; --from-gallery: "
                    "<FACEID_CHECKPOINTS_DIR>/gallery-<time>.pt, candidates/ beside it)")
    ap.add_argument("--val-identities", type=float, default=0.2, help="share of identities held out for evaluation")
    ap.add_argument("--mining", choices=MINING, default="batch_all")
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--train-from", choices=FEATURE_LAYERS, default=None, help="freeze the layers before this one")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--target-far", type=float, default=1e-3, help="FAR of the fixed 1:1 threshold `cosine`")
    ap.add_argument("--reference-dir", default=None,
                    help="<dir>/<label>/<images> of many people not trained on (e.g. LFW): the impostor tail the "
                    "server's open-set operating point is derived from needs millions of different-person pairs; "
                    "without it only the held-out identities calibrate, and a server refuses to swap to a "
                    "checkpoint whose tail is too thin for its target FPIR")
    ap.add_argument("--logdir", default="runs/finetune")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    ap.add_argument("--aligned", action="store_true", help="the images are aligned face crops already (resized "
                    "to the checkpoint's input size; no detection)")
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                    help="flip and brightness/contrast jitter of the training crops")
    ap.add_argument("--arch", choices=("inception_resnet_v1", "tiny"), default="inception_resnet_v1",
                    help="tiny: a small untrained network for smoke runs of the machinery (not for serving)")
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("--from-gallery")
    g.add_argument("--database-url", default=None, help="default: FACEID_DATABASE_URL")
    g.add_argument("--collection", default=None, help="train on this collection's faces and corrections (default: "
                   "the collection `default`); the model is the service's, shared by every collection")
    g.add_argument("--lfw-pairs", type=int, default=None, help="LFW View 2 pairs the gate checks (an equal share "
                   "of each fold; default all 6000; 0 skips LFW, and then nothing is published)")
    g.add_argument("--max-lfw-drop", type=float, default=None, help="LFW 10-fold accuracy may fall this many "
                   "points (default: 0.5 when the gallery holds corrections, 0 when it holds none)")
    g.add_argument("--validate-every", type=int, default=None, help="evaluate on the held-out identities every N "
                   "steps (default with --keep best: a sixth of the steps, at least 5)")
    g.add_argument("--keep", choices=("best", "last"), default="best", help="best: keep the evaluated step that "
                   "the gate rates best (rank-1 minus FNIR among those that pass) and stop early; last: the last step")
    g.add_argument("--patience", type=int, default=3, help="--keep best: stop after this many evaluations in a "
                   "row without a better one (0: never stop early)")
    g.add_argument("--select-lfw-pairs", type=int, default=600, help="LFW pairs checked at each evaluation "
                   "during training (the gate's --lfw-pairs are checked once more, at the end); 0 or at least "
                   "the gate's: the gate's own (200 chose a step that 600 refused: benchmarks/results/"
                   "feedback_loop_gray24_select200.json)")
    g.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="learning rate over the steps: "
                   "warm-up, then decay to 0 at the last step (--max-steps, else the epochs' steps)")
    g.add_argument("--warmup", type=float, default=0.1, help="share of the steps that warm the learning rate up")
    g.add_argument("--l2sp", type=float, default=0.01, help="L2-SP: alpha/2 * ||w - w0||^2 over the trained "
                   "weights, w0 the weights training starts from (0: off)")
    g.add_argument("--blend", type=float, nargs="*", default=[0.5], help="--keep best: at each evaluation also "
                   "offer these blends of the starting and the trained weights (the trained weights' share, in "
                   "(0, 1); WiSE-FT), and keep whichever the gate rates best (--blend with no value: none)")
    g.add_argument("--progress", default=None, help="write the job's progress here as JSON (POST /admin/train)")
    ap.add_argument("--publish-url", default=None, help="tell this faceid server to swap to the checkpoint")
    ap.add_argument("--api-key", default=os.environ.get("FACEID_API_KEY"),
                    help="X-API-Key (admin scope) for --publish-url; default $FACEID_API_KEY")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if any(not 0.0 < a < 1.0 for a in args.blend):
        ap.error("--blend: each share of the trained weights must be between 0 and 1 (both excluded)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.from_gallery:
        from training.from_gallery import run

        return run(args)
    args.weights = args.weights or "casia-webface"
    args.out = args.out or "checkpoints/finetuned.pt"
    rank, world_size, device = setup()  # torchrun: this process's place in the group
    try:
        return train_folder(args, rank, world_size, device)
    finally:
        cleanup()


def train_folder(args, rank: int, world_size: int, device) -> int:
    """Fine-tune on root/<label>/<image>; under torchrun every rank trains, rank 0 evaluates and writes."""
    main_rank = rank == 0
    torch.manual_seed(args.seed)
    paths, names = list_images(Path(args.rootdir))
    classes = sorted(set(names))
    labels = np.array([classes.index(n) for n in names])
    rng = np.random.default_rng(0)
    val_classes = set(rng.choice(len(classes), int(len(classes) * args.val_identities), replace=False).tolist())
    is_val = np.array([lab in val_classes for lab in labels])
    ckpt = load_checkpoint(args.weights)
    pre = ckpt.preprocessing  # crop and standardise as the starting checkpoint was trained
    if args.aligned:  # already face crops: resized to the checkpoint's input, no detection
        crops = aligned_crops(paths, pre.image_size)
    else:
        with rank_zero_first():  # rank 0 fills the crop cache, the others read it
            crops = cached_crops(paths, ".cache/training", pre)
    net = build_network(ckpt) if args.arch == "inception_resnet_v1" else TinyEmbedder()
    use_gpu = args.device in ("auto", "cuda") and torch.cuda.is_available()

    pairs, issame = all_pairs(labels[is_val], n_negative=min(100_000, int(is_val.sum()) ** 2 // 4 + 1))
    result = {}
    if main_rank:
        result["base"], _ = pair_report(embed_crops(net, crops[is_val], normalization=pre.normalization), pairs,
                                        issame)
    if args.train:
        train_labels = np.unique(labels[~is_val], return_inverse=True)[1]
        p = max(2, args.bs // args.k)
        sampler = DistributedPKSampler(train_labels, p, args.k, rank, world_size, seed=args.seed,
                                       batches=args.max_steps) if world_size > 1 else None
        loader = make_loader(crops[~is_val], train_labels, args.bs, args.k, normalization=pre.normalization,
                             augment=args.augment, seed=args.seed, batches=args.max_steps, sampler=sampler)
        params = [{"params": [p for n, p in net.named_parameters() if not n.startswith("logits.")], "lr": args.lrin}]
        if args.lrcl > 0:
            net.logits = torch.nn.Linear(512, int(train_labels.max()) + 1)
            params.append({"params": net.logits.parameters(), "lr": args.lrcl})
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.logdir) if main_rank else None
        history = train_inception(loader, args.bs, net, TripletLoss(args.margin), torch.optim.Adam(params), use_gpu,
                                  args.epochs, selector=TripletSelection(args.mining, args.margin),
                                  classification_weight=1.0 if args.lrcl > 0 else 0.0, writer=writer,
                                  max_minutes=args.max_minutes, train_from=args.train_from,
                                  resume_path=Path(args.out).with_suffix(".resume.pt"), max_steps=args.max_steps)
        if not main_rank:  # evaluation and the checkpoint are rank 0's
            return 0
        writer.close()
        net = net.cpu()
        after, scores = pair_report(embed_crops(net, crops[is_val], normalization=pre.normalization), pairs, issame)
        result.update({"finetuned": after, "steps": history["steps"], "train_minutes": history["train_minutes"],
                       "processes": world_size, "loss_curve": history["loss"]})
        val_emb = embed_crops(net, crops[is_val], normalization=pre.normalization)
        val_labels = [f"heldout:{lab}" for lab in labels[is_val]]
        emb_cal, lab_cal = val_emb, val_labels
        if args.reference_dir:  # a large set of people it was not trained on: the deep tail needs millions of pairs
            ref_emb, ref_labels = reference_set(net, Path(args.reference_dir), set(classes), pre)
            emb_cal, lab_cal = np.concatenate([val_emb, ref_emb]), val_labels + [f"ref:{x}" for x in ref_labels]
        thresholds = calibrate(emb_cal, lab_cal, "held-out identities" + (
            f" + {Path(args.reference_dir).name}" if args.reference_dir else ""), args.target_far)
        result["calibration"] = {k: v for k, v in thresholds.items() if k not in ("impostor_tail", "normalised")}
        payload = checkpoint_payload(net, name=Path(args.out).stem, base_weights=args.weights,
                                     preprocessing=pre, thresholds=thresholds, architecture=type(net).__name__,
                                     metrics=after, data={"root": str(args.rootdir), "images": len(paths),
                                                          "identities": len(classes)})
        out = write_checkpoint(payload, Path(args.out))
        plot_roc(scores, issame, out.with_suffix(".roc.png"), label=payload["metadata"]["version"])
        out.with_suffix(".report.json").write_text(json.dumps(result, indent=2))
        result["checkpoint"] = str(out)
        if args.publish_url:
            result["published"] = publish(args, out)
    if main_rank:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

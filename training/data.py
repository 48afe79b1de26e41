"""Training data: `root/<class_label>/<image>` folders, MTCNN face crops cached on disk, P x K batches.

Crops and standardisation follow the checkpoint training starts from (its `Preprocessing`: image size,
margin, normalisation), and the crops come from `model.crops`, the one crop cache.

`load_dataset(root, batchsize, shuffle)` keeps the original design's signature: it returns a DataLoader
whose batches hold `batchsize` crops from batchsize // K identities (K images each), as online triplet
mining needs several images of each identity in a batch.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from model.crops import crops_cached
from model.preprocessing import normalize
from model.weights import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(root: Path) -> tuple[list[Path], list[str]]:
    """(image paths, class label per image) for root/<label>/<image>."""
    paths, labels = [], []
    for d in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                labels.append(d.name)
    return paths, labels


def cached_crops(paths: list[Path], cache_dir: Path | None = None, preprocessing: Preprocessing | None = None,
                 pipeline=None) -> np.ndarray:
    """MTCNN crops (largest face; image centre when none) at `preprocessing`'s size and margin (default: the
    pipeline's checkpoint's), computed once and cached by `model.crops` (keyed by paths and crop settings)."""
    if pipeline is None:
        from model.pipeline import FacePipeline  # loads weights: only when crops must be made

        pipeline = FacePipeline.load(device="cpu")
    crops, _ = crops_cached(pipeline, list(paths), Path(cache_dir) if cache_dir else None, preprocessing)
    return crops


def aligned_crops(paths: list[Path], image_size: int) -> np.ndarray:
    """Images that are face crops already (an aligned data set), as uint8 (n, S, S, 3) at `image_size`."""
    from PIL import Image

    out = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = np.asarray(im.convert("RGB").resize((image_size, image_size), Image.BILINEAR))
    return out


class FaceCrops(Dataset):
    """uint8 crops (N, S, S, 3) + integer labels -> (normalised float tensor, label), light augmentation.
    `normalization` is the checkpoint's (`Preprocessing.normalization`). With `not_labels` (the class each crop
    was reported not to be, -1 for none) items are (tensor, label, not_label)."""

    def __init__(self, crops: np.ndarray, labels, augment: bool = True, seed: int = 0,
                 normalization: str = "fixed_standardization", not_labels=None):
        self.crops = crops
        self.normalization = normalization
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.not_labels = None if not_labels is None else torch.as_tensor(np.asarray(not_labels), dtype=torch.long)
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.ascontiguousarray(self.crops[i])).permute(2, 0, 1).float()
        if self.augment:
            if self.rng.random() < 0.5:
                x = x.flip(2)
            gain = 1.0 + self.rng.uniform(-0.1, 0.1)          # small brightness/contrast jitter
            x = ((x - x.mean()) * gain + x.mean() + self.rng.uniform(-8, 8)).clamp(0, 255)
        if self.not_labels is not None:
            return normalize(x, self.normalization), self.labels[i], self.not_labels[i]
        return normalize(x, self.normalization), self.labels[i]


class PKSampler(Sampler[list[int]]):
    """Batches of P identities x K images each (identities with fewer than 2 images are left out). With
    `not_labels`, each identity in a batch brings up to `max_negatives` (default K) of the faces reported not
    to be it: hard negatives, mined beside it."""

    def __init__(self, labels, p: int, k: int, shuffle: bool = True, seed: int = 0, batches: int | None = None,
                 not_labels=None, max_negatives: int | None = None):
        self.by_label: dict[int, list[int]] = {}
        for i, lab in enumerate(torch.as_tensor(labels).tolist()):
            self.by_label.setdefault(lab, []).append(i)
        self.negatives: dict[int, list[int]] = {}
        for i, lab in enumerate([] if not_labels is None else torch.as_tensor(not_labels).tolist()):
            if lab >= 0:
                self.negatives.setdefault(lab, []).append(i)
        self.max_negatives = k if max_negatives is None else max_negatives
        self.usable = [lab for lab, idx in self.by_label.items() if len(idx) >= 2]
        if len(self.usable) < p:
            raise ValueError(f"need at least {p} identities with 2+ images, have {len(self.usable)}")
        self.p, self.k, self.shuffle = p, k, shuffle
        self.rng = random.Random(seed)
        self.batches = batches or max(1, sum(len(self.by_label[lab]) for lab in self.usable) // (p * k))

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for groups in self.groups():
            yield [i for g in groups for i in g]

    def groups(self):
        """Each batch as its P groups: one identity's K indexes, then its reported negatives."""
        order = list(self.usable)
        pos = len(order)
        for _ in range(self.batches):
            if pos + self.p > len(order):
                if self.shuffle:
                    self.rng.shuffle(order)
                pos = 0
            groups = []
            for lab in order[pos:pos + self.p]:
                idx = self.by_label[lab]
                group = self.rng.sample(idx, self.k) if len(idx) >= self.k else self.rng.choices(idx, k=self.k)
                neg = self.negatives.get(lab, [])
                groups.append(group + self.rng.sample(neg, min(len(neg), self.max_negatives)))
            pos += self.p
            yield groups


def make_loader(crops: np.ndarray, labels, batchsize: int, k: int = 4, shuffle: bool = True, augment: bool = True,
                batches: int | None = None, seed: int = 0, normalization: str = "fixed_standardization",
                not_labels=None, sampler: Sampler | None = None) -> DataLoader:
    """P x K batches of `crops`; with `not_labels`, reported faces join the identities they are not (items are
    then (x, label, not_label)). `sampler`: another batch sampler over the same indexes (e.g. distributed)."""
    sampler = sampler or PKSampler(labels, max(2, batchsize // k), k, shuffle, seed, batches, not_labels)
    return DataLoader(FaceCrops(crops, labels, augment, seed, normalization, not_labels), batch_sampler=sampler,
                      num_workers=0)


def load_dataset(root, batchsize: int, shuffle: bool = True, k: int = 4, cache_dir=".cache/training",
                 preprocessing: Preprocessing | None = None):
    """DataLoader over root/<class_label>/<image> with P x K batches; `.dataset.classes` lists the labels.
    `preprocessing`: the starting checkpoint's (default: the default weights')."""
    paths, names = list_images(Path(root))
    if not paths:
        raise ValueError(f"no images under {root}/<class_label>/")
    classes = sorted(set(names))
    labels = [classes.index(n) for n in names]
    pre = preprocessing or Preprocessing()
    loader = make_loader(cached_crops(paths, cache_dir, pre), labels, batchsize, k, shuffle,
                         normalization=pre.normalization)
    loader.dataset.classes = classes
    return loader

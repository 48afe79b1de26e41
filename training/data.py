"""Training data: `root/<class_label>/<image>` folders, MTCNN face crops cached on disk, P x K batches.

`load_dataset(root, batchsize, shuffle)` keeps the original design's signature: it returns a DataLoader
whose batches hold `batchsize` crops from batchsize // K identities (K images each), as online triplet
mining needs several images of each identity in a batch.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from model.preprocessing import fixed_image_standardization

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


def cached_crops(paths: list[Path], cache_dir: Path | None = None, image_size: int = 160, margin: int = 14,
                 pipeline=None) -> np.ndarray:
    """MTCNN crops (largest face; image centre when none), computed once and cached by path list."""
    key = hashlib.sha256(("|".join(map(str, paths)) + f"|{image_size}|{margin}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"train-crops-{key}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache)
    from benchmarks.lfw_embed import face_crops  # the service's crop, shared with the benchmarks
    from model.pipeline import FacePipeline

    pipeline = pipeline or FacePipeline.load(device="cpu")
    crops, _ = face_crops(pipeline, list(paths), image_size, margin)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, crops)
    return crops


class FaceCrops(Dataset):
    """uint8 crops (N, S, S, 3) + integer labels -> (standardised float tensor, label), light augmentation."""

    def __init__(self, crops: np.ndarray, labels, augment: bool = True, seed: int = 0):
        self.crops = crops
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
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
        return fixed_image_standardization(x), self.labels[i]


class PKSampler(Sampler[list[int]]):
    """Batches of P identities x K images each (identities with fewer than 2 images are left out)."""

    def __init__(self, labels, p: int, k: int, shuffle: bool = True, seed: int = 0, batches: int | None = None):
        self.by_label: dict[int, list[int]] = {}
        for i, lab in enumerate(torch.as_tensor(labels).tolist()):
            self.by_label.setdefault(lab, []).append(i)
        self.usable = [lab for lab, idx in self.by_label.items() if len(idx) >= 2]
        if len(self.usable) < p:
            raise ValueError(f"need at least {p} identities with 2+ images, have {len(self.usable)}")
        self.p, self.k, self.shuffle = p, k, shuffle
        self.rng = random.Random(seed)
        self.batches = batches or max(1, sum(len(self.by_label[lab]) for lab in self.usable) // (p * k))

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        order = list(self.usable)
        pos = len(order)
        for _ in range(self.batches):
            if pos + self.p > len(order):
                if self.shuffle:
                    self.rng.shuffle(order)
                pos = 0
            batch = []
            for lab in order[pos:pos + self.p]:
                idx = self.by_label[lab]
                batch += self.rng.sample(idx, self.k) if len(idx) >= self.k else self.rng.choices(idx, k=self.k)
            pos += self.p
            yield batch


def make_loader(crops: np.ndarray, labels, batchsize: int, k: int = 4, shuffle: bool = True, augment: bool = True,
                batches: int | None = None, seed: int = 0) -> DataLoader:
    sampler = PKSampler(labels, max(2, batchsize // k), k, shuffle, seed, batches)
    return DataLoader(FaceCrops(crops, labels, augment, seed), batch_sampler=sampler, num_workers=0)


def load_dataset(root, batchsize: int, shuffle: bool = True, k: int = 4, cache_dir=".cache/training"):
    """DataLoader over root/<class_label>/<image> with P x K batches; `.dataset.classes` lists the labels."""
    paths, names = list_images(Path(root))
    if not paths:
        raise ValueError(f"no images under {root}/<class_label>/")
    classes = sorted(set(names))
    labels = [classes.index(n) for n in names]
    loader = make_loader(cached_crops(paths, cache_dir), labels, batchsize, k, shuffle)
    loader.dataset.classes = classes
    return loader

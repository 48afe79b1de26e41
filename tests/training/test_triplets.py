"""Triplet loss and online selection against brute-force triple loops; a tiny run that learns."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from model.inception_resnet import InceptionResnetV1
from training.data import PKSampler, make_loader
from training.loss import TripletLoss, squared_distances
from training.train_inception import train_inception
from training.triplet_selection import TripletSelection, group_by_label


def tiny_batch(seed=0, n=12, dim=5):
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4])[:n]
    return emb, labels


def d2(a, b):
    return float(((a - b) ** 2).sum())


@pytest.mark.parametrize("seed", range(5))
def test_batch_all_equals_brute_force(seed):
    emb, y = tiny_batch(seed)
    sel = TripletSelection("batch_all", margin=0.2)
    got = set(zip(*(t.tolist() for t in sel(emb, y))))
    want = {(a, p, n) for a, p, n in itertools.product(range(len(y)), repeat=3)
            if a != p and y[a] == y[p] and y[a] != y[n] and d2(emb[a], emb[p]) - d2(emb[a], emb[n]) + 0.2 > 0}
    assert got == want and len(want) > 0


@pytest.mark.parametrize("seed", range(5))
def test_batch_hard_equals_brute_force(seed):
    emb, y = tiny_batch(seed)
    a, p, n = TripletSelection("batch_hard")(emb, y)
    got = {(int(i), int(j), int(k)) for i, j, k in zip(a, p, n)}
    want = set()
    for i in range(len(y)):
        pos = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [k for k in range(len(y)) if y[k] != y[i]]
        if pos and neg:
            want.add((i, max(pos, key=lambda j: d2(emb[i], emb[j])), min(neg, key=lambda k: d2(emb[i], emb[k]))))
    assert got == want


@pytest.mark.parametrize("seed", range(5))
def test_semi_hard_equals_brute_force(seed):
    emb, y = tiny_batch(seed)
    margin = 0.5
    a, p, n = TripletSelection("semi_hard", margin)(emb, y)
    got = {(int(i), int(j), int(k)) for i, j, k in zip(a, p, n)}
    want = set()
    for i, j in itertools.permutations(range(len(y)), 2):
        if y[i] != y[j]:
            continue
        ap = d2(emb[i], emb[j])
        semi = [k for k in range(len(y)) if y[k] != y[i] and ap < d2(emb[i], emb[k]) < ap + margin]
        if semi:
            want.add((i, j, min(semi, key=lambda k: d2(emb[i], emb[k]))))
    assert got == want


def test_loss_equals_brute_force():
    emb, y = tiny_batch(3)
    a, p, n = TripletSelection("batch_all")(emb, y)
    loss, active = TripletLoss(0.2).forward_mined(emb, a, p, n)
    want = np.mean([max(0.0, d2(emb[i], emb[j]) - d2(emb[i], emb[k]) + 0.2) for i, j, k in zip(a, p, n)])
    assert abs(float(loss) - want) < 1e-5 and active == 1.0
    explicit = TripletLoss(0.2)(emb[a], emb[p], emb[n])
    assert abs(float(explicit) - want) < 1e-5
    assert torch.allclose(squared_distances(emb)[0, 1], ((emb[0] - emb[1]) ** 2).sum(), atol=1e-6)


def test_group_by_label_and_pk_sampler():
    labels = [3, 1, 3, 2, 1, 3, 7]
    assert group_by_label(labels) == {3: [0, 2, 5], 1: [1, 4], 2: [3], 7: [6]}
    sampler = PKSampler(labels, p=2, k=2, batches=10)
    for batch in sampler:
        assert len(batch) == 4
        ids = [labels[i] for i in batch]
        assert all(ids.count(x) == 2 for x in set(ids)) and not {2, 7} & set(ids)


@pytest.mark.slow  # a real training run
def test_tiny_run_drives_the_loss_down():
    """Random weights, 8 synthetic identities (a pattern each, plus noise): 30 steps halve the loss."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 255, (8, 80, 80, 3))
    crops = np.clip(np.repeat(protos, 6, axis=0) + rng.normal(0, 25, (48, 80, 80, 3)), 0, 255).astype(np.uint8)
    labels = np.repeat(np.arange(8), 6)
    loader = make_loader(crops, labels, batchsize=16, k=4, augment=False, batches=30)
    net = InceptionResnetV1(dropout_prob=0.0)
    x_all = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - 127.5) / 128

    def loss_over_all_triplets() -> float:  # every valid triplet of the data set, satisfied ones count as 0
        net.train()
        with torch.no_grad():
            emb = net(x_all)
        d = squared_distances(emb)
        y = torch.as_tensor(labels)
        same = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)
        valid = same[:, :, None] & (y[:, None, None] != y[None, None, :])
        return float(torch.relu(d[:, :, None] - d[:, None, :] + 0.2)[valid].mean())

    before = loss_over_all_triplets()
    train_inception(loader, 16, net, TripletLoss(0.2), torch.optim.Adam(net.parameters(), 1e-3), False, 1,
                    selector=TripletSelection("batch_all", 0.2), freeze_bn=False, amp=False)
    after = loss_over_all_triplets()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("seed", range(3))
def test_reported_negatives_are_added_to_the_mined_triplets(mining, seed):
    """Sample 11 (label 4) was reported not to be label 2, sample 9 (label 3) not label 0: every valid,
    margin-violating triplet over those pairs (either way round) joins what the strategy mined."""
    emb, y = tiny_batch(seed)
    not_y = torch.full_like(y, -1)
    not_y[11], not_y[9] = 2, 0
    margin = 0.5
    sel = TripletSelection(mining, margin)
    mined = set(zip(*(t.tolist() for t in sel(emb, y))))
    got = set(zip(*(t.tolist() for t in sel(emb, y, not_y))))
    reported = {(a, n) for a, n in itertools.product(range(len(y)), repeat=2)
                if (not_y[n] == y[a]) or (not_y[a] == y[n])}
    extra = {(a, p, n) for a, p, n in itertools.product(range(len(y)), repeat=3)
             if a != p and y[a] == y[p] and (a, n) in reported and d2(emb[a], emb[p]) - d2(emb[a], emb[n]) + margin > 0}
    assert got == mined | extra and extra
    assert set(zip(*(t.tolist() for t in sel(emb, y, torch.full_like(y, -1))))) == mined


def test_pk_sampler_brings_the_reported_negatives_of_its_identities():
    labels = [0, 0, 0, 1, 1, 1, 5, 6, 7]
    not_labels = [-1, -1, -1, -1, -1, -1, 0, 0, 1]  # 6 and 7 are not identity 0, 8 is not identity 1
    sampler = PKSampler(labels, p=1, k=2, batches=6, not_labels=not_labels)
    for batch in sampler:
        ident = labels[batch[0]]
        assert [labels[i] for i in batch[:2]] == [ident, ident]
        assert sorted(batch[2:]) == ([6, 7] if ident == 0 else [8])

"""The feedback loop's recipe on a tiny network (seconds, no weights): the learning rate follows the steps and
never the clock, L2-SP equals its definition, and the kept weights are those of the best evaluation the
gate's rule passes (re-evaluating them gives that evaluation's figures again)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from training.data import make_loader
from training.gate import identification_report
from training.loss import TripletLoss
from training.recipe import L2SP, KeepBest, blend_state, lr_factor, step_schedule
from training.tiny import TinyEmbedder
from training.train_inception import embed_for_training, train_inception


def brute_factor(step, total, warmup, kind):
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / (total - warmup))
    return {"cosine": (1 + math.cos(math.pi * t)) / 2, "linear": 1 - t, "constant": 1.0}[kind]


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_lr_factor_warms_up_then_decays_to_zero_at_the_last_step(kind):
    total, warmup = 50, 5
    got = [lr_factor(s, total, warmup, kind) for s in range(total + 1)]
    assert got == pytest.approx([brute_factor(s, total, warmup, kind) for s in range(total + 1)])
    assert got[warmup - 1] == 1.0 and max(got) == 1.0
    if kind != "constant":
        assert got[total] == pytest.approx(0.0, abs=1e-12)
        assert all(a >= b for a, b in zip(got[warmup:], got[warmup + 1:]))  # never rises after the warm-up


def test_bad_schedule_settings_are_refused():
    with pytest.raises(ValueError):
        lr_factor(0, 0)
    with pytest.raises(ValueError):
        lr_factor(0, 10, kind="step")


def data(n_people=6, per=4, seed=0, noise_seed=None):
    """`per` noisy copies of each of `n_people` random images (another `noise_seed`: other copies of the same)."""
    rng = np.random.default_rng(seed)
    base = 128 + rng.integers(-25, 25, (n_people, 1, 40, 40, 3))  # people differ less than their images do
    rng = rng if noise_seed is None else np.random.default_rng(noise_seed)
    crops = np.clip(base + rng.integers(-100, 100, (n_people, per, 40, 40, 3)), 0, 255).astype(np.uint8)
    return crops.reshape(-1, 40, 40, 3), np.repeat(np.arange(n_people), per)


def lrs_of_a_run(max_steps, delay_s=0.0):
    torch.manual_seed(0)
    net = TinyEmbedder()
    crops, labels = data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = step_schedule(opt, max_steps, warmup_steps=2)
    seen = []

    def on_step(step, loss):
        seen.append(opt.param_groups[0]["lr"])
        time.sleep(delay_s)  # a slow machine: more seconds per step, the same rates per step

    train_inception(make_loader(crops, labels, 8, 2, augment=False), 8, net, TripletLoss(0.2), opt, False, 100,
                    max_steps=max_steps, max_minutes=60, scheduler=sched, on_step=on_step)
    return seen


def test_the_schedule_follows_the_steps_not_the_clock():
    fast, slow = lrs_of_a_run(8), lrs_of_a_run(8, delay_s=0.05)
    assert len(fast) == len(slow) == 8
    assert fast == pytest.approx(slow)
    assert fast == pytest.approx([0.1 * lr_factor(s + 1, 8, 2) for s in range(8)])  # after step s+1 is taken
    assert fast[-1] == pytest.approx(0.0, abs=1e-12)


def test_l2sp_is_half_alpha_times_the_squared_distance_of_the_trained_weights():
    torch.manual_seed(0)
    net = TinyEmbedder()
    reg = L2SP(net, alpha=0.3)
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    assert reg(net).item() == 0.0
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    net.conv1[0].weight.requires_grad_(False)  # a frozen block costs nothing
    want = sum(((p - start[n]) ** 2).sum().item() for n, p in net.named_parameters() if p.requires_grad)
    assert reg(net).item() == pytest.approx(0.15 * want, rel=1e-5)
    reg(net).backward()
    assert torch.allclose(net.last_linear.weight.grad, 0.3 * (net.last_linear.weight - start["last_linear.weight"]))


def figures(net, crops, labels):
    from model.preprocessing import normalize

    net.eval()
    with torch.no_grad():
        x = normalize(torch.from_numpy(crops).permute(0, 3, 1, 2), "fixed_standardization")
        emb = embed_for_training(net, x, None)[0].numpy()
    return identification_report(emb, labels, np.ones(labels.max() + 1, bool), 0.1, min_false_matches=1)


def test_the_kept_weights_are_the_best_evaluation_that_passes_and_training_stops_when_nothing_improves():
    torch.manual_seed(0)
    net = TinyEmbedder()
    crops, labels = data(8, 4)
    val_crops, val_labels = data(8, 6, noise_seed=1)  # other images of the same people: training can help
    base = figures(net, val_crops, val_labels)
    keeper = KeepBest(base, None, patience=3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    history = train_inception(make_loader(crops, labels, 8, 2, augment=False), 8, net, TripletLoss(0.2), opt,
                              False, 100, max_steps=60, validate_every=2, should_stop=lambda: keeper.stop,
                              validate=lambda n, step: keeper.offer(step, n, figures(n, val_crops, val_labels),
                                                                    None))
    curve = keeper.curve
    assert [p["step"] for p in curve] == list(range(2, 2 * len(curve) + 1, 2))
    passing = [p for p in curve if p["passes_gate"]]
    if history["stopped_early"]:
        assert history["steps"] < 60 and not any(p["best"] for p in curve[-3:])
    assert passing and len(passing) < len(curve), curve  # this seed's curve rises, then falls back
    kept = keeper.restore(net, history["stopped_early"])
    assert ("stopped early" in kept["reason"]) == history["stopped_early"]
    best = max(passing, key=lambda p: (p["score"], -p["step"]))
    assert kept["step"] == best["step"] and [p["step"] for p in curve if p["best"]][-1] == best["step"]
    again = figures(net, val_crops, val_labels)
    assert (again["rank1"], again["fnir"]) == (best["rank1"], best["fnir"])


def test_keep_best_refuses_what_the_gate_refuses():
    base = {"rank1": 0.5, "fnir": 0.5, "target_fpir": 0.01}
    keeper = KeepBest(base, 0.98, max_lfw_drop_points=0.5, patience=2)
    net = torch.nn.Linear(2, 2)
    assert not keeper.offer(1, net, {"rank1": 0.9, "fnir": 0.1}, 0.97)["passes_gate"]   # LFW fell 1 point
    assert not keeper.offer(2, net, {"rank1": 0.4, "fnir": 0.1}, 0.98)["passes_gate"]   # rank-1 fell
    assert keeper.stop and keeper.best_step is None
    assert keeper.offer(3, net, {"rank1": 0.6, "fnir": 0.5}, 0.978)["best"]
    assert not keeper.stop and keeper.restore(net)["step"] == 3


def test_a_blend_is_the_point_between_the_starting_and_the_trained_weights():
    torch.manual_seed(0)

    def make():
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
        net[1].running_mean.uniform_(), net[1].num_batches_tracked.fill_(int(torch.randint(1, 99, ())))
        return net

    start_net, trained_net = make(), make()
    start, trained = start_net.state_dict(), trained_net.state_dict()
    for alpha in (0.0, 0.3, 1.0):
        got = blend_state(start, trained, alpha)
        assert got.keys() == trained.keys()
        for k, v in trained.items():
            if torch.is_floating_point(v):
                assert torch.allclose(got[k], start[k] * (1 - alpha) + v * alpha, atol=1e-6), k
            else:  # batch-norm counters are the trained model's
                assert torch.equal(got[k], v) and not torch.equal(v, start[k]), k
    start_net.load_state_dict(blend_state(start, trained, 1.0))
    x = torch.randn(3, 3, 32, 32)
    start_net.eval(), trained_net.eval()
    assert torch.allclose(start_net(x), trained_net(x), atol=1e-5)
    with pytest.raises(ValueError):
        blend_state(start, trained, 1.5)


def test_blends_offered_at_one_step_are_one_evaluation_and_a_kept_blend_is_restored():
    base = {"rank1": 0.5, "fnir": 0.5, "target_fpir": 0.01}
    keeper = KeepBest(base, 0.98, max_lfw_drop_points=0.5, patience=2)
    trained, blend = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    # step 10: the trained weights forget LFW, their halfway blend passes and is kept
    assert keeper.offer(10, blend, {"rank1": 0.6, "fnir": 0.4}, 0.978, blend=0.5)["best"]
    assert not keeper.offer(10, trained, {"rank1": 0.8, "fnir": 0.3}, 0.96)["passes_gate"]
    # steps 20 and 30: nothing better from either; two evaluations, not four offers, end it
    for step in (20, 30):
        assert not keeper.stop
        keeper.offer(step, blend, {"rank1": 0.55, "fnir": 0.4}, 0.98, blend=0.5)
        keeper.offer(step, trained, {"rank1": 0.9, "fnir": 0.1}, 0.95)
    assert keeper.stop and keeper.since_best == 2
    kept_weight = blend.weight.detach().clone()
    with torch.no_grad():  # from_gallery reuses one module for every blend: the keeper holds a copy
        blend.weight.add_(1.0)
    into = torch.nn.Linear(2, 2)
    kept = keeper.restore(into, stopped_early=True)
    assert (kept["step"], kept["blend"]) == (10, 0.5) and "blend 0.5" in kept["reason"]
    assert "rank-1 0.6000" in kept["reason"] and "of 6 weights evaluated (at 3 steps" in kept["reason"]
    assert torch.equal(into.weight, kept_weight)


def test_a_tie_between_a_blend_and_the_trained_weights_keeps_the_blend():
    base = {"rank1": 0.5, "fnir": 0.5, "target_fpir": 0.01}
    keeper = KeepBest(base, 0.98)
    blend, trained = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    keeper.offer(5, blend, {"rank1": 0.7, "fnir": 0.4}, 0.98, blend=0.5)
    assert not keeper.offer(5, trained, {"rank1": 0.7, "fnir": 0.4}, 0.98)["best"]
    into = torch.nn.Linear(2, 2)
    assert keeper.restore(into)["blend"] == 0.5 and torch.equal(into.weight, blend.weight)

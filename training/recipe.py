"""The feedback loop's training recipe, tied to steps rather than to minutes: a learning-rate schedule over
`total_steps` (linear warm-up, then cosine or linear decay), L2-SP (a pull toward the serving weights, Li et al.
2018, "Explicit inductive bias for transfer learning with convolutional networks") and checkpoint selection
(`KeepBest`: every evaluation is judged by the gate's own rule against the serving model; the best one that
passes is kept, and training stops when `patience` evaluations in a row bring nothing better) and weight
blending (`blend_state`: a point on the straight line between the weights training started from and the trained
ones, as WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"; each evaluation can offer
blends beside the trained weights, and the selection keeps whichever the gate likes best).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from training.gate import decide

SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
              final_fraction: float = 0.0) -> float:
    """The multiplier of the base learning rate for optimiser step `step` (0-based) of `total_steps`: a linear
    warm-up over `warmup_steps`, then `kind` decay to `final_fraction` at `total_steps`."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}")
    if total_steps < 1:
        raise ValueError("total_steps must be at least 1")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / span))
    shape = 0.5 * (1.0 + math.cos(math.pi * t)) if kind == "cosine" else 1.0 - t
    return final_fraction + (1.0 - final_fraction) * shape


def step_schedule(optimizer, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
                  final_fraction: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to step once per optimiser step (never per second: the same steps, the same rates)."""
    lr_factor(0, total_steps, warmup_steps, kind, final_fraction)  # refuse bad settings now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, kind, final_fraction))


class L2SP:
    """`alpha / 2 * sum ||w - w0||^2` over the parameters that train, `w0` the weights at construction (the
    serving model's); parameters that do not train (frozen blocks, batch-norm) cost nothing."""

    def __init__(self, net: nn.Module, alpha: float, skip: tuple[str, ...] = ("logits.",)):
        self.alpha = alpha
        self.reference = {n: p.detach().clone() for n, p in net.named_parameters() if not n.startswith(skip)}

    def distance(self, net: nn.Module) -> torch.Tensor:
        """`sum ||w - w0||^2` over the trained parameters (with gradients)."""
        total = torch.zeros(())
        for n, p in net.named_parameters():
            if p.requires_grad and n in self.reference:
                ref = self.reference[n].to(p.device)
                total = total.to(p.device) + (p.float() - ref.float()).pow(2).sum()
        return total

    def __call__(self, net: nn.Module) -> torch.Tensor:
        return 0.5 * self.alpha * self.distance(net)


def blend_state(start: dict, trained: dict, alpha: float) -> dict:
    """`start + alpha * (trained - start)` for every floating-point tensor (alpha 1: the trained weights, 0: the
    start); anything else (counters) from `trained`."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    out = {}
    for k, v in trained.items():
        w0 = start.get(k)
        if w0 is not None and torch.is_floating_point(v):
            out[k] = torch.lerp(w0.to(v.device, v.dtype), v, alpha)
        else:
            out[k] = v.clone() if isinstance(v, torch.Tensor) else v
    return out


class KeepBest:
    """Checkpoint selection by the gate's own rule: an evaluation passes when `training.gate.decide` would
    publish it against the serving model's figures (`base`, `base_lfw`; LFW on the same pair subset). Among the
    ones that pass, the best has the highest rank-1 minus FNIR (ties: the earlier step, the nearer the serving
    weights). `stop` turns true after `patience` evaluations in a row without a new best."""

    def __init__(self, base: dict, base_lfw: float | None, max_lfw_drop_points: float = 0.5, patience: int = 4):
        self.base, self.base_lfw = base, base_lfw
        self.max_lfw_drop_points, self.patience = max_lfw_drop_points, patience
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.best_state: dict | None = None
        self.best_blend: float = 1.0
        self.last_step: int | None = None
        self.curve: list[dict] = []

    @property
    def since_best(self) -> int:
        """Evaluations (distinct steps) since the best one, all of them when none passed yet."""
        return len({p["step"] for p in self.curve if self.best_step is None or p["step"] > self.best_step})

    def offer(self, step: int, net: nn.Module, held_out: dict, lfw_accuracy: float | None,
              blend: float = 1.0) -> dict:
        """Record one evaluation of `net` at `step` (`blend`: its share of the trained weights, 1 unless it is a
        blend with the starting ones); keep a copy of its weights when it is the best so far. Offer the nearer
        blends first: a tie keeps the first. Returns its point of the learning curve."""
        ok, reasons = decide(self.base, held_out, self.base_lfw, lfw_accuracy, self.max_lfw_drop_points)
        score = held_out["rank1"] - held_out["fnir"]
        better = ok and (self.best_score is None or score > self.best_score)
        if better:
            self.best_step, self.best_score, self.best_blend = step, score, blend
            self.best_state = copy.deepcopy(net.state_dict())
        self.last_step = step
        point = {"step": step, "blend": blend, "rank1": held_out["rank1"], "fnir": held_out["fnir"],
                 "lfw_accuracy": lfw_accuracy, "passes_gate": ok, "score": round(score, 6), "best": better,
                 "gate": reasons or ["passed"]}
        self.curve.append(point)
        return point

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def restore(self, net: nn.Module, stopped_early: bool = False) -> dict:
        """Load the kept weights into `net`; returns {step, blend, reason}. When no evaluation passed, `net` stays
        as trained (the last step) and the final gate will refuse it. `stopped_early`: training ended on `stop`."""
        if self.best_state is None:
            return {"step": self.last_step, "blend": 1.0, "reason": "no evaluation passed the gate against the "
                    "serving model; the last step is the candidate"}
        net.load_state_dict(self.best_state)
        entry = next(p for p in self.curve if p["step"] == self.best_step and p["blend"] == self.best_blend)
        what = "" if self.best_blend == 1.0 else f"the blend {self.best_blend:g} of the way from the starting weights; "
        passed, offered = sum(p["passes_gate"] for p in self.curve), len(self.curve)
        steps = len({p["step"] for p in self.curve})
        what += f"best held-out rank-1 minus FNIR among the {passed} of {offered} "
        what += "evaluations" if offered == steps else f"weights evaluated (at {steps} steps, with their blends)"
        reason = (f"{what} that passed the gate (rank-1 {entry['rank1']:.4f}, FNIR {entry['fnir']:.4f}")
        reason += f", LFW {entry['lfw_accuracy']:.4f})" if entry["lfw_accuracy"] is not None else ")"
        if stopped_early:
            reason += f"; stopped early: {self.since_best} evaluations without a better one"
        return {"step": self.best_step, "blend": self.best_blend, "reason": reason}

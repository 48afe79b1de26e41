"""A second, different but working checkpoint for swap tests and benchmarks (no training needed)."""
from __future__ import annotations

from pathlib import Path

import torch

from model.pipeline import build_network, load_checkpoint
from training.publish import checkpoint_payload, write_checkpoint


def perturbed_checkpoint(path: Path, seed: int = 1) -> str:
    """casia-webface with its bottleneck batch-norm gains scaled by random factors in [1, 1.3]; returns its version.
    It keeps the base model's calibration (a fixture for swap mechanics, not a calibrated model)."""
    ckpt = load_checkpoint("casia-webface")
    net = build_network(ckpt)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.last_bn.weight.mul_(1 + 0.3 * torch.rand(net.last_bn.weight.shape, generator=g))
    payload = checkpoint_payload(net, name=Path(path).stem, base_weights="casia-webface",
                                 preprocessing=ckpt.preprocessing, thresholds=dict(ckpt.thresholds))
    write_checkpoint(payload, Path(path))
    return payload["metadata"]["version"]

"""Write a fine-tuned checkpoint (state_dict + metadata, content-hash version) atomically, and optionally
tell a running server to swap to it.

The file is written to a temp name and `os.replace`d, so the server's directory watcher or a reader never
sees half a file.
"""
from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import torch

from model.weights import Preprocessing, atomic_save, state_dict_hash


def checkpoint_payload(net: torch.nn.Module, *, name: str, base_weights: str, preprocessing: Preprocessing,
                       thresholds: dict | None = None, metrics: dict | None = None, data: dict | None = None,
                       keep_logits: bool = False, architecture: str = "InceptionResnetV1") -> dict:
    sd = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()
          if keep_logits or not k.startswith("logits.")}
    version = state_dict_hash(sd)[:16]
    meta = {"architecture": architecture, "format": 1, "name": name, "version": version,
            "base_weights": base_weights, "preprocessing": preprocessing.__dict__,
            "embedding_size": preprocessing.embedding_size, "input_size": [3, preprocessing.image_size,
                                                                           preprocessing.image_size],
            "thresholds": thresholds or {}, "metrics": metrics or {}, "training_data": data or {},
            "created_at": datetime.now(timezone.utc).isoformat()}
    return {"state_dict": sd, "metadata": meta}


def write_checkpoint(payload: dict, path: Path) -> Path:
    atomic_save(payload, Path(path))
    return Path(path)


def notify_server(base_url: str, checkpoint_name: str, api_key: str | None = None, timeout_s: float = 30) -> dict:
    """POST /admin/model {"checkpoint": name} to a running faceid server."""
    req = urllib.request.Request(f"{base_url.rstrip('/')}/admin/model", method="POST",
                                 data=json.dumps({"checkpoint": checkpoint_name}).encode(),
                                 headers={"content-type": "application/json", **({"x-api-key": api_key} if api_key else {})})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the user's own server URL
        return json.loads(resp.read())

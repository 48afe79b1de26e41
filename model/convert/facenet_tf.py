"""Frozen TensorFlow FaceNet graph (davidsandberg 20180408-102900) -> InceptionResnetV1 state_dict.

The graph is read with TensorBoard's protobuf classes (no TensorFlow). Batch-norm is folded into the
graph's convolutions (`weights` + `Conv2D_bn_offset`), so each BasicConv2d gets the folded kernel and an
identity batch-norm whose bias is the offset: eval-mode output equals the graph's to float precision.
"""
from __future__ import annotations

import numpy as np
import torch

from model.inception_resnet import InceptionResnetV1

_SCOPE = "InceptionResnetV1"
_STEM = {
    "conv2d_1a": "Conv2d_1a_3x3", "conv2d_2a": "Conv2d_2a_3x3", "conv2d_2b": "Conv2d_2b_3x3",
    "conv2d_3b": "Conv2d_3b_1x1", "conv2d_4a": "Conv2d_4a_3x3", "conv2d_4b": "Conv2d_4b_3x3",
}
# Per block type: PyTorch sub-path -> TensorFlow sub-scope.
_BLOCK35 = {"branch0": "Branch_0/Conv2d_1x1", "branch1.0": "Branch_1/Conv2d_0a_1x1",
            "branch1.1": "Branch_1/Conv2d_0b_3x3", "branch2.0": "Branch_2/Conv2d_0a_1x1",
            "branch2.1": "Branch_2/Conv2d_0b_3x3", "branch2.2": "Branch_2/Conv2d_0c_3x3"}
_BLOCK17 = {"branch0": "Branch_0/Conv2d_1x1", "branch1.0": "Branch_1/Conv2d_0a_1x1",
            "branch1.1": "Branch_1/Conv2d_0b_1x7", "branch1.2": "Branch_1/Conv2d_0c_7x1"}
_BLOCK8 = {"branch0": "Branch_0/Conv2d_1x1", "branch1.0": "Branch_1/Conv2d_0a_1x1",
           "branch1.1": "Branch_1/Conv2d_0b_1x3", "branch1.2": "Branch_1/Conv2d_0c_3x1"}
_MIXED_6A = {"branch0": "Branch_0/Conv2d_1a_3x3", "branch1.0": "Branch_1/Conv2d_0a_1x1",
             "branch1.1": "Branch_1/Conv2d_0b_3x3", "branch1.2": "Branch_1/Conv2d_1a_3x3"}
_MIXED_7A = {"branch0.0": "Branch_0/Conv2d_0a_1x1", "branch0.1": "Branch_0/Conv2d_1a_3x3",
             "branch1.0": "Branch_1/Conv2d_0a_1x1", "branch1.1": "Branch_1/Conv2d_1a_3x3",
             "branch2.0": "Branch_2/Conv2d_0a_1x1", "branch2.1": "Branch_2/Conv2d_0b_3x3",
             "branch2.2": "Branch_2/Conv2d_1a_3x3"}


def basic_conv_map() -> dict[str, str]:
    """PyTorch BasicConv2d prefix -> TensorFlow scope, for every folded conv of the network."""
    out = {k: f"{_SCOPE}/{v}" for k, v in _STEM.items()}
    for prefix, tf_block, count, table in (("repeat_1", "Repeat/block35", 5, _BLOCK35),
                                           ("repeat_2", "Repeat_1/block17", 10, _BLOCK17),
                                           ("repeat_3", "Repeat_2/block8", 5, _BLOCK8)):
        for i in range(count):
            for k, v in table.items():
                out[f"{prefix}.{i}.{k}"] = f"{_SCOPE}/{tf_block}_{i + 1}/{v}"
    out.update({f"block8.{k}": f"{_SCOPE}/Block8/{v}" for k, v in _BLOCK8.items()})
    out.update({f"mixed_6a.{k}": f"{_SCOPE}/Mixed_6a/{v}" for k, v in _MIXED_6A.items()})
    out.update({f"mixed_7a.{k}": f"{_SCOPE}/Mixed_7a/{v}" for k, v in _MIXED_7A.items()})
    return out


def up_conv_map() -> dict[str, str]:
    """PyTorch residual up-projection (`<block>.conv2d`) -> TensorFlow `Conv2d_1x1` scope."""
    out = {}
    for prefix, tf_block, count in (("repeat_1", "Repeat/block35", 5), ("repeat_2", "Repeat_1/block17", 10),
                                    ("repeat_3", "Repeat_2/block8", 5)):
        for i in range(count):
            out[f"{prefix}.{i}.conv2d"] = f"{_SCOPE}/{tf_block}_{i + 1}/Conv2d_1x1"
    out["block8.conv2d"] = f"{_SCOPE}/Block8/Conv2d_1x1"
    return out


def read_graph_constants(pb_bytes: bytes) -> dict[str, np.ndarray]:
    """All float `Const` nodes of a frozen GraphDef, by node name."""
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.util import tensor_util

    graph = GraphDef()
    graph.ParseFromString(pb_bytes)
    consts = {}
    for node in graph.node:
        if node.op == "Const":
            arr = tensor_util.make_ndarray(node.attr["value"].tensor)
            if arr.dtype == np.float32:
                consts[node.name] = arr
    return consts


def convert(pb_bytes: bytes, num_classes: int = 10575) -> dict[str, torch.Tensor]:
    """Return a facenet-pytorch-layout state_dict (with an untrained zero `logits` head of `num_classes`,
    CASIA-WebFace's 10575 classes by default)."""
    consts = read_graph_constants(pb_bytes)
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        used.add(name)
        return torch.from_numpy(np.ascontiguousarray(consts[name]))

    model = InceptionResnetV1(classify=True, num_classes=num_classes).eval()
    sd = model.state_dict()
    eps = model.conv2d_1a.bn.eps
    for pt, tf in basic_conv_map().items():
        weight = take(f"{tf}/weights").permute(3, 2, 0, 1)  # HWIO -> OIHW
        offset = take(f"{tf}/Conv2D_bn_offset")
        sd[f"{pt}.conv.weight"] = weight.contiguous()
        # identity batch-norm: (x - 0) / sqrt((1 - eps) + eps) * 1 + offset
        sd[f"{pt}.bn.weight"] = torch.ones_like(offset)
        sd[f"{pt}.bn.bias"] = offset
        sd[f"{pt}.bn.running_mean"] = torch.zeros_like(offset)
        sd[f"{pt}.bn.running_var"] = torch.full_like(offset, 1.0 - eps)
    for pt, tf in up_conv_map().items():
        sd[f"{pt}.weight"] = take(f"{tf}/weights").permute(3, 2, 0, 1).contiguous()
        sd[f"{pt}.bias"] = take(f"{tf}/biases")
    sd["last_linear.weight"] = take(f"{_SCOPE}/Bottleneck/weights").t().contiguous()
    sd["last_bn.weight"] = take(f"{_SCOPE}/Bottleneck/BatchNorm/Const")
    sd["last_bn.bias"] = take(f"{_SCOPE}/Bottleneck/BatchNorm/beta")
    sd["last_bn.running_mean"] = take(f"{_SCOPE}/Bottleneck/BatchNorm/moving_mean")
    sd["last_bn.running_var"] = take(f"{_SCOPE}/Bottleneck/BatchNorm/moving_variance")
    # The frozen graph ends at the embedding: it has no classifier, so the head starts at zero.
    sd["logits.weight"] = torch.zeros(num_classes, sd["last_bn.weight"].shape[0])
    sd["logits.bias"] = torch.zeros(num_classes)

    float_weights = {n for n, a in consts.items() if a.ndim >= 1 and a.size > 4}
    missing = float_weights - used
    if missing:
        raise ValueError(f"graph constants not mapped to the network: {sorted(missing)[:5]}")
    model.load_state_dict(sd, strict=True)  # shape check of every tensor
    return {k: v.clone() for k, v in model.state_dict().items()}

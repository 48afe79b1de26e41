"""InceptionResnetV1: facenet-pytorch key layout, conversion fidelity, torch home, quality on real photos."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from model.inception_resnet import InceptionResnetV1
from model.weights import (
    REGISTRY,
    WeightsError,
    fetch,
    get_torch_home,
    load_pretrained,
    load_state_dict,
    read_offline_member,
)


def facenet_pytorch_layout(num_classes: int) -> dict[str, tuple]:
    """Keys and shapes of facenet-pytorch's published casia-webface/vggface2 files, from its architecture:
    BasicConv2d = conv (no bias) + BatchNorm2d; residual blocks end in a biased 1x1 conv."""
    out: dict[str, tuple] = {}

    def basic(prefix, cin, cout, kh, kw):
        out[f"{prefix}.conv.weight"] = (cout, cin, kh, kw)
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.bn.{p}"] = (cout,)
        out[f"{prefix}.bn.num_batches_tracked"] = ()

    for name, cin, cout, k in (("conv2d_1a", 3, 32, 3), ("conv2d_2a", 32, 32, 3), ("conv2d_2b", 32, 64, 3),
                               ("conv2d_3b", 64, 80, 1), ("conv2d_4a", 80, 192, 3), ("conv2d_4b", 192, 256, 3)):
        basic(name, cin, cout, k, k)
    for i in range(5):
        p = f"repeat_1.{i}"
        basic(f"{p}.branch0", 256, 32, 1, 1)
        basic(f"{p}.branch1.0", 256, 32, 1, 1), basic(f"{p}.branch1.1", 32, 32, 3, 3)
        basic(f"{p}.branch2.0", 256, 32, 1, 1), basic(f"{p}.branch2.1", 32, 32, 3, 3)
        basic(f"{p}.branch2.2", 32, 32, 3, 3)
        out[f"{p}.conv2d.weight"], out[f"{p}.conv2d.bias"] = (256, 96, 1, 1), (256,)
    basic("mixed_6a.branch0", 256, 384, 3, 3)
    basic("mixed_6a.branch1.0", 256, 192, 1, 1), basic("mixed_6a.branch1.1", 192, 192, 3, 3)
    basic("mixed_6a.branch1.2", 192, 256, 3, 3)
    for i in range(10):
        p = f"repeat_2.{i}"
        basic(f"{p}.branch0", 896, 128, 1, 1)
        basic(f"{p}.branch1.0", 896, 128, 1, 1), basic(f"{p}.branch1.1", 128, 128, 1, 7)
        basic(f"{p}.branch1.2", 128, 128, 7, 1)
        out[f"{p}.conv2d.weight"], out[f"{p}.conv2d.bias"] = (896, 256, 1, 1), (896,)
    basic("mixed_7a.branch0.0", 896, 256, 1, 1), basic("mixed_7a.branch0.1", 256, 384, 3, 3)
    basic("mixed_7a.branch1.0", 896, 256, 1, 1), basic("mixed_7a.branch1.1", 256, 256, 3, 3)
    basic("mixed_7a.branch2.0", 896, 256, 1, 1), basic("mixed_7a.branch2.1", 256, 256, 3, 3)
    basic("mixed_7a.branch2.2", 256, 256, 3, 3)
    for p in [f"repeat_3.{i}" for i in range(5)] + ["block8"]:
        basic(f"{p}.branch0", 1792, 192, 1, 1)
        basic(f"{p}.branch1.0", 1792, 192, 1, 1), basic(f"{p}.branch1.1", 192, 192, 1, 3)
        basic(f"{p}.branch1.2", 192, 192, 3, 1)
        out[f"{p}.conv2d.weight"], out[f"{p}.conv2d.bias"] = (1792, 384, 1, 1), (1792,)
    out["last_linear.weight"] = (512, 1792)
    for p in ("weight", "bias", "running_mean", "running_var"):
        out[f"last_bn.{p}"] = (512,)
    out["last_bn.num_batches_tracked"] = ()
    out["logits.weight"], out["logits.bias"] = (num_classes, 512), (num_classes,)
    return out


@pytest.mark.parametrize("dname", ["vggface2", "casia-webface"])
def test_state_dict_matches_facenet_pytorch_layout(dname):
    model = InceptionResnetV1(classify=True, num_classes=REGISTRY[dname].num_classes)
    expected = facenet_pytorch_layout(REGISTRY[dname].num_classes)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected


@pytest.mark.slow  # a full network
def test_published_layout_checkpoint_loads_strict(tmp_path):
    """A plain state_dict file in facenet-pytorch's layout (what its releases hold) loads with strict=True."""
    layout = facenet_pytorch_layout(10575)
    gen = torch.Generator().manual_seed(0)
    sd = {k: (torch.tensor(7) if not s else torch.randn(s, generator=gen)) for k, s in layout.items()}
    path = tmp_path / "20180408-102900-casia-webface.pt"
    torch.save(sd, path)
    model = InceptionResnetV1(classify=True, num_classes=10575)
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


@pytest.mark.slow  # real weights
def test_converted_weights_load_strict_through_load_pretrained():
    model = load_pretrained("casia-webface")
    assert model.logits.out_features == 10575
    x = torch.randn(2, 3, 160, 160)
    emb = model(x)
    assert emb.shape == (2, 512)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])


@pytest.mark.slow
def test_conversion_reproduces_the_frozen_graph():
    """Our network with converted weights vs an independent node-by-node run of the TensorFlow graph."""
    from tensorboard.compat.proto.graph_pb2 import GraphDef

    from model.convert.facenet_tf import read_graph_constants
    from tests.model.tf_graph import run_graph

    data = read_offline_member(REGISTRY["casia-webface"].offline[0])
    graph = GraphDef()
    graph.ParseFromString(data)
    consts = read_graph_constants(data)
    from tensorboard.util import tensor_util
    for n in graph.node:  # integer constants (axes, shapes) too
        if n.op == "Const" and n.name not in consts:
            consts[n.name] = tensor_util.make_ndarray(n.attr["value"].tensor)
    x = torch.randn(2, 160, 160, 3, generator=torch.Generator().manual_seed(1)) * 0.8
    # the frozen graph's reshape constants fix the batch size at 1
    ref = torch.cat([run_graph(graph, consts, {"input": x[i:i + 1]}, "embeddings") for i in range(2)])
    model = InceptionResnetV1(classify=True, num_classes=10575)
    model.load_state_dict(load_state_dict("casia-webface"))
    model.classify = False
    with torch.no_grad():
        ours = model.eval()(x.permute(0, 3, 1, 2))
    assert (ours - ref).abs().max().item() < 1e-5


def test_get_torch_home_honours_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert get_torch_home() == str(tmp_path / "xdg" / "torch")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert get_torch_home() == str(tmp_path / "th")


@pytest.mark.slow  # real weights
def test_corrupt_cached_weights_give_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    bad = tmp_path / "checkpoints" / REGISTRY["casia-webface"].offline_file_name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(WeightsError, match="delete it"):
        load_state_dict("casia-webface")


def test_unknown_weight_set_is_refused():
    with pytest.raises(WeightsError, match="unknown weight set"):
        fetch("imagenet")


@pytest.mark.faces
def test_same_person_more_similar_than_different_person(faces, pipeline):
    """Every same-person pair of photos/ outscores every pair of different people, on average per person."""
    people = {}
    for d in sorted((faces / "photos").iterdir()):
        embs = []
        for img in sorted(d.glob("*.jpg"))[:3]:
            found = pipeline.process(img.read_bytes())
            if found:
                embs.append(max(found, key=lambda f: f.size).embedding)
        if len(embs) >= 2:
            people[d.name] = np.stack(embs)
    assert len(people) >= 10
    same = [float(e[i] @ e[j]) for e in people.values() for i, j in itertools.combinations(range(len(e)), 2)]
    diff = [float(a[0] @ b[0]) for a, b in itertools.combinations(people.values(), 2)]
    assert np.mean(same) > np.mean(diff) + 0.3
    # per person: own photos closer than anyone else's first photo
    for name, e in people.items():
        others = max(float(e[0] @ o[0]) for n, o in people.items() if n != name)
        assert float(e[0] @ e[1]) > others, name

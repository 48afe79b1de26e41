"""FacePipeline: image bytes -> faces (box, score, landmarks, aligned crop, 512-d unit embedding).

`Embedder` is an immutable snapshot of one embedding model (network, device, preprocessing, version,
thresholds): whoever holds it keeps using it, which is what makes hot swaps safe.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model import align
from model.draft import DraftImage, decode_for_detection
from model.inception_resnet import InceptionResnetV1, l2_normalize
from model.mtcnn import MTCNN, Detections
from model.preprocessing import normalize
from model.weights import REGISTRY, Preprocessing, WeightsError, fetch, state_dict_hash, _read

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded embedder checkpoint: weights plus the metadata that travels with them."""
    state_dict: dict
    name: str
    version: str
    preprocessing: Preprocessing
    thresholds: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def load_checkpoint(spec: str | Path) -> Checkpoint:
    """A registry name ('casia-webface') or a file: a raw facenet-pytorch state_dict or our {state_dict, metadata}."""
    spec_str = str(spec)
    if spec_str in REGISTRY:
        path, name = fetch(spec_str), spec_str
    else:
        path, name = Path(spec_str), Path(spec_str).stem
        if not path.is_file():
            raise WeightsError(f"checkpoint {path} does not exist")
    obj = _read(path)
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} does not hold a state_dict")
    meta = dict(obj.get("metadata") or {}) if "state_dict" in obj else {}
    sd = obj["state_dict"] if "state_dict" in obj else obj
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} does not hold a state_dict of tensors")
    pre = Preprocessing(**meta["preprocessing"]) if "preprocessing" in meta else (
        REGISTRY[name].preprocessing if name in REGISTRY else Preprocessing())
    # The version is what the gallery's vectors are filed under: always the weights' own content hash, never
    # what the file claims (a file claiming another model's version would be served that model's vectors).
    version = state_dict_hash(sd)[:16]
    thresholds = dict(meta.get("thresholds") or (REGISTRY[name].thresholds if name in REGISTRY else {}))
    return Checkpoint(state_dict=sd, name=meta.get("name", name), version=version, preprocessing=pre,
                      thresholds=thresholds, metadata=meta)


def build_network(ckpt: Checkpoint) -> InceptionResnetV1:
    """InceptionResnetV1 with the checkpoint loaded strictly (a `logits` head is kept only if present)."""
    sd = ckpt.state_dict
    num_classes = sd["logits.weight"].shape[0] if "logits.weight" in sd else None
    net = InceptionResnetV1(classify=False, num_classes=num_classes)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"checkpoint {ckpt.name} does not fit InceptionResnetV1: {str(exc)[:300]}") from exc
    return net.eval()


class Embedder:
    """Immutable embedding model snapshot: uint8 face crops -> (n, 512) float32 unit vectors."""

    def __init__(self, ckpt: Checkpoint, device: str | torch.device = "cpu", precision: str = "fp32",
                 flip: bool = False, build_int8: bool = True):
        # flip: test-time augmentation, each crop and its mirror image through the network, the normalised sum
        # kept. Its vectors differ from the plain ones, so they carry their own version (a gallery re-embeds).
        self.flip = bool(flip)
        self.name, self.version = ckpt.name, ckpt.version + ("+flip" if self.flip else "")
        self.preprocessing = ckpt.preprocessing
        self.thresholds = dict(ckpt.thresholds)
        self.device = resolve_device(str(device))
        self.precision_requested = precision
        # build_int8=False: a checkpoint whose int8 model is not cached yet runs its float path (a swap's quick
        # validation; the swap builds the int8 model in the background, before the switch)
        self.net, self.precision, self.precision_reason = _network(ckpt, self.device, precision, build_int8)

    @torch.inference_mode()
    def embed(self, crops: np.ndarray, max_batch_size: int = 64) -> np.ndarray:
        """`crops`: (n, H, W, 3) uint8 RGB at the preprocessing's image size."""
        if len(crops) == 0:
            return np.zeros((0, self.preprocessing.embedding_size), dtype=np.float32)
        out = []
        for start in range(0, len(crops), max_batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(crops[start:start + max_batch_size])).to(self.device)
            x = normalize(batch.permute(0, 3, 1, 2), self.preprocessing.normalization)
            if self.flip:
                y = self.net(torch.cat([x, x.flip(3)])).float()
                out.append(l2_normalize(y[: len(x)] + y[len(x):]).cpu().numpy())
            else:
                out.append(self.net(x).float().cpu().numpy())
        emb = np.concatenate(out)
        if not np.isfinite(emb).all():
            raise ValueError("the model produced non-finite embeddings")
        return emb


def _network(ckpt: Checkpoint, device: torch.device, precision: str, build_int8: bool = True):
    """(network to call, precision used, why) following model.fast.plan_precision: int8 when the checkpoint's
    int8 model (built and gated once, model.quantize) passes its gate, else the float path. An explicit
    'int8' that cannot be had is a WeightsError, not a silent fallback."""
    from model.fast import optimise, plan_precision  # local: keeps import of this module light

    net = build_network(ckpt).to(device)
    not_int8 = ""
    for chosen, why in plan_precision(device, precision):
        if chosen != "int8":
            folded, used = optimise(net, device, chosen)
            return folded, used, why + not_int8
        if device.type != "cpu":
            raise WeightsError("precision int8 runs on CPU (ONNX Runtime); on CUDA use fast or auto")
        from model.quantize import int8_embedder

        int8, how = int8_embedder(ckpt, net, build=build_int8 or precision == "int8")
        if int8 is not None:
            return int8, "int8", f"{why}; {how}"
        if precision == "int8":
            raise WeightsError(how)
        not_int8 = f"; not int8: {how}"
    raise WeightsError(f"no precision to run {precision!r} with")


@dataclass
class Face:
    box: np.ndarray          # x1 y1 x2 y2 in image pixels
    score: float
    landmarks: np.ndarray    # (5, 2)
    crop: np.ndarray         # (S, S, 3) uint8, what the embedder saw
    embedding: np.ndarray | None = None

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FacePipeline:
    """decode -> detect (MTCNN) -> crop -> embed: the one per-image flow, used by the library (`process`) and by
    the service (each step on its own, detection and embedding micro-batched). Detection is batched over images
    of any size. `embedder` is only a default for `process` and `faces`: the service passes its serving one."""

    def __init__(self, detector: MTCNN, embedder: Embedder | None = None, max_detect_side: int = 1280,
                 edge_pad_fraction: float = 0.1):
        self.detector = detector
        self.embedder = embedder
        self.max_detect_side = max_detect_side
        self.edge_pad_fraction = edge_pad_fraction

    @classmethod
    def load(cls, weights: str = "casia-webface", device: str = "auto", precision: str = "fp32",
             min_face_size: int = 20, thresholds=(0.6, 0.7, 0.7), max_detect_side: int = 1280,
             edge_pad_fraction: float = 0.1, detector_backend: str = "torch") -> "FacePipeline":
        dev = resolve_device(device)
        detector = load_detector(device=dev, min_face_size=min_face_size, thresholds=thresholds,
                                 backend=detector_backend)
        return cls(detector, Embedder(load_checkpoint(weights), dev, precision), max_detect_side, edge_pad_fraction)

    def detect(self, images: list[Image.Image], min_face_px: list[float] | None = None) -> list[Detections]:
        """Detect on copies scaled so the longer side is at most max_detect_side; map results back.
        A DraftImage is detected on its reduced decode, with boxes in full-resolution coordinates.
        `min_face_px`: per image, the smallest face the caller can use (full-resolution pixels, e.g. the
        search gate): the pyramid starts there, or at the detector's own minimum in the copy if that is larger.

        The copies get a mirrored border (edge_pad_fraction of the longer side): a face cut by the frame is
        completed by its own reflection and found; detections centred outside the image (mirror images) are
        dropped.
        """
        prepared, factors, pads, sizes, scales = [], [], [], [], []
        for im in images:
            scales.append(im.scale if isinstance(im, DraftImage) else 1)
            im = im.reduced if isinstance(im, DraftImage) else im  # detect on the reduced decode
            f = min(1.0, self.max_detect_side / max(im.size))
            if f != 1.0:
                im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BILINEAR)
            arr = np.asarray(im)
            pad = int(round(max(im.size) * self.edge_pad_fraction)) if min(im.size) >= 2 else 0
            if pad:
                arr = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
            prepared.append(arr)
            factors.append(f)
            pads.append(pad)
            sizes.append(im.size)
        wanted = None if min_face_px is None else [
            (px or 0) * f / k for px, f, k in zip(min_face_px, factors, scales)]  # in the copy's pixels
        out = []
        found = self.detector.detect(prepared, wanted) if wanted else self.detector.detect(prepared)
        for d, f, pad, (w, h), k in zip(found, factors, pads, sizes, scales):
            f = f / k  # back to full-resolution coordinates
            cx, cy = (d.boxes[:, 0] + d.boxes[:, 2]) / 2 - pad, (d.boxes[:, 1] + d.boxes[:, 3]) / 2 - pad
            keep = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            out.append(Detections(boxes=(d.boxes[keep] - pad) / f, scores=d.scores[keep],
                                  landmarks=(d.landmarks[keep] - pad) / f))
        return out

    def decode(self, data: bytes, max_pixels: int = 40_000_000) -> Image.Image | DraftImage:
        """An upload decoded for detection: a large JPEG at a reduced scale (full resolution decoded only where
        a small face needs it), anything else in full."""
        return decode_for_detection(data, max_pixels, self.max_detect_side)

    def faces(self, image: Image.Image, det: Detections, embedder: Embedder | None = None) -> list[Face]:
        """The faces of `det`, cropped the way `embedder`'s checkpoint expects (size, margin)."""
        pre = (embedder or self.embedder).preprocessing
        cut = image.crop if isinstance(image, DraftImage) else lambda *a: align.crop(image, *a)
        return [Face(box=det.boxes[i], score=float(det.scores[i]), landmarks=det.landmarks[i],
                     crop=cut(det.boxes[i], pre.image_size, pre.margin)) for i in range(len(det))]

    def process(self, data: bytes, max_pixels: int = 40_000_000, embedder: Embedder | None = None,
                min_face_px: float | None = None) -> list[Face]:
        """All faces of one uploaded image (of at least `min_face_px`, see `detect`), embedded by `embedder`
        (default: this pipeline's)."""
        embedder = embedder or self.embedder
        image = self.decode(data, max_pixels)
        faces = self.faces(image, self.detect([image], None if min_face_px is None else [min_face_px])[0], embedder)
        if faces:
            emb = embedder.embed(np.stack([f.crop for f in faces]))
            for f, e in zip(faces, emb):
                f.embedding = e
        return faces


def resolve_detector_backend(device: torch.device, backend: str = "auto") -> str:
    """'auto': ONNX Runtime on CPU (about 1.5x PyTorch there, benchmarks/detect.py) when it is installed,
    PyTorch on CUDA."""
    if backend != "auto":
        return backend
    from model.mtcnn_ort import onnxruntime_available
    return "onnxruntime" if torch.device(device).type == "cpu" and onnxruntime_available() else "torch"


def load_detector(device="cpu", min_face_size: int = 20, thresholds=(0.6, 0.7, 0.7), backend: str = "torch",
                  threads: int | None = None) -> MTCNN:
    """MTCNN with the registry weights; `backend`: torch | onnxruntime | auto (resolve_detector_backend)."""
    sd = _read(fetch("mtcnn"))
    det = MTCNN(min_face_size=min_face_size, thresholds=thresholds, device=device).load_weights(sd)
    return det.use_backend(resolve_detector_backend(det.device, backend), threads)


def infer(model: InceptionResnetV1, image, preprocessing: Preprocessing | None = None) -> np.ndarray:
    """The original design's helper: one face image (PIL or HxWx3 uint8, any size) -> its feature vector, sized
    and normalised as `preprocessing` says (a checkpoint's own; default: FaceNet's 160 px, fixed standardisation)."""
    pre = preprocessing or Preprocessing()
    size = (pre.image_size, pre.image_size)
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    if arr.shape[:2] != size:
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.BILINEAR))
    x = normalize(torch.from_numpy(arr.copy()).permute(2, 0, 1)[None], pre.normalization)
    model.eval()
    with torch.inference_mode():
        return model(x.to(next(model.parameters()).device)).float().cpu().numpy()[0]

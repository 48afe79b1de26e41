"""Re-export: the face-data location and LFW readers live in `training.datasets` (shared with training and
tests); kept so existing `benchmarks.faces` imports keep working."""
from training.datasets import REPO, faces_dir, lfw_image, read_pairs, read_people  # noqa: F401

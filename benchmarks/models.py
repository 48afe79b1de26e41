"""Re-export: `perturbed_checkpoint` lives in `training.perturb` (shared with the tests)."""
from training.perturb import perturbed_checkpoint  # noqa: F401

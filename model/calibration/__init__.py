"""Impostor-score calibration, by job: `tail` (the impostor tail, FPIR), `operating_point` (the threshold in
force), `pairs` (sampling and pair scores), `cohort` (probe normalisation). Import from the module that does
the job."""

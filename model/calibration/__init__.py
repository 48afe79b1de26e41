"""Impostor-score calibration, by job: `tail` (the impostor tail, FPIR), `operating_point` (the threshold in
force), `pairs` (sampling and pair scores), `cohort` (probe normalisation). Import from the module that does
the job; the names below are only listed here for callers that take them from the package."""
from model.calibration.cohort import (
    COHORT_CENTROIDS, COHORT_MIN_MEMBERS, COHORT_PEOPLE, COHORT_TOP, COHORT_WEIGHT, Cohort, cohort_people)
from model.calibration.operating_point import (
    GALLERY_MIN_EXCEEDANCES, WARN_FACTOR, OperatingPoint, gallery_adjusted, operating_point)
from model.calibration.pairs import (
    normalised_pair_scores, pair_scores, pick_identities, search_impostor_scores, search_score_matrix)
from model.calibration.tail import LEVELS, MIN_EXCEEDANCES, CalibrationError, ImpostorTail, fpir_at, per_comparison_rate

__all__ = ["COHORT_CENTROIDS", "COHORT_MIN_MEMBERS", "COHORT_PEOPLE", "COHORT_TOP", "COHORT_WEIGHT", "Cohort",
           "cohort_people", "GALLERY_MIN_EXCEEDANCES", "WARN_FACTOR", "OperatingPoint", "gallery_adjusted",
           "operating_point", "normalised_pair_scores", "pair_scores", "pick_identities", "search_impostor_scores",
           "search_score_matrix", "LEVELS", "MIN_EXCEEDANCES", "CalibrationError", "ImpostorTail", "fpir_at",
           "per_comparison_rate"]

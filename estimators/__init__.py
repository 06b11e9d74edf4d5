"""driftgate's numerical core: pure, batch-vectorized, mergeable estimators.

No I/O here: every estimator takes numpy arrays, merges with ``+=`` where merging
means something, and round-trips through ``to_state()`` / ``from_state()`` (plain
JSON-able dicts).
"""

from ._audit import AuditResult, DecileResidual, residuals_by_decile, transport_audit
from ._augmented import AugmentedEstimate, augmented_estimate, cross_fit_predictions
from ._bernoulli import BernoulliSequence
from ._binned_residuals import BinnedResiduals
from ._budget import BudgetPlan, VarianceModel, plan_for_budget, plan_for_mde
from ._calibration_quality import (
    CalibrationDecile,
    CalibrationQuality,
    calibration_quality,
    equivalence_labels_needed,
)
from ._calibrator_choice import CalibratorChoice, calibrator_from_state, choose_calibrator
from ._categories import (
    OTHER_CATEGORY,
    CategoryCounts,
    sequential_tv_bounds,
    tv_bounds,
    tv_event_count,
)
from ._change_detector import MeanShiftDetector
from ._co_moments import CoMoments
from ._disparity import DisparityInterval, disparity_ratio_sequence
from ._drift import (
    SEVERITY_THRESHOLDS,
    DriftResult,
    KSBounds,
    ks_critical_distance,
    ks_drift,
    population_stability_index,
    severity_band,
    sketch_ks_bounds,
)
from ._empirical_bernstein import EmpiricalBernsteinSequence
from ._event_rate import EventRate
from ._experiment_design import (
    CupedFit,
    RatioInterval,
    achieved_power,
    anytime_power,
    anytime_sample_size,
    bernoulli_moments,
    cuped_fit,
    cuped_sample_size,
    fixed_power,
    hedges_g,
    mean_sample_size,
    ratio_sequence,
    standardized_difference,
    two_proportion_sample_size,
)
from ._false_discovery import benjamini_hochberg, e_benjamini_hochberg
from ._isotonic import Calibrator, CovariateColumns, IdentityCalibrator, IsotonicCalibrator
from ._ks_sequence import (
    BASELINE_ALPHA_SHARE,
    dkw_radius,
    sequential_ks_bounds,
    sequential_ks_margin,
    time_uniform_dkw_radius,
)
from ._moments import Moments
from ._normal_mixture import (
    Interval,
    NormalMixtureSequence,
    normal_mixture_boundary,
    normal_mixture_half_width,
    optimal_rho,
)
from ._online_value import (
    OnlineLabelPlan,
    ValueEstimate,
    labels_to_exclude_zero,
    online_label_plan,
    online_value_estimate,
)
from ._paired_difference import PairedDifferenceSequence
from ._restarting import RestartingMeanSequence
from ._sketch import QuantileSketch
from ._sketch_bounds import exceedance_sequence, quantile_interval, quantile_rank_bounds
from ._srm import SampleRatioSequence, SplitCounts
from ._subgroups import BoundedMeanEProcess, GroupedMeans, default_bets
from ._two_sample import DifferenceInterval, mean_difference_sequence
from ._two_stage import CovariateEncoding, TwoStageCalibrator

__all__ = [
    "BASELINE_ALPHA_SHARE",
    "OTHER_CATEGORY",
    "SEVERITY_THRESHOLDS",
    "AuditResult",
    "AugmentedEstimate",
    "BernoulliSequence",
    "BinnedResiduals",
    "BoundedMeanEProcess",
    "BudgetPlan",
    "CalibrationDecile",
    "CalibrationQuality",
    "Calibrator",
    "CalibratorChoice",
    "CategoryCounts",
    "CoMoments",
    "CovariateColumns",
    "CovariateEncoding",
    "CupedFit",
    "DecileResidual",
    "DifferenceInterval",
    "DisparityInterval",
    "DriftResult",
    "EmpiricalBernsteinSequence",
    "EventRate",
    "GroupedMeans",
    "IdentityCalibrator",
    "Interval",
    "IsotonicCalibrator",
    "KSBounds",
    "MeanShiftDetector",
    "Moments",
    "NormalMixtureSequence",
    "OnlineLabelPlan",
    "PairedDifferenceSequence",
    "QuantileSketch",
    "RatioInterval",
    "RestartingMeanSequence",
    "SampleRatioSequence",
    "SplitCounts",
    "TwoStageCalibrator",
    "ValueEstimate",
    "VarianceModel",
    "achieved_power",
    "anytime_power",
    "anytime_sample_size",
    "augmented_estimate",
    "benjamini_hochberg",
    "bernoulli_moments",
    "calibration_quality",
    "calibrator_from_state",
    "choose_calibrator",
    "cross_fit_predictions",
    "cuped_fit",
    "cuped_sample_size",
    "default_bets",
    "disparity_ratio_sequence",
    "dkw_radius",
    "e_benjamini_hochberg",
    "equivalence_labels_needed",
    "exceedance_sequence",
    "fixed_power",
    "hedges_g",
    "ks_critical_distance",
    "ks_drift",
    "labels_to_exclude_zero",
    "mean_difference_sequence",
    "mean_sample_size",
    "normal_mixture_boundary",
    "normal_mixture_half_width",
    "online_label_plan",
    "online_value_estimate",
    "optimal_rho",
    "plan_for_budget",
    "plan_for_mde",
    "population_stability_index",
    "quantile_interval",
    "quantile_rank_bounds",
    "ratio_sequence",
    "residuals_by_decile",
    "sequential_ks_bounds",
    "sequential_ks_margin",
    "sequential_tv_bounds",
    "severity_band",
    "sketch_ks_bounds",
    "standardized_difference",
    "time_uniform_dkw_radius",
    "transport_audit",
    "tv_bounds",
    "tv_event_count",
    "two_proportion_sample_size",
]

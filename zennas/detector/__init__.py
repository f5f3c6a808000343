"""The whole detector around a searched backbone, as torch-free data: its settings (detector type,
neck, neck size, classes), the GFPN graph, and its analytic costs (backbone + neck + head)."""

from zennas.detector.cost import CostTerm, DetectorCosts, detector_costs, detector_flops_params, neck_head_cost
from zennas.detector.settings import DEFAULT_DETECTOR, DETECTOR_TYPES, NECK_TYPES, DetectorSettings

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTOR_TYPES",
    "NECK_TYPES",
    "CostTerm",
    "DetectorCosts",
    "DetectorSettings",
    "detector_costs",
    "detector_flops_params",
    "neck_head_cost",
]

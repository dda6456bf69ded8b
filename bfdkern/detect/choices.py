"""Names the detection commands offer (plain data: the command line reads them without importing torch)."""

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
"""Covariance structure of the one-class detector's Gaussian mixture components."""

ARCHES = ("resnet50", "resnet18")
"""Trunks of the supervised baselines (CNND, GramNet)."""

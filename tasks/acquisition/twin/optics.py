"""The probe's optics, shared with drift detection: lives in ``scopeflow.optics``."""

from scopeflow.optics import probe_otf, wavelength

__all__ = ["probe_otf", "wavelength"]

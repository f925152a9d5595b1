"""Label-free drift detection and ensemble-member selection (plain Python, no Prefect)."""

from .monitor import DETECTORS, Decision, DriftMonitor
from .physics import Proxies, frame_proxies, median_proxies, proxy_score
from .selection import Selection, select_members
from .spectrum import ImageStats, SpectrumReference, image_stats

__all__ = [
    "DETECTORS",
    "Decision",
    "DriftMonitor",
    "ImageStats",
    "Proxies",
    "Selection",
    "SpectrumReference",
    "frame_proxies",
    "image_stats",
    "median_proxies",
    "proxy_score",
    "select_members",
]

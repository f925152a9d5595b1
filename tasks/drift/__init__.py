"""Label-free drift detection and ensemble-member selection (plain Python, no Prefect)."""

from .detectors import MeanShiftDetector, MMDDetector
from .monitor import DETECTORS, Decision, DriftMonitor
from .physics import Proxies, frame_proxies, median_proxies, proxy_score
from .selection import Selection, select_members

__all__ = [
    "DETECTORS",
    "Decision",
    "DriftMonitor",
    "MMDDetector",
    "MeanShiftDetector",
    "Proxies",
    "Selection",
    "frame_proxies",
    "median_proxies",
    "proxy_score",
    "select_members",
]

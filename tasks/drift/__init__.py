"""Label-free drift detection and ensemble-member selection (plain Python, no Prefect)."""

from .detectors import EmbeddingDetector, MeanShiftDetector
from .monitor import DETECTORS, Decision, DriftMonitor
from .physics import Proxies, frame_proxies, median_proxies, proxy_score
from .selection import Selection, select_members

__all__ = [
    "DETECTORS",
    "Decision",
    "DriftMonitor",
    "EmbeddingDetector",
    "MeanShiftDetector",
    "Proxies",
    "Selection",
    "frame_proxies",
    "median_proxies",
    "proxy_score",
    "select_members",
]

"""scopeflow: autonomous microscopy from acquisition to cloud retraining."""

__version__ = "0.1.0"

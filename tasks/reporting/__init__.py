"""Figures of the loop for the Prefect UI, drawn with matplotlib (Agg) and returned as PNG bytes.

- ``atom_overlay``: a frame with its atom columns, coloured by uncertainty;
- ``drift_timeline``: detector scores per batch against the firing line, with the actions taken;
- ``f1_timeline``: F1 against ground truth over the frames, per model version;
- ``acquisition_map``: a DKL acquisition function over the candidates, measured and next points.

Plain functions of arrays: no Prefect, no storage. ``flows/artifacts.py`` publishes them.
"""

from tasks.reporting.acquisition_map import acquisition_map
from tasks.reporting.drift_timeline import drift_timeline
from tasks.reporting.f1_timeline import f1_timeline
from tasks.reporting.overlay import atom_overlay

__all__ = ["acquisition_map", "atom_overlay", "drift_timeline", "f1_timeline"]

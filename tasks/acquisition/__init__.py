"""Acquisition: the Instrument protocol, the folder watcher, and the acquisition loop.

The digital twin lives in ``tasks.acquisition.twin`` and is imported only where asked for.
"""

from .factory import INSTRUMENT_KINDS, make_instrument
from .instrument import Frame, Instrument, Truth
from .loop import BatchResult, acquire_batch, acquire_run, batches

__all__ = [
    "INSTRUMENT_KINDS",
    "BatchResult",
    "Frame",
    "Instrument",
    "Truth",
    "acquire_batch",
    "acquire_run",
    "batches",
    "make_instrument",
]

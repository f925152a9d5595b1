"""Acquisition: the Instrument protocol, the folder watcher, and the acquisition loop.

The digital twin lives in ``tasks.acquisition.twin`` and the loop that writes datasets in
``tasks.acquisition.loop``; both are imported only where asked for (storage depends on the
``Frame`` contract here, and the loop depends on storage).
"""

from .factory import INSTRUMENT_KINDS, make_instrument
from .instrument import Frame, Instrument, Truth

__all__ = ["INSTRUMENT_KINDS", "Frame", "Instrument", "Truth", "make_instrument"]

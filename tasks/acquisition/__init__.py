"""Acquisition: the Instrument protocol, the folder watcher, and the acquisition loop.

The digital twin lives in ``tasks.acquisition.twin`` and the loop that writes datasets in
``tasks.acquisition.loop``; both are imported only where asked for. The ``Frame`` an
instrument returns is ``scopeflow.frame.Frame`` (storage writes it, so it lives below both).
"""

from .factory import INSTRUMENT_KINDS, make_instrument
from .instrument import Instrument

__all__ = ["INSTRUMENT_KINDS", "Instrument", "make_instrument"]

"""Conformance suites: the contract of a seam, written once, that every implementation's tests
subclass (as zarr-python's ``zarr.testing.store.StoreTests``), so a new implementation gets the
whole contract by subclassing and implementations cannot quietly diverge.

The modules here hold no tests of their own (pytest collects only ``test_*.py``); the
subclasses live beside the implementation's other tests.
"""

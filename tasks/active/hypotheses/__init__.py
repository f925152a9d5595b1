"""Candidate physical laws for hypothesis learning, and loading a user's own from a file.

A hypotheses file is a Python module that defines either ``HYPOTHESES`` (a sequence of
``Hypothesis``) or ``hypotheses(nominal: float)`` returning one, where ``nominal`` is the
property's expected value (e.g. the lattice's plasmon energy, eV). ``strain`` holds three
laws of the plasmon energy against position (a strain gradient, an inclusion, a domain wall).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from scopeflow.errors import InputError

from ..structured import Hypothesis


def load_hypotheses(spec: str | Path, *, nominal: float) -> list[Hypothesis]:
    """Hypotheses from a ``.py`` file or a module name (``tasks.active.hypotheses.strain``)."""
    text = str(spec)
    try:
        if text.endswith(".py") or Path(text).is_file():
            path = Path(text)
            if not path.is_file():
                raise InputError(f"hypotheses file {path} does not exist")
            module_spec = importlib.util.spec_from_file_location(f"scopeflow_hypotheses_{path.stem}", path)
            if module_spec is None or module_spec.loader is None:
                raise InputError(f"cannot load hypotheses from {path}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(text)
    except InputError:
        raise
    except Exception as exc:  # a user's file may fail in any way; say which file and why
        raise InputError(f"cannot load hypotheses from {text}: {type(exc).__name__}: {exc}") from exc
    if hasattr(module, "hypotheses"):
        found = module.hypotheses(nominal)
    elif hasattr(module, "HYPOTHESES"):
        found = module.HYPOTHESES
    else:
        raise InputError(f"{text} defines neither HYPOTHESES nor hypotheses(nominal)")
    return check_hypotheses(found, text)


def check_hypotheses(found: object, where: str = "hypotheses") -> list[Hypothesis]:
    """``found`` as a list of ≥ 2 distinctly named hypotheses, or a clear error."""
    if not isinstance(found, Sequence) or not all(isinstance(h, Hypothesis) for h in found):
        raise InputError(f"{where}: expected a sequence of Hypothesis objects")
    names = [h.name for h in found]
    if len(found) < 2 or len(set(names)) != len(names):
        raise InputError(f"{where}: need ≥ 2 hypotheses with distinct names, got {names}")
    return list(found)


__all__ = ["check_hypotheses", "load_hypotheses"]

"""Active learning talks to a Spectrometer, never to the twin that simulates one."""

from __future__ import annotations

import ast
from pathlib import Path

import tasks.active
from tasks.acquisition.instrument import Spectrometer


def test_active_learning_does_not_import_the_twin() -> None:
    root = Path(tasks.active.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if "twin" in n.split(".")]
    assert offenders == []


def test_the_twins_eels_channel_is_a_spectrometer() -> None:
    from flows.explore import twin_sources
    from tasks.active.campaign_loop import ExploreConfig

    _, spectrometer = twin_sources(ExploreConfig())
    assert isinstance(spectrometer, Spectrometer)

"""Fixtures of the workflow tests; helpers live in wf_helpers.py (put on sys.path here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wf_helpers import REPO, load_yaml


@pytest.fixture
def tiny_config() -> dict:
    return load_yaml(REPO / "config/tiny.yaml")


@pytest.fixture
def paper_config() -> dict:
    return load_yaml(REPO / "config/config.yaml")

"""Tiny registered models and toy data sets for the training tests (fast on 2 CPU cores)."""

from __future__ import annotations

import pytest
import training_toys  # noqa: F401  (registers the tiny models)

from napari_segattn.models import registry


@pytest.fixture(autouse=True)
def _registry_without_zoo(monkeypatch):
    # While other model modules are being written the zoo may not import; the tests only need
    # their own tiny models.
    try:
        from napari_segattn.models import zoo  # noqa: F401
    except Exception:
        monkeypatch.setattr(registry, "_ensure_loaded", lambda: None)

"""The plugin's defaults from napari's settings (npe2 ``configurations``, napari >= 0.9)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Defaults:
    device: str = "auto"
    ig_steps: int = 50
    ig_baseline: str = "zeros"
    runs_folder: str = ""

    @property
    def runs_path(self) -> Path:
        return Path(self.runs_folder).expanduser() if self.runs_folder else Path.home() / "segattn-runs"


def plugin_defaults() -> Defaults:
    """User-set values from Settings > SegAttn defaults; built-in defaults when unavailable."""
    try:
        from napari.settings import get_plugin_settings

        s = get_plugin_settings("napari-segattn").defaults
        return Defaults(device=str(s.device), ig_steps=int(s.ig_steps), ig_baseline=str(s.ig_baseline),
                        runs_folder=str(s.runs_folder or ""))
    except Exception:  # older napari, or settings not readable: the built-in defaults
        return Defaults()

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


# -- recent models: the Model widget's dropdown ----------------------------------------------
RECENT_MAX = 8


def recent_file() -> Path:
    """Where recent models are remembered: beside napari's settings (``SEGATTN_RECENT_FILE``
    overrides, e.g. for tests); a JSON list, since npe2 settings have no list type the
    Preferences dialog can edit."""
    import os

    if os.environ.get("SEGATTN_RECENT_FILE"):
        return Path(os.environ["SEGATTN_RECENT_FILE"])
    try:
        from napari.settings._napari_settings import _CFG_PATH

        return Path(_CFG_PATH).parent / "napari-segattn-recent.json"
    except Exception:  # pragma: no cover - a napari without that module
        return Path.home() / ".config" / "napari-segattn-recent.json"


def recent_models() -> list[str]:
    """Models the user trained or loaded, newest first, that still exist."""
    import json

    try:
        paths = json.loads(recent_file().read_text())
    except (OSError, ValueError):
        return []
    return [p for p in paths if isinstance(p, str) and Path(p).exists()][:RECENT_MAX]


def remember_model(path) -> None:
    """Put ``path`` first in the recent list; a settings file we cannot write is no error."""
    import json

    path = str(Path(path).resolve())
    paths = [path] + [p for p in recent_models() if p != path]
    try:
        f = recent_file()
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(paths[:RECENT_MAX], indent=1))
    except OSError:
        pass


def recent_runs(root: Path | None = None, n: int = RECENT_MAX) -> list[Path]:
    """The newest run folders in the runs folder holding a model (best or last epoch)."""
    root = root or plugin_defaults().runs_path
    try:
        found = {p.parent if p.parent.name != "last" else p.parent.parent
                 for p in [*root.glob("*/model.safetensors"), *root.glob("*/last/model.safetensors")]}
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:n]

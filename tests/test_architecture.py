"""The GUI-free core never imports napari, Qt or the widgets (architecture.md)."""

import subprocess
import sys

CORE = ["models", "data", "training", "inference", "explain", "metrics"]


def test_core_imports_without_gui_modules():
    code = (
        "import sys\n"
        + "".join(f"import napari_segattn.{m}\n" for m in CORE)
        + "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'magicgui', 'vispy')"
        " or m.startswith('napari_segattn.widgets')]\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, f"core pulled in GUI modules: {res.stdout} {res.stderr[-2000:]}"


def test_import_linter_contract_holds():
    import shutil

    lint = shutil.which("lint-imports") or str(__import__("pathlib").Path(sys.executable).parent / "lint-imports")
    res = subprocess.run([lint], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]

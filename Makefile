# Two entry points do all set-up on a fresh Debian-like machine: `make demo` and `make test`.
# Each creates .venv when missing and installs only what changed (a stamp per input file).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := .venv-apt.stamp
# CPU torch from this machine's disk; a user with CUDA installs their own torch first and
# sets TORCH_SPEC= to keep it (torch is not pinned in the package metadata).
TORCH_SPEC ?= torch==2.13.0
APT_PKGS := xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libdbus-1-3 libfontconfig1 \
	libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1

.PHONY: demo test test-all test-slow bench venv system-deps clean screenshots

$(APT_STAMP):
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PKGS) >/dev/null; }; \
	else echo "note: not root or no apt-get; install these system packages yourself: $(APT_PKGS)"; fi
	@touch $@

system-deps: $(APT_STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/pip install -q -e ".[all,testing]"
	@touch $@

venv: $(STAMP)

demo: $(APT_STAMP) $(STAMP)
	$(BIN)/python -m napari_segattn demo

test: $(APT_STAMP) $(STAMP)
	QT_API=pyqt6 $(BIN)/python -m pytest -q

test-slow: $(APT_STAMP) $(STAMP)
	QT_API=pyqt6 $(BIN)/python -m pytest -q -m "slow" --run-slow

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf $(VENV) $(APT_STAMP) build dist *.egg-info src/*.egg-info

screenshots: $(APT_STAMP) $(STAMP)
	xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python scripts/make_screenshots.py

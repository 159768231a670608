# Two commands do all set-up on a fresh Debian machine:
#   make demo   - virtual environment, install, then the demo (headless pictures when there is no display)
#   make test   - virtual environment with test extras, Debian packages for a virtual display, whole suite under Xvfb
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned: 2.13.0 is the CPU build on this machine's disk; an unpinned torch pulls a multi-GB CUDA build
TORCH_PIN ?= torch==2.13.0
DEMO_ARGS ?=
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
# what napari needs to draw under Xvfb with Mesa OpenGL, and Qt's xcb platform plugin
APT_PACKAGES := xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libdbus-1-3 libfontconfig1 libxkbcommon-x11-0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
	libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0

.PHONY: demo test system-deps venv clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[test]" $(TORCH_PIN)
	touch $@

venv: $(BIN)/.installed

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: system-deps venv
	$(BIN)/dpfocus demo $(DEMO_ARGS)

test: system-deps venv
	xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info dpfocus-demo

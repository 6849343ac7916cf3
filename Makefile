# Two set-up commands: `make demo` and `make test`. Both create/refresh .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all lint format bench clean nuclei-model

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench,tiling,embed,mil,cells,cluster]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# Fast unit tests and integration tests; `slow` and `gpu` tests are opt-in (make test-all).
test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

# The default learned nucleus segmenter, trained on the shipped annotated tiles (fold 1 of 2;
# fold 2 validates; data, licences and scores in models/nuclei-learned.card.json). Not
# committed: MoNuSeg is CC BY-NC-SA 4.0 and CPM-15 states no licence.
nuclei-model: $(STAMP)
	$(VENV)/bin/sfc cells train ../shared/data/nuclei --hold-out --steps 3000 --batch-size 4 \
		--max-minutes 20 --out models/nuclei-learned.safetensors

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/read_region.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

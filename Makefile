# Every target sets up .venv on its own; torch is pinned to the release this machine carries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= bench_out

.PHONY: test bench app lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,scale]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check retrieval models ui tests bench
	$(BIN)/ruff format --check retrieval models ui tests bench
	$(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	$(BIN)/hashlens bench wiki --out $(OUT)/wiki
	$(BIN)/hashlens --encoder random bench index --out $(OUT)/index
	$(BIN)/hashlens bench search --out $(OUT)/search
	$(BIN)/hashlens --encoder random bench train --out $(OUT)/train
	$(BIN)/hashlens --encoder random bench duplicates --out $(OUT)/duplicates
	$(BIN)/hashlens bench scale --out $(OUT)/scale
	$(BIN)/hashlens bench clip --out $(OUT)/clip

app: $(STAMP)
	$(BIN)/python -m ui.prepare
	$(BIN)/streamlit run ui/app.py --server.headless true --browser.gatherUsageStats false

lint: $(STAMP)
	$(BIN)/ruff check --fix retrieval models ui tests bench
	$(BIN)/ruff format retrieval models ui tests bench

clean:
	rm -rf $(VENV) $(OUT)

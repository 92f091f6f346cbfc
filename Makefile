# Two commands for a fresh machine (both create or reuse the virtual environment .venv):
#   make run    install, then start the dashboard on the shipped default model
#   make test   install, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501

.PHONY: run test test-e2e install benchmark engines clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

run: install
	@echo "RealityCheck dashboard: http://localhost:$(PORT)"
	$(BIN)/streamlit run streamlit_app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: install
	$(BIN)/python -m pytest -q

test-e2e: install
	$(BIN)/python -m pytest -q -m e2e

benchmark: install  # the two runs behind the README's Speed tables
	$(BIN)/python benchmarks/run.py --engines torch,onnxruntime,openvino,auto --limit 200 --json benchmarks/results-engines.json
	$(BIN)/python benchmarks/run.py --limit 200 --skip-scorecam --json benchmarks/results.json

# Engine files shipped with the default model (weights/NAME.engines/): rerun after changing the default.
# Calibrates INT8 on the training split of the model's training folders, gates every engine against
# fp32 PyTorch on the test split of every shared source, keeps only what the chosen default needs.
ENGINE_WEIGHTS ?= weights/realitycheck-lite2-t2i.pt
ENGINE_DATA ?= manifests/shared-data.toml
DATA ?= ../shared/data
engines: install
	$(BIN)/realitycheck export $(ENGINE_WEIGHTS) --engine all --int8 --calibration $(ENGINE_DATA) --check $(ENGINE_DATA) --prune

clean:
	rm -rf $(VENV) .pytest_cache

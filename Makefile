# compress-repro: `make install` then `make test` (what CI runs).
PY ?= .venv/bin/python
DATA_ROOT ?= ../shared/data
export DATA_ROOT

.PHONY: install test test-slow bench report reproduce-%

install:
	python3 -m venv .venv
	.venv/bin/pip install -e ".[test]"

test:
	$(PY) -m pytest -q -p no:cacheprovider

test-slow:
	$(PY) -m pytest -q -m slow

bench:
	$(PY) scripts/bench_loader.py

report:
	$(PY) evaluate.py report

reproduce-%:
	bash scripts/reproduce_$*.sh

# compress-repro: `make install` then `make test` (what CI runs).
# PY: the project's .venv when `make install` made one, else `python` on PATH.
PY ?= $(firstword $(wildcard .venv/bin/python) python)
# DATA_ROOT: where datasets live (CI sets it); default ./datasets, or ../shared/data when a checkout sits beside one.
DATA_ROOT ?= $(firstword $(wildcard ../shared/data) datasets)
export DATA_ROOT

.PHONY: install test test-slow bench report reproduce-%

install:
	python3 -m venv .venv
	.venv/bin/pip install -e ".[test,cluster]"
	.venv/bin/python -m methods.common.popcount_build   # native kernels (XNOR-popcount, sketch) -> build/native/ (docs/binary_inference.md)

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

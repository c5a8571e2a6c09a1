# Two commands a newcomer needs (see README):  make demo   and   make test
# torch==2.13.0 (the CPU build on disk) is installed *before* the project, so its `torch>=2.4` range pulls
# nothing more -- a bare torch requirement on a machine without torch would fetch GBs of CUDA wheels.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
# one torch (OpenMP) thread: as fast as two for our small ops, and no spinning against the OpenMM workers
# (docs/benchmarks/bg_step.md; OMP_WAIT_POLICY=PASSIVE measured 2x slower)
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo linear test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/p4lightning fit --config configs/bg/demo.yaml
	@echo "figures and summary.json: docs/bg_demo/   checkpoint: runs/bg_demo/checkpoints/last.ckpt"

linear: setup
	$(PY) -m p4lightning.experiments.linear_lightning configs/linear/*.yaml --out docs/linear_experiments

lint: setup
	$(PY) -m ruff check p4lightning tests benchmarks

test: lint
	$(PY) -m pytest p4lightning tests

bench: setup
	$(PY) benchmarks/p4inv_step.py --budget 24 --out docs/benchmarks/p4inv_step
	$(PY) benchmarks/p4inv_floor.py --out docs/benchmarks/p4inv_floor
	$(PY) benchmarks/p4inv_floor.py --n 1024 --rounds 30 --block 4 --out docs/benchmarks/p4inv_floor_1024
	$(PY) benchmarks/drift.py --out docs/benchmarks/drift.json
	$(PY) benchmarks/energy_throughput.py --out docs/benchmarks/energy_throughput

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

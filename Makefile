# Two commands a newcomer needs (see README):  make demo   and   make test
# torch==2.13.0 (the CPU build on disk) is installed *before* the project, so its `torch>=2.4` range pulls
# nothing more -- a bare torch requirement on a machine without torch would fetch GBs of CUDA wheels.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
# one torch (OpenMP) thread: as fast as two for our small ops, and no spinning against the OpenMM workers
# (docs/benchmarks/thread_policy.md; OMP_WAIT_POLICY=PASSIVE measured 2x slower)
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo spline mixing mixing-headline reproduction linear test lint docs docs-serve bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $@

REPLICAS := data/ala2_600K_replicas
# held-out MD: the test replicas (never trained on); the validation replicas give each metric's floor
EVAL_MD := --trajectory '$(REPLICAS)/replica_03[6-9].dcd' --floor-trajectory '$(REPLICAS)/replica_03[2-5].dcd' \
	--topology $(REPLICAS)/topology.pdb

demo: setup
	$(VENV)/bin/p4lightning fit --config configs/bg/demo.yaml
	$(VENV)/bin/p4lightning evaluate --ckpt runs/bg_demo/checkpoints/last.ckpt checkpoints/spline_p4inv.ckpt \
		--name demo spline_p4inv $(EVAL_MD) --n 10000 --out docs/bg_demo/evaluation --force
	@echo "demo run: docs/bg_demo/   metric table and figures (demo and headline model): docs/bg_demo/evaluation/"

# the headline spline BG on 10^5 samples, beside its all-torsions-circular ablation and two RealNVP-P4Inv models
spline: setup
	$(VENV)/bin/p4lightning evaluate --ckpt checkpoints/spline_p4inv.ckpt checkpoints/spline_p4inv_circular_all.ckpt \
		checkpoints/improved_p4inv.ckpt checkpoints/paper_p4inv.ckpt \
		--name spline_P4Inv spline_P4Inv_all_circular P4Inv_improved P4Inv $(EVAL_MD) --n 100000 \
		--out docs/spline_bg --force

# p4inv vs mask vs lu mixing, two seeds each, on the demo's flow and protocol (about 40 min on 2 cores)
mixing: setup
	$(PY) -m p4lightning.experiments.mixing_study --config configs/bg/mixing_study.yaml --out docs/reproduction/mixing --force

# the paper's two BGs as shipped (standard Z-matrix, no aliasing) on 10^5 samples; docs/reproduction/table.md is
# the record of the first reproduction (backbone Z-matrix; configs/bg/paper_*_backbone.yaml)
reproduction: setup
	$(VENV)/bin/p4lightning evaluate --ckpt checkpoints/paper_rnvp.ckpt checkpoints/paper_p4inv.ckpt \
		--name RNVP P4Inv $(EVAL_MD) --n 100000 --out docs/reproduction/standard_zmatrix --force

# the three mixings at the headline protocol, seed 0 (the shipped checkpoints), on 10^5 samples
mixing-headline: setup
	$(VENV)/bin/p4lightning evaluate --ckpt checkpoints/spline_p4inv.ckpt checkpoints/spline_mask.ckpt \
		checkpoints/spline_lu.ckpt --name p4inv_s0 mask_s0 lu_s0 $(EVAL_MD) --n 100000 \
		--out docs/reproduction/mixing_headline --force

linear: setup
	$(PY) -m p4lightning.experiments.linear_lightning configs/linear/*.yaml --out docs/linear_experiments

lint: setup
	$(PY) -m ruff check p4lightning tests benchmarks docs/_ext

test: lint
	$(PY) -m pytest p4lightning tests

# the documentation site (mkdocs.yml): API reference from the docstrings, tutorials, the results in docs/
docs: setup
	$(PY) -m mkdocs build --strict --site-dir site

docs-serve: setup
	$(PY) -m mkdocs serve --dev-addr 127.0.0.1:8000

# every CPU entry of benchmarks/manifest.yaml, in its order (`python benchmarks/run.py --list` lists them)
bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# mlsl-gluon. Every install path goes through constraints.txt (mxnet 1.9.1 needs numpy < 1.24).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check mlsl_gluon tests tools

# The README's first command: the whole method on built-in generated data, CPU only (SEED=N optional).
# One OpenMP thread: MXNet's CPU kernels sum in a thread-count-dependent order, and over the
# demo's training that changes the figures by points; with one thread a seed gives the same
# numbers on every machine (6 min 40 s for seed 0 on an idle 2-core machine).
demo: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/mlsl-gluon demo --out runs/demo$(if $(SEED),-seed$(SEED) --seed $(SEED),)

clean:
	rm -rf $(VENV) build *.egg-info

# Paper Tables 1 (GTA5) and 2 (SYNTHIA): every row, resumable, then ours beside the paper's.
#   make reproduce-table1 DATA_ROOT=/data WEIGHTS_DIR=/weights [CTX=gpu:0] [REPRO_OUT=runs/table1]
#   make reproduce-table1 SMOKE=1   (tiny generated data, reduced sizes, CPU, a few minutes)
# PROFILE=released (default: the authors' code, which made the paper's numbers) or paper (the
# paper text; Table 1 then also runs Table 4's lambda_cls rows) into REPRO_OUT/paper/; SMOKE=1
# without PROFILE runs both (the paper profile on its source-only and SISC+PWL rows).
.PHONY: reproduce-table1 reproduce-table2
REPRO_OUT ?= runs/$(subst reproduce-,,$@)$(if $(SMOKE),-smoke,)
reproduce-table1 reproduce-table2: $(STAMP)
	@$(if $(SMOKE),,$(if $(and $(DATA_ROOT),$(WEIGHTS_DIR)),,$(error set DATA_ROOT=<folder with GTA5/ SYNTHIA/ Cityscapes/> and WEIGHTS_DIR=<folder with the CBST source models>, or SMOKE=1)))
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) tools/reproduce.py $(subst reproduce-,,$@) --out $(REPRO_OUT) \
		--profile $(or $(PROFILE),$(if $(SMOKE),both,released)) \
		$(if $(SMOKE),--smoke,--data-root "$(DATA_ROOT)" --weights-dir "$(WEIGHTS_DIR)" --ctx $(or $(CTX),cpu))

# mlsl-gluon. Every install path goes through constraints.txt (mxnet 1.9.1 needs numpy < 1.24).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install test lint demo demo-seeds clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Two pytest-xdist workers: most tests run one single-threaded process (tests/conftest.py sets one
# OpenMP thread), so on the 2-core CI machines two at a time use both cores.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check mlsl_gluon tests tools

# The README's first command: the whole method on built-in generated data, CPU only (SEED=N optional).
# One OpenMP thread: MXNet's CPU kernels sum in a thread-count-dependent order, and over the
# demo's training that changes the figures by points; with one thread a seed gives the same
# numbers on every machine. Settings and their reasons: docs/DEMO.md.
demo: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/mlsl-gluon demo --out runs/demo$(if $(SEED),-seed$(SEED) --seed $(SEED),)

# The README's seeds table: the demo for seeds 0-4 (SEEDS=...), two at a time, one thread each.
demo-seeds: $(STAMP)
	$(PY) tools/demo_seeds.py --seeds $(or $(SEEDS),0-4) --out runs/demo-seeds --jobs 2

clean:
	rm -rf $(VENV) build *.egg-info

# Paper Tables 1 (GTA5) and 2 (SYNTHIA): every row, resumable, then ours beside the paper's.
#   make reproduce-table1 DATA_ROOT=/data WEIGHTS_DIR=/weights [CTX=gpu:0] [REPRO_OUT=runs/table1]
#   make reproduce-table1 SMOKE=1   (tiny generated data, reduced sizes, CPU, a few minutes)
# PROFILE=released (default: the authors' code, which made the paper's numbers) or paper (the
# paper text; Table 1 then also runs Table 4's lambda_cls rows) into REPRO_OUT/paper/; SMOKE=1
# without PROFILE runs both (the paper profile on its source-only and SISC+PWL rows).
# Several hosts (README, "Several GPUs and several hosts"): the same command on every host with
#   KVSTORE=dist_sync DIST_SCHEDULER=<scheduler IP>:<first row's port> DIST_WORKERS=<workers in all>
#   DIST_HOST=<this host's IP> [DIST_LOCAL_WORKERS=<workers on this host, default 1>]
# and DIST_SERVE=1 on the one host that runs every row's scheduler and server.
.PHONY: reproduce-table1 reproduce-table2
REPRO_OUT ?= runs/$(subst reproduce-,,$@)$(if $(SMOKE),-smoke,)
REPRO_DIST = $(strip $(if $(KVSTORE),--kvstore $(KVSTORE)) $(if $(DIST_SCHEDULER),--scheduler $(DIST_SCHEDULER)) \
	$(if $(DIST_WORKERS),--workers $(DIST_WORKERS)) $(if $(DIST_LOCAL_WORKERS),--local-workers $(DIST_LOCAL_WORKERS)) \
	$(if $(DIST_HOST),--node-host $(DIST_HOST)) $(if $(DIST_SERVE),--serve))
reproduce-table1 reproduce-table2: $(STAMP)
	@$(if $(SMOKE),,$(if $(and $(DATA_ROOT),$(WEIGHTS_DIR)),,$(error set DATA_ROOT=<folder with GTA5/ SYNTHIA/ Cityscapes/> and WEIGHTS_DIR=<folder with the CBST source models>, or SMOKE=1)))
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) tools/reproduce.py $(subst reproduce-,,$@) --out $(REPRO_OUT) \
		--profile $(or $(PROFILE),$(if $(SMOKE),both,released)) \
		$(if $(SMOKE),--smoke,--data-root "$(DATA_ROOT)" --weights-dir "$(WEIGHTS_DIR)" --ctx $(or $(CTX),cpu)) $(REPRO_DIST)

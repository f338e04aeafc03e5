# Entry points. Every target creates the virtual environment and installs on first use.
#   make table1                      Table 1 on built-in data, this machine (PROFILE=local)
#   make table1 PROFILE=smoke        the same pipeline in seconds
#   make table1 PROFILE=paper CLUSTER=slurm DATA_ROOT=/data/stl10   at paper scale
#   make test                        the test suite
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PROFILE ?= local
CLUSTER ?= local
RUNS    ?= runs
DATA_ROOT ?=
ARGS    ?=

REPRO = $(PY) -m repro
LAUNCH = --profile $(PROFILE) --cluster $(CLUSTER) --runs $(RUNS) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(ARGS)

.PHONY: install test table1 status clean-table1

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

table1: $(STAMP)
	$(REPRO) run t01 $(LAUNCH)

status: $(STAMP)
	$(REPRO) status t01 --profile $(PROFILE) --runs $(RUNS)

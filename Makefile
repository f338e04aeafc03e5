# Entry points. Every target creates the virtual environment and installs on first use.
#   make table1                      Table 1 on built-in data, this machine (PROFILE=local)
#   make record-table1               after make table1: its run records into results/local/ and
#                                    README.md's figures regenerated from them
#   make table1 PROFILE=smoke        the same pipeline in about a minute
#   make table1 PROFILE=paper CLUSTER=<profile in slurm/> DATA_ROOT=/data/stl10
#   make table2 ... table8           the ImageNet tables (paper scale needs DATA_ROOT=imagenet)
#   make figure3                     Figure 3 from Table 4's results (also after make table4)
#   make table9 ... table12          transfer: COCO / LVIS (Detectron2), ImageNet 1% / 10%
#   make transfer-coco, transfer-lvis  Tables 9-10 / Table 11
#   make bench                       CPU benchmarks (bench/run_all.py), about 10 minutes on 2 cores
#   make preflight TABLE=1           a paper profile's rows built, priced and stepped once here (DATA_ROOT= checks files)
#   make bench-gpu                   CUDA checks and timings (bench/gpu_check.py), on a GPU machine
#   make curves TABLE=1              the training curves of table N at PROFILE, figures/out/curves_tableN_<profile>.png
#   make tables                      re-render every table that has results, and Figure 3
#   make test                        the fast tier: every test not marked slow (pytest -m "not slow"),
#                                    at least one in every area; under 10 minutes on 2 cores
#   make test-all                    every test: the fast tier and the slow tier (pytest -m slow: each
#                                    make target at PROFILE=smoke, the multi-process exactness tests,
#                                    the installed package, the end-to-end launches)
#   make report                      tables/out/report.{md,html}: every table, Figure 3, the claims'
#                                    verdicts, from runs/ and the committed results/cpu/
#   make cpu-evidence                CPU-scale evidence at profile cpu-8x4 (8 emulated devices x 4
#                                    images) into results/cpu: Tables 1, 4 and 6 in that order (each
#                                    run 20-50 minutes, two side by side on 2 cores; finished runs are
#                                    skipped, so it resumes), then make cpu-report.
#                                    Earlier designs: CPU_PROFILE=cpu-mnist CPU_TABLES=t01, or
#                                    CPU_PROFILE=cpu CPU_TABLES="t01 t06 t04"
#   make cpu-report                  results/cpu/report/ from the committed run records (seconds),
#                                    and results/cpu/variance-check.md (does the paper's biased
#                                    variance change the Momentum BN rows at cpu-8x4?)
#   make precision-check             bf16 + channels_last against fp32 at cpu-mnist, paired by seed:
#                                    runs t01 at cpu-mnist-bf16 (2 rows, about 20 minutes a seed),
#                                    writes results/cpu/precision-check.md
#   RUNS=dir OUT=dir FIG_OUT=dir     where runs, rendered tables and figures go (runs, tables/out, figures/out)
#   make slurm-up / slurm-down       a real SLURM cluster on this machine (root, Debian); NODES=3: plus 3
#                                    namespaced nodes (partition multi) for jobs that span nodes
#   make table1 PROFILE=smoke CLUSTER=slurm ARGS=--wait   Table 1 through SLURM (make slurm-up first)
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PROFILE ?= local
CLUSTER ?= local
RUNS    ?= runs
OUT     ?= tables/out
FIG_OUT ?= figures/out
DATA_ROOT ?=
ARGS    ?=
PYTEST_ARGS ?=

REPRO  = $(PY) -m repro
LAUNCH = --profile $(PROFILE) --cluster $(CLUSTER) --runs $(RUNS) --out $(OUT) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(ARGS)
TABLES = 1 2 3 4 5 6 7 8
TRANSFER = 9 10 11 12
tid = t$(if $(filter $(1),1 2 3 4 5 6 7 8 9),0)$(1)
FIG3   = $(FIG_OUT)/fig3.png

CPU_RUNS = results/cpu
CPU_PROFILE ?= cpu-8x4
CPU_TABLES ?= t01 t04 t06
CPU_PROFILES = cpu cpu-mnist cpu-8x4
# Table 1's Momentum BN rows at cpu-8x4 against the same rows with the paper's biased variance.
VARIANCE_PAIRS = --variant bn-mbn:bn-mbn-biased --variant syncbn-mbn:syncbn-mbn-biased

.PHONY: record-table1 preflight curves report cpu-report cpu-evidence precision-check slurm-up slurm-down install test test-all status tables figure3 bench bench-gpu transfer-coco transfer-lvis $(addprefix table,$(TABLES) $(TRANSFER))

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,transfer]'
	touch $@

# The slow marker (pyproject.toml) splits the suite in two tiers; make test-all runs both.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# make tableN: submit the unfinished runs of table N, wait (local), render tables/out/tableN.*
$(addprefix table,$(filter-out 4,$(TABLES))): table%: $(STAMP)
	$(REPRO) run t0$* $(LAUNCH)

$(addprefix table,$(TRANSFER)): table%: $(STAMP)
	$(REPRO) run $(call tid,$*) $(LAUNCH)

# make curves TABLE=N: loss (and kNN, where logged) against step for every row of table N.
TABLE ?= 1
curves: $(STAMP)
	$(REPRO) curves $(call tid,$(TABLE)) --profile $(PROFILE) --runs $(RUNS) --out $(FIG_OUT)

transfer-coco: table9 table10
transfer-lvis: table11

# lightly (the peer in bench/bench_peer_lightly.py) is installed only for the benchmarks.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,transfer,bench]'
	touch $@

bench: $(BENCH_STAMP)
	$(PY) bench/run_all.py $(ARGS)

# make preflight TABLE=1: every row of the table's paper profile built and stepped once here
TABLE   ?= 1
preflight: $(STAMP)
	$(REPRO) preflight $(call tid,$(TABLE)) --profile $(if $(filter local,$(PROFILE)),paper,$(PROFILE)) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

bench-gpu: $(STAMP)
	$(PY) bench/gpu_check.py $(ARGS)

# Table 4 feeds Figure 3: redraw it after the table (only if its results changed).
table4: $(STAMP)
	$(REPRO) run t04 $(LAUNCH)
	$(MAKE) --no-print-directory figure3

# $(OUT)/table4.csv is rewritten only when its content changes, so the figure is
# redrawn exactly when Table 4's results change, and never otherwise.
figure3: $(FIG3)
$(FIG3): $(OUT)/table4.csv figures/fig3_bn_batch.py repro/results/figures.py tables/t04_bn_batch.yaml | $(STAMP)
	$(PY) figures/fig3_bn_batch.py --results $(OUT) --out $(FIG_OUT)
$(OUT)/table4.csv: | $(STAMP)
	$(REPRO) render t04 --profile $(PROFILE) --runs $(RUNS) --out $(OUT) > /dev/null

tables: $(STAMP)
	for t in $(foreach n,$(TABLES) $(TRANSFER),$(call tid,$(n))); do \
	  $(REPRO) render $$t --profile $(PROFILE) --runs $(RUNS) --out $(OUT) > /dev/null || exit 1; done
	$(MAKE) --no-print-directory figure3

# The committed CPU-scale evidence (README, "What the CPU-scale evidence says"). Finished
# runs are skipped, so an interrupted campaign resumes where it stopped.
cpu-evidence: $(STAMP)
	test -f $(CPU_RUNS)/machine.json || $(PY) -m repro.results.provenance $(CPU_RUNS)/machine.json make cpu-evidence
	for t in $(CPU_TABLES); do \
	  $(REPRO) run $$t --profile $(CPU_PROFILE) --cluster local --runs $(CPU_RUNS) --out $(CPU_RUNS)/tables || exit 1; done
	$(MAKE) --no-print-directory cpu-report

# The README's figures for the default make table1 come from that command's own records.
record-table1: $(STAMP)
	$(PY) -m repro.results.readme record --runs $(RUNS)

cpu-report: $(STAMP)
	$(REPRO) report --runs $(CPU_RUNS) $(addprefix --profile ,$(CPU_PROFILES)) --out $(CPU_RUNS)/report
	$(REPRO) compare t01 --profile cpu-8x4 $(VARIANCE_PAIRS) --runs $(CPU_RUNS) --out $(CPU_RUNS)/variance-check.md > /dev/null

precision-check: $(STAMP)
	$(REPRO) run t01 --profile cpu-mnist-bf16 --cluster local --runs $(CPU_RUNS) --out $(CPU_RUNS)/tables
	$(REPRO) compare t01 --profile cpu-mnist --against cpu-mnist-bf16 --runs $(CPU_RUNS) --out $(CPU_RUNS)/precision-check.md

# The claims report over this machine's runs (RUNS) and the committed CPU-scale evidence, into OUT.
report: $(STAMP)
	$(REPRO) report --runs $(RUNS) --runs $(CPU_RUNS) --out $(OUT)

status: $(STAMP)
	$(REPRO) status $(call tid,$(or $(TABLE),1)) --profile $(PROFILE) --runs $(RUNS)

# NODES=2 (or 3): also that many nodes in partition `multi`, each slurmd in its own network
# and UTS namespace on this machine (.ci/slurm/start.sh); slurm-down removes them.
slurm-up:
	bash .ci/slurm/install.sh && NODES=$(or $(NODES),1) bash .ci/slurm/start.sh
slurm-down:
	bash .ci/slurm/stop.sh

# make demo: set up .venv and meta-train ProtoNets + LITE on the built-in glyph data.
# make test: set up .venv if needed and run the default test suite (what CI runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# tensorflow-cpu exists for x86-64 only; elsewhere plain tensorflow is the CPU build.
TF_EXTRA ?= $(if $(filter x86_64 AMD64,$(shell uname -m)),cpu,tf)

.PHONY: setup demo test test-all benchmark mutation

$(VENV)/.installed-$(TF_EXTRA): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(TF_EXTRA),test]'
	touch $@

setup: $(VENV)/.installed-$(TF_EXTRA)

demo: setup
	$(PY) bin/train.py --gin_config=gin/demo_protonets.gin --train_dir=runs/demo

# Test files run in TEST_WORKERS processes (pytest-xdist; a file's tests stay in one process,
# so its module fixtures are built once). TEST_WORKERS=0 runs them all in this process.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

test-all: setup
	$(PY) -m pytest tests

benchmark: setup
	$(PY) bin/benchmark_memory.py --backbone=resnet18 --image_size=224 \
	  --support_sizes=100,250,500,1000 --num_backprop=40 --chunk_size=40 --query_batch_size=40

# make mutation: mutmut over the estimator, ORBIT's metrics, the learners' heads and LiteModel,
# each group of files with its own fast test selection (tests/mutation_run.py); not part of
# make test. Results in build/mutation/GROUP; docs/MUTATION_TESTING.md reports a run.
MUTMUT_LIB ?= .mutmut-lib
MUTATION_GROUPS ?= estimator orbit_metrics heads model
MUTATION_CHILDREN ?= 2

$(MUTMUT_LIB)/.installed: | setup
	$(PY) -m pip install --quiet --target $(MUTMUT_LIB) mutmut==3.8.1
	touch $@

mutation: setup $(MUTMUT_LIB)/.installed
	PYTHONPATH=$(abspath $(MUTMUT_LIB)) nice -n 10 $(PY) tests/mutation_run.py \
	  --max_children=$(MUTATION_CHILDREN) $(MUTATION_GROUPS)

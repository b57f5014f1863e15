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
CKPT ?= $(ROOT)/train/final
HF ?= $(ROOT)/hf
CHAT ?=

export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

CLUSTER := $(filter spark://% yarn% k8s://% mesos://%,$(MASTER))
COMMON = --recipe $(RECIPE) $(foreach s,$(SET),--set $(s))
ifeq ($(CLUSTER),)
JOB = $(PY) -m jobs.$(1) $(if $(MASTER),--master '$(MASTER)') $(COMMON)
else
# Cluster (tools/dist.py): the code zip is rebuilt on each submit, so it matches the checkout, and
# shipped with --py-files; dist/submit.py runs jobs.<stage> from it (jobs/<stage>.py as the
# application file would let jobs/tokenize.py shadow the standard library). The model files travel
# as an archive unpacked as ./assets/ on executors (the same relative paths name the repository's
# assets/ for the driver). The environment `make dist` packed, when there is one, runs executors'
# Python; without it, nodes need this venv at the same path.
QWEN_LID_MODEL ?= assets/lid.176.ftz
QWEN_TIKTOKEN ?= assets/qwen.tiktoken
PACKED_ENV = $(if $(wildcard $(DIST)/env.tar.gz),$(comma)$(DIST)/env.tar.gz$(HASH)env --conf spark.pyspark.python=./env/bin/python)
CLUSTER_ARGS = --py-files $(DIST)/qwenforge.zip --archives $(DIST)/assets.tar.gz$(HASH)assets$(PACKED_ENV) \
  --conf spark.pyspark.driver.python=$(abspath $(PY))
JOB = $(PY) -m tools.dist --out $(DIST) --no-env --quiet && QWEN_LID_MODEL=$(QWEN_LID_MODEL) \
  QWEN_TIKTOKEN=$(QWEN_TIKTOKEN) $(VENV)/bin/spark-submit --master $(MASTER) $(CLUSTER_ARGS) $(SPARK_ARGS) \
  $(DIST)/submit.py $(1) $(COMMON)
endif
# The synthesis jobs run a model on executors: on a cluster they go through the same submit (dotted
# module names), with torch in the packed environment (make dist DIST_ARGS=--torch) and CKPT on a path
# every node can read.
SYNTH = $(if $(CLUSTER),$(call JOB,synth.$(1)),$(PY) -m synth.$(1) $(if $(MASTER),--master '$(MASTER)') $(COMMON))

SYNTH_TARGETS = sft rm ppo dpo online-dpo code-qwen math-qwen eval train-report code synth-select synth-evolve synth-math synth-code
.PHONY: $(SYNTH_TARGETS) setup test demo report kenlm crawl ingest extract langid quality perplexity train-quality train-kenlm train-lid safety dedup line-dedup substring-dedup decontam upsample mix tokenize train-tokenizer train bench chat export-hf import-hf clean help

help:
	@sed -n '1,10p' Makefile

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tools/setup.sh tools/assets.py stages/tokenize/_qwen_bpe.c stages/_minhash.c
	PYTHON=$(PYTHON) VENV=$(VENV) bash tools/setup.sh
	@touch $@

test: setup kenlm
	bash tools/install_chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup kenlm
	$(PY) -m jobs.demo --root $(ROOT) --recipe $(DEMO_RECIPE) $(foreach s,$(SET),--set $(s))
	$(PY) -m training.train --recipe training/recipes/demo.toml --data $(ROOT)/shards --out $(ROOT)/train
	$(MAKE) --no-print-directory sft rm ppo dpo online-dpo ROOT=$(ROOT)
	$(MAKE) --no-print-directory eval ROOT=$(ROOT) LIMIT=2 EVAL_SET='passkey.lengths=[512,2048] passkey.depths=[0.0,0.5,1.0]'
	$(PY) -m training.train_report --root $(ROOT)
	@echo "demo: in $(ROOT): report.html (pipeline), train/ (pretraining), sft/ rm/ ppo/ dpo/ online_dpo/ (alignment),"
	@echo "      eval/summary.md (evaluation), train_report.html (training curves of every stage)"

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

safety: setup
	$(call JOB,safety) --input $(ROOT)/quality --output $(ROOT)/safety

dedup: setup
	$(call JOB,dedup) --input $(ROOT)/safety --output $(ROOT)/dedup

line-dedup: setup
	$(call JOB,line_dedup) --input $(ROOT)/dedup --output $(ROOT)/line_dedup

substring-dedup: setup
	$(call JOB,substring_dedup) --input $(ROOT)/line_dedup --output $(ROOT)/substring_dedup

decontam: setup
	$(call JOB,decontam) --input $(ROOT)/substring_dedup --output $(ROOT)/decontam

upsample: setup
	$(call JOB,upsample) --input $(ROOT)/decontam --output $(ROOT)/upsample

mix: setup
	$(call JOB,mix_instructions) --input $(INSTRUCTIONS) --pretrain $(ROOT)/upsample --output $(ROOT)/mix

tokenize: setup
	$(call JOB,tokenize) --input $(TOKENIZE_INPUT) --output $(ROOT)/shards

train-tokenizer: setup
	$(call JOB,train_tokenizer) --input $(ROOT)/dedup --output $(ROOT)/tokenizer

STDLIB = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')

code: setup
	$(call JOB,ingest_code) --input $(STDLIB) --output $(ROOT)/code

synth-select: setup
	$(call SYNTH,select) --input ../shared/data/self-instruct/seed_tasks.jsonl --output $(ROOT)/synth/select

synth-evolve: synth-select
	$(call SYNTH,evolve) --model $(CKPT) --input $(ROOT)/synth/select --output $(ROOT)/synth/evolve --limit 32

synth-math: setup
	$(call SYNTH,rejection) --model $(CKPT) --input ../shared/data/gsm8k/train.jsonl --output $(ROOT)/synth/math --limit 32

synth-code: setup  # HumanEval as demo input only: it is an evaluation set (use MBPP-style train data for real runs)
	$(call SYNTH,execution) --model $(CKPT) --input ../shared/data/humaneval/HumanEval.jsonl.gz --output $(ROOT)/synth/code --limit 16

# every training phase runs under torchrun when NPROC > 1 (training/loop.py: DDP, or FSDP2 with train.fsdp=true)
TORCHRUN = $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --nproc_per_node=$(NPROC),$(PY))
TRAIN = $(TORCHRUN) -m training.train

train: setup
	$(TRAIN) --recipe $(TRAIN_RECIPE) --data $(ROOT)/shards --out $(ROOT)/train $(foreach s,$(TRAIN_SET),--set $(s))

chat: setup
	$(PY) -m training.chat --checkpoint $(CKPT)

export-hf: setup
	$(PY) -m training.model.hf export --checkpoint $(CKPT) --out $(HF) $(if $(filter 1 true yes,$(CHAT)),--chat)

import-hf: setup
	$(PY) -m training.model.hf import --hf $(HF) --out $(CKPT)

ALIGN_SET ?=
ALIGN = $(foreach s,$(ALIGN_SET),--set $(s))

sft: setup
	$(TORCHRUN) -m training.align.sft --recipe training/recipes/sft.toml --init $(CKPT) --data $(ROOT)/mix/sft --out $(ROOT)/sft $(ALIGN)

rm: setup
	$(TORCHRUN) -m training.align.reward --recipe training/recipes/rm.toml --init $(ROOT)/sft/final --data $(ROOT)/mix/preference \
	  --out $(ROOT)/rm $(ALIGN)

ppo: setup
	$(TORCHRUN) -m training.align.ppo --recipe training/recipes/ppo.toml --init $(ROOT)/sft/final --reward $(ROOT)/rm/final \
	  --prompts $(ROOT)/mix/preference --out $(ROOT)/ppo $(ALIGN)

dpo: setup
	$(TORCHRUN) -m training.align.dpo --recipe training/recipes/dpo.toml --init $(ROOT)/sft/final --data $(ROOT)/mix/preference \
	  --out $(ROOT)/dpo $(ALIGN)

online-dpo: setup
	$(TORCHRUN) -m training.align.online_dpo --recipe training/recipes/online_dpo.toml --init $(ROOT)/dpo/final \
	  --reward $(ROOT)/rm/final --data $(ROOT)/mix/preference --out $(ROOT)/online_dpo $(ALIGN)

code-qwen: setup  # Code-Qwen at toy scale: code-heavy data, continued pretraining of $(CKPT), then SFT
	$(PY) -m jobs.specialist code --root $(ROOT) $(foreach s,$(SET),--set $(s))
	$(PY) -m training.train --recipe training/recipes/code_qwen.toml --init $(CKPT) \
	  --data $(ROOT)/code-qwen/shards --out $(ROOT)/code-qwen/train
	$(TORCHRUN) -m training.align.sft --recipe training/recipes/code_qwen_sft.toml --init $(ROOT)/code-qwen/train/final \
	  --data $(ROOT)/mix/sft --out $(ROOT)/code-qwen/sft $(ALIGN)
	$(PY) -m training.train_report --root $(ROOT)/code-qwen

math-qwen: setup  # Math-Qwen at toy scale: math-heavy data, continued pretraining of $(CKPT), then SFT on math
	$(PY) -m jobs.specialist math --root $(ROOT) $(foreach s,$(SET),--set $(s))
	$(PY) -m training.train --recipe training/recipes/math_qwen.toml --init $(CKPT) \
	  --data $(ROOT)/math-qwen/shards --out $(ROOT)/math-qwen/train
	$(TORCHRUN) -m training.align.sft --recipe training/recipes/math_qwen_sft.toml --init $(ROOT)/math-qwen/train/final \
	  --data $(ROOT)/math-qwen/mix/sft --out $(ROOT)/math-qwen/sft $(ALIGN)
	$(PY) -m training.train_report --root $(ROOT)/math-qwen

EVAL_RECIPE ?= training/recipes/eval.toml
EVAL_SET ?=
TASKS ?=
LIMIT ?=

eval: setup
	$(PY) -m training.evaluate --checkpoint $(CKPT) --out $(ROOT)/eval --recipe $(EVAL_RECIPE) --shards $(ROOT)/shards \
	  $(if $(TASKS),--tasks $(TASKS)) $(if $(LIMIT),--limit $(LIMIT)) $(foreach s,$(EVAL_SET),--set $(s))

train-report: setup
	$(PY) -m training.train_report --root $(ROOT)

bench: setup
	$(PY) -m bench.run --out runs/bench

.PHONY: dist
DIST ?= dist
comma := ,
HASH := \#
dist: setup  # what executors need on a cluster: dist/qwenforge.zip, dist/assets.tar.gz, dist/env.tar.gz
	$(PY) -m tools.dist --out $(DIST) $(DIST_ARGS)

clean:
	rm -rf runs dist spark-warehouse metastore_db derby.log .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

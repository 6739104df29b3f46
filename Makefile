# liteconv — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LITECONV := $(VENV)/bin/liteconv
STAMP := $(VENV)/.installed
EXTRAS ?= train,dev,mcu
FASHION_DIR := /usr/share/datasets/fashion-mnist

.DEFAULT_GOAL := help
CONFIG ?= configs/experiments/fashion_mnist_flattened.yaml
DEMO_CONFIG ?= configs/experiments/fashion_mnist_demo.yaml
RUN ?=
ARGS ?=

TARGET ?= raspberry-pi-4

.PHONY: help install data sshd test test-fast lint train train-gpu evaluate bench-train \
        export-tflite bench bundle bench-layers report demo reproduce bench-arm64 bench-flatten \
        bench-budget bench-profile profile bench-emulation emulation-tools bench-flatten-resnet

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $@

install: $(STAMP)  ## create/refresh .venv with liteconv[train,dev] (pinned TF 2.21, tf-keras, tfmot)

data:  ## install the real Fashion-MNIST (Debian's dataset-fashion-mnist) where apt can
	@if ls $(FASHION_DIR)/train-images-idx3-ubyte.gz >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: $(FASHION_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null && \
	  echo "Fashion-MNIST installed in $(FASHION_DIR)"; \
	else \
	  echo "note: Fashion-MNIST not in $(FASHION_DIR): run 'sudo apt-get install dataset-fashion-mnist'" \
	       "(Debian/Ubuntu) or let liteconv download it through Keras when online"; \
	fi

sshd:  ## install Debian's openssh-server (the tests start their own sshd on 127.0.0.1) where apt can
	@if [ -x /usr/sbin/sshd ]; then \
	  echo "OpenSSH server: /usr/sbin/sshd"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq openssh-server || \
	   (apt-get update -qq && apt-get install -y -qq openssh-server)) >/dev/null && \
	  echo "OpenSSH server installed: /usr/sbin/sshd"; \
	else \
	  echo "note: no /usr/sbin/sshd: run 'sudo apt-get install openssh-server' for the SSH tests"; \
	fi

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512-class
# instruction sets; everywhere else (AMD before Zen 4, most laptops, ARM, GPUs) the portable
# kernels run, and they refuse what oneDNN accepts (unequal strides). So the suite runs on
# the portable kernels every machine has, and the layer tests run again with oneDNN on.
PORTABLE := TF_ENABLE_ONEDNN_OPTS=0
# Two pytest-xdist workers, a test file each at a time (its module fixtures built once);
# TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
LAYER_TESTS := tests/test_flattened.py tests/test_decompose.py tests/test_portable.py tests/test_flatten.py

test: install data sshd emulation-tools  ## the whole suite on TF's portable kernels (oneDNN off), then the layer tests with oneDNN on (what CI runs)
	$(PORTABLE) $(PY) -m pytest $(XDIST)
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m pytest $(XDIST) $(LAYER_TESTS)

test-fast: install  ## unit tests only (skips the `large` end-to-end cases), oneDNN off
	$(PORTABLE) $(PY) -m pytest $(XDIST) -m "not large"

lint: install  ## ruff check + format check
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

train: install data  ## train CONFIG (default: flattened_cnn on Fashion-MNIST); ARGS="--set train.epochs=1"
	$(LITECONV) train -c $(CONFIG) $(ARGS)

train-gpu:  ## the same on a CUDA machine: installs liteconv[gpu] (tensorflow[and-cuda]) first
	$(MAKE) train EXTRAS=gpu,dev VENV=.venv-gpu

evaluate: install  ## test accuracy and per-class accuracy of RUN (default: the newest run)
	$(LITECONV) evaluate $(RUN)

bench-train: install  ## study: training images/s of the three CNNs, oneDNN off and on -> docs/results/bench_train.{json,md}
	$(LITECONV) study train --out docs/results/bench_train $(ARGS)

export-tflite: install  ## convert RUN (default: newest run) to fp32 + QAT int8 .tflite and verify them
	$(LITECONV) export $(RUN) $(ARGS)

bench: install  ## benchmark RUN's .tflite files on this CPU with the TARGET profile (default raspberry-pi-4)
	@run=$${RUN:-$$(ls -td runs/*/*/export 2>/dev/null | head -n 1 | xargs -r dirname)}; \
	test -n "$$run" || { echo "no exported run: make train export-tflite first"; exit 2; }; \
	$(LITECONV) bench $$run/export/*.tflite --target $(TARGET) --json $$run/export/bench-host.json $(ARGS)

bundle: install  ## pack RUN's models into dist/<run>-<TARGET>.tar.gz for a Raspberry Pi or phone
	$(LITECONV) bundle $(RUN) --target $(TARGET) -o dist

bench-layers: install  ## study: the papers' speed tables, conv vs flattened vs separable -> docs/results/bench_layers.*
	$(LITECONV) study layers --out docs/results/bench_layers $(ARGS)

report: install  ## accuracy vs latency vs size of every exported run -> docs/results/report.*
	$(LITECONV) report $$(ls -d runs/*/*/export | xargs -n1 dirname) --out docs/results/report

PARENT ?=
# the levers one at a time (+da data-aware, +kd distilled, +wu warm-up, +slow / +lr0.01 learning rate)
FLATTEN_VARIANTS ?= lvh1,lvh1+kd,lvh1+da+kd+slow,lvh1+da+kd+wu+lr0.01,lvh2+da+kd+wu+lr0.01,cp0.5,cp0.5+kd,cp0.5+kd+slow,cp0.5+da,cp0.5+da+kd+slow,cp0.5+da+kd+wu+lr0.01,cp0.4+da+kd+wu+lr0.01,cp0.25+da+kd+wu+lr0.01
bench-flatten: install  ## study: decompose PARENT (a trained baseline run) several ways, fine-tune, time -> docs/results/flatten.*
	@test -n "$(PARENT)" || { echo "PARENT=runs/<experiment>/<time> (e.g. a fashion_mnist_baseline run)"; exit 2; }
	$(LITECONV) study flatten $(PARENT) --variants "$(FLATTEN_VARIANTS)" --scratch-for cp0.5+da+kd+wu+lr0.01 --out docs/results/flatten $(ARGS)

bench-flatten-resnet: install  ## study: a plain-Keras ResNet on a generated image folder (data/shapes32), trained, flattened, timed -> docs/results/flatten_resnet.*
	$(LITECONV) study resnet --variants "lvh1+da+kd+slow,lvh2+da+kd+slow,cp0.5+da+kd+slow,cp0.5+da+kd+wu+lr0.01,lvh2+da+kd+wu+lr0.01" --scratch-for cp0.5+da+kd+slow --out docs/results/flatten_resnet $(ARGS)

BUDGET ?= 0.155
bench-budget: install  ## decompose PARENT per layer to meet BUDGET ms (int8, 1 thread), fine-tune, measure -> docs/results/budget.*
	@test -n "$(PARENT)" || { echo "PARENT=runs/<experiment>/<time> (e.g. a fashion_mnist_baseline run)"; exit 2; }
	$(LITECONV) flatten $(PARENT) --budget-ms $(BUDGET) --result docs/results/budget $(ARGS)

bench-emulation: install emulation-tools  ## study: emulated Pi latency vs XNNPACK's published Pi 3/4 figures -> docs/results/emulation.*
	$(LITECONV) study emulation --out docs/results/emulation $(ARGS)

emulation-tools:  ## install qemu-user (plugin-capable qemu-aarch64), llvm-16 and llvm-19 (llvm-mca) and gcc where apt can
	@missing=""; [ -x /usr/bin/qemu-aarch64 ] || missing="$$missing qemu-user"; \
	[ -x /usr/lib/llvm-16/bin/llvm-mca ] || missing="$$missing llvm-16"; \
	[ -x /usr/lib/llvm-19/bin/llvm-mca ] || missing="$$missing llvm-19"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	if [ -z "$$missing" ]; then echo "emulation tools: qemu-aarch64, llvm-mca-16, llvm-mca-19, gcc"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || \
	   (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing)) >/dev/null && \
	  echo "emulation tools installed:$$missing"; \
	else echo "note: for --emulate run 'sudo apt-get install$$missing'"; fi

BUNDLE ?=
bench-arm64: install  ## run BUNDLE (default: newest dist/*.tar.gz) on emulated ARM64: bench.py --check + timings
	$(LITECONV) bench-arm64 $(BUNDLE)

profile: install  ## per-block latency of RUN (default: newest run) -> RUN/profile.{json,md,png}
	$(LITECONV) profile $(RUN) $(ARGS)

bench-profile: install  ## study: sum-of-blocks vs whole-model latency of five CNNs -> docs/results/profile.*
	$(LITECONV) study profile --out docs/results/profile $(ARGS)

# ARGS go to the config (--set KEY=VALUE, as for `make train`); the demo's own flags are
# its options (liteconv demo --help): DEMO_ARGS="--target raspberry-pi-5".
demo: install data  ## the whole job in minutes: train (3 epochs, 20k images), export fp32 + QAT int8, verify, benchmark, bundle; ARGS="--set train.epochs=1"
	$(LITECONV) demo -c $(DEMO_CONFIG) --target $(TARGET) $(DEMO_ARGS) $(ARGS)

REPRODUCE := fashion_mnist_baseline fashion_mnist_flattened fashion_mnist_separable
reproduce: install data  ## the README's 10-epoch Fashion-MNIST table: train + export the three CNNs, report -> runs/reproduce.*
	@set -e; runs=""; for exp in $(REPRODUCE); do \
	  $(LITECONV) train -c configs/experiments/$$exp.yaml $(ARGS) | tee /tmp/liteconv-reproduce.log; \
	  run=$$(tail -n 1 /tmp/liteconv-reproduce.log | sed 's/^run folder: //'); \
	  $(LITECONV) export $$run --mode fp32,qat_int8; runs="$$runs $$run"; \
	done; $(LITECONV) report $$runs --out runs/reproduce

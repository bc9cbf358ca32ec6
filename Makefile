# sapphire-ops — the two commands on a fresh machine are `make deploy` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PYTHON    ?= python3
INVENTORY ?= inventories/local
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PYTEST_ARGS ?=
INTEGRATION_WORKERS ?= 2

.PHONY: help setup venv collections packages kube s3 vault deploy cluster validate down purge test lint unit integration molecule secret-scan bench

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: venv collections packages kube s3 vault ## Install everything (idempotent): .venv, collections, distro packages, Kubernetes binaries, the S3 server, local vault

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	@touch $@

# Checked again only when the pins, the venv or the check change (a stamp in the venv).
collections: $(VENV)/.collections
$(VENV)/.collections: requirements.yml tools/check-collections $(VENV)/.installed
	@$(VENV)/bin/python tools/check-collections
	@touch $@

packages:
	@tools/setup-packages

kube:
	@tools/kube/build

s3:
	@tools/s3/build

# Made once; checked again for names the toolkit added only when tools/local-vault changes (or the vault is gone).
vault: .local/.vault-checked
.local/.vault-checked: tools/local-vault .local/vault.yml
	@$(VENV)/bin/python tools/local-vault
	@touch $@
.local/vault.yml: | venv
	@$(VENV)/bin/python tools/local-vault

deploy: setup ## The main job: the whole platform on the local default (deploy.yml on inventories/local)
	@# The clusters first: every playbook reads the live region from them, so they must answer before deploy.yml.
	@# When they already answer, deploy.yml's own cluster play is the check (cluster.yml would repeat it).
	@if [ "$(INVENTORY)" = inventories/local ] && $(VENV)/bin/python tools/local-clusters-answer; then \
	  echo "the local clusters answer: deploy.yml's cluster play converges them"; \
	else ansible-playbook playbooks/cluster.yml -i $(INVENTORY); fi
	ansible-playbook deploy.yml -i $(INVENTORY)

cluster: setup ## Only the local Kubernetes control planes (local-primary, local-dr)
	ansible-playbook playbooks/cluster.yml -i $(INVENTORY)

validate: setup ## validate.yml on the local default
	ansible-playbook validate.yml -i $(INVENTORY)

down: venv ## Stop the local default (workload, servers, clusters); keeps the Redis/PostgreSQL data
	tools/local-down

purge: down ## down, then delete every local state and data directory (.local) — data is lost
	rm -rf .local/redis .local/postgres .local/prometheus .local/workload .local/reports .local/backups .local/backup-store

test: setup ## Everything CI runs: lint beside the unit tests (2 CPUs), then the stages that use the local default
	$(MAKE) -j2 --output-sync=target lint unit
	$(MAKE) integration molecule secret-scan

lint: venv
	yamllint -s .
	ansible-lint
	ruff check .

unit: venv ## Two pytest-xdist workers: the unit tests share no state
	pytest -q -n 2 tests/unit $(PYTEST_ARGS)

integration: setup ## Two pytest-xdist workers: the local default's tests on one, self-contained server tests beside it
	pytest -q -n $(INTEGRATION_WORKERS) --dist loadgroup --durations=30 tests/integration $(PYTEST_ARGS)

molecule: setup
	tools/run-molecule

secret-scan: setup ## After molecule's full-stack scenario (or make deploy): no secret in the playbooks' output at -vvv --diff
	pytest -q tests/fullstack $(PYTEST_ARGS)

bench: setup ## Benchmarks: deploy, re-deploy, validate for 6/60/300 agents vs kubectl; backup/restore of 1 GiB vs the raw tools
	$(VENV)/bin/python bench/run.py
	$(VENV)/bin/python bench/backup.py

# sqs_loader: see README.md. Every target works from a fresh Debian 12 machine (it installs
# what is missing). Servers listen on 127.0.0.1 only; `make stop` stops them. Ports, paths and
# the PostgreSQL major come from scripts/lib.sh; PG=18 selects PostgreSQL 18 (default 15).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PG ?= 15
export PG

.PHONY: help deps install demo start stop clean test test-citus bench fuzz create_key etl health_check psql lint

help: ## list the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## install apt packages, cargo-pgrx, LocalStack (idempotent)
	@bash scripts/deps.sh

install: deps ## build (release) and install the extension (PG=18, or PG_CONFIG=/path/to/pg_config)
	@bash scripts/install.sh

demo: ## the whole product on a local default: PostgreSQL + LocalStack, 100 sample messages, load, unmask
	@bash scripts/demo.sh

start: ## local PostgreSQL (pg_cron) + LocalStack, extension created, login-queue created and filled
	@bash scripts/start.sh

stop: ## stop what make start / make demo started
	@bash scripts/stop.sh

clean: stop ## stop and remove the local cluster and LocalStack data
	@bash scripts/clean.sh

create_key: ## write a new RSA key pair to keys/ (private key mode 0600)
	@bash scripts/create_key.sh

etl: ## CALL load_user_logins() on the local cluster
	@bash scripts/psql.sh -c 'CALL load_user_logins()'

health_check: ## rows loaded, rejects by reason, last runs, queue depth, sqs_loader.stat_loaders
	@bash scripts/psql.sh -f scripts/health_check.sql

psql: ## a psql session on the local cluster
	@bash scripts/psql.sh

test: ## run the whole test suite (unit, #[pg_test], pg_regress, integration against LocalStack and moto)
	@bash scripts/test.sh

test-citus: ## the Citus suite on a local coordinator + 2 workers (builds Citus from ../shared/vendor/ if missing)
	@bash scripts/test_citus.sh

bench: ## benchmarks (drain rates, masking cost, memory): tables in bench/results/, about 35 minutes
	@ARGS="$(ARGS)" bash scripts/bench.sh

fuzz: ## coverage-guided fuzzing of the parsers (cargo fuzz); FUZZ_SECONDS per target (default 60)
	@bash scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --all-targets --features pg_test -- -D warnings

# notes_pipeline developer entry points. Everything runs against the local stack
# (scripts/stack.sh); CI runs `bash .ci/run` (= make test, then make down).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STACK_ENV := $(or $(NOTES_PIPELINE_STACK_DIR),.stack)/env
PYTEST_ARGS ?=
# The UI's port moves with the stack's ports (NOTES_PIPELINE_STACK_PORT_OFFSET, scripts/stack.sh).
UI_PORT ?= $(shell echo $$((3000 + $${NOTES_PIPELINE_STACK_PORT_OFFSET:-0})))

.PHONY: bootstrap browser up down status test demo demo-data lint

bootstrap:
	bash scripts/bootstrap.sh

browser:
	bash scripts/install_browser.sh

up: bootstrap
	bash scripts/stack.sh up

down:
	bash scripts/stack.sh down

status:
	bash scripts/stack.sh status

test: up browser
	$(PY) -m pytest $(PYTEST_ARGS)

demo-data: up
	set -a && . $(STACK_ENV) && set +a && \
	$(PY) -m devtools.synthetic seed --profile stage1 && \
	$(VENV)/bin/notes-migration register-cids

demo: demo-data
	set -a && . $(STACK_ENV) && set +a && \
	NOTES_PIPELINE_ENABLED_CIDS="$${NOTES_PIPELINE_ENABLED_CIDS-*}" \
	NOTES_PIPELINE_ACTIVITY_LOGS_ENABLED_CIDS="$${NOTES_PIPELINE_ACTIVITY_LOGS_ENABLED_CIDS-*}" exec $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

lint: bootstrap
	$(VENV)/bin/ruff check .

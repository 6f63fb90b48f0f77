# Two commands do all set-up on a fresh machine:
#   make run    install, then run syndicator on the embedded default with the sample articles
#   make test   install (Python deps, redis-server, chromium), then run the whole test suite
VENV   ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: run test install system-deps bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

run: install
	$(VENV)/bin/syndicator run --demo

test: install system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install system-deps
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf var tests/artifacts .pytest_cache

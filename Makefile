# Two entry points for a fresh machine: `make demo` (install + quickstart) and `make test` (install + tests).
VENV ?= .venv
PYTHON ?= python3
# torch and torchvision first, from the versions this project is tested with (served locally on our machines).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.segzoo-installed

.PHONY: install demo test test-all lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e '.[crf,export,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/segzoo fit --config configs/quickstart.yaml

# pytest exits 5 when nothing was collected: say so instead of failing on it.
test: $(STAMP)
	$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf runs .pytest_cache .ruff_cache

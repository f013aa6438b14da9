# LAM stack developer entry points. Everything runs inside ./.venv (created on demand).
#   make setup   create .venv and install the package with the ros and test extras
#   make test    run the test suite (fails if no test is collected)
#   make demo    the end-to-end demo, written to out/demo
#   make bench   the benchmark suite
#   make clean   remove build, test and demo outputs (keeps .venv; `make distclean` removes it too)

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean distclean

setup: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when the package metadata changes, so `make test` is quick on re-runs.
$(STAMP): setup.py setup.cfg | $(VPY)
	$(VPY) -m pip install --upgrade pip setuptools wheel
	$(VPY) -m pip install -e '.[ros,test]'
	touch $@

# pytest exit code 5 means "no tests collected": a broken testpaths or an import-time skip of
# everything must fail loudly, never pass as an empty green run.
test: setup
	@rc=0; $(VPY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	exit $$rc

demo: setup
	$(VENV)/bin/lam demo --out out/demo
	$(VENV)/bin/lam mimic --source mocap:punch --video out/demo/teleop.mp4 --json > out/demo/teleop.json
	cat out/demo/teleop.json

bench: setup
	$(VENV)/bin/lam bench

clean:
	rm -rf out build install log .pytest_cache .hypothesis src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# `make demo` and `make test` work on a fresh machine: they create .venv here when missing,
# install, then run. TORCH_SPEC names the torch pair this machine keeps on disk; override it
# elsewhere (e.g. `make test TORCH_SPEC="torch torchvision"`).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-oldest-transformers clean browser smoke

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test,diffusion]"
	touch $@

# Evaluates the reference rows on the bundled mini bench, prints a leaderboard and writes it as HTML,
# with a gallery of real-images' samples beside their scores. Real scorer
# checkpoints are used when they load; offline, one line says so and random-init backbones
# stand in, every such number labelled.
demo: install
	$(PY) -m unifybench run --method real-images --backbones auto --out $(DEMO_OUT)
	$(PY) -m unifybench run --method always-yes --backbones auto --out $(DEMO_OUT)
	$(PY) -m unifybench leaderboard $(DEMO_OUT)
	$(PY) -m unifybench leaderboard $(DEMO_OUT) --format html --out $(DEMO_OUT)/leaderboard.html
	$(PY) -m unifybench gallery $$(ls -d $(DEMO_OUT)/real-images__* | head -n 1) --out $(DEMO_OUT)/gallery.html

# The page test renders the leaderboard and gallery in Debian's chromium (headless): installed here
# when absent (apt, as root or through sudo); without it that test is skipped, or fails under
# UNIFYBENCH_REQUIRE_BROWSER=1 (as .ci/run sets).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium ) \
	    >/dev/null 2>&1 || echo "chromium could not be installed: the browser test will be skipped"; }

# The suite runs on TEST_WORKERS pytest-xdist workers (the cores, 2 to 4), one torch thread each so
# that they do not oversubscribe the cores. --dist loadscope keeps a test class, and the test
# functions of a module, on one worker: the contract kit's setup_class baseline and the modules'
# module-scoped fixtures are made once. (loadgroup would be finer, but with pytest 9.2 xdist 3.8
# silently ignores its groups: pytest-xdist issue 1386.) `make test TEST_WORKERS=0`: one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -lt 2 ] && n=2; [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST = HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope

test: install browser
	$(PYTEST)

# The test suite against the oldest transformers the project supports (pyproject.toml), laid over
# .venv through PYTHONPATH so no second torch install is needed. kernels: the range 5.5.4 asks for
# (the .venv's newer one breaks its model imports: "Either a revision or a version must be specified").
OLDEST_TRANSFORMERS ?= transformers==5.5.4 tokenizers==0.22.1 huggingface_hub==1.33.0 kernels==0.12.3 httpx httpcore \
	h11 anyio certifi idna
test-oldest-transformers: install
	rm -rf .oldest && $(PY) -m pip install -q --no-deps --target .oldest $(OLDEST_TRANSFORMERS)
	PYTHONPATH=.oldest $(PYTEST) -p no:cacheprovider

# Every method once, on one concept and one item per task, tiny random-init models and scorers: the
# plumbing of each in about a minute and a half on an idle 2-core machine (numbers mean nothing).
SMOKE_OUT ?= runs/smoke
SMOKE = --limit 1 --concepts dog --images-per-prompt 1 --backbones tiny --out $(SMOKE_OUT) -q
smoke: install
	$(PY) -m unifybench run --method real-images $(SMOKE)
	$(PY) -m unifybench run --method always-yes $(SMOKE)
	$(PY) -m unifybench run --method random-answer $(SMOKE)
	$(PY) -m unifybench run --method always-first $(SMOKE)
	$(PY) -m unifybench run --method unictokens --method-arg model=tiny --method-arg backend=janus \
	  --method-arg epochs=1 --method-arg transition_images=1 --method-arg max_new_tokens=8 $(SMOKE)
	$(PY) -m unifybench run --method text-prompt --method-arg model=tiny --method-arg steps=4 \
	  --method-arg max_new_tokens=8 $(SMOKE)
	$(PY) -m unifybench run --method yollava --method-arg model=tiny --method-arg epochs=1 \
	  --method-arg positives_per_photo=1 --method-arg max_new_tokens=8 $(SMOKE)
	$(PY) -m unifybench run --method llava --method-arg model=tiny --method-arg max_new_tokens=8 $(SMOKE)
	$(PY) -m unifybench run --method llava-prompt --method-arg model=tiny --method-arg max_new_tokens=8 $(SMOKE)
	$(PY) -m unifybench run --method textual-inversion --method-arg model=tiny --method-arg train_steps=10 \
	  --method-arg steps=4 $(SMOKE)
	$(PY) -m unifybench run --method dreambooth-lora --method-arg model=tiny --method-arg train_steps=10 \
	  --method-arg steps=4 $(SMOKE)
	$(PY) -m unifybench run --method sd-prompt --method-arg model=tiny --method-arg steps=4 $(SMOKE)
	$(PY) -m unifybench run --method yochameleon --method-arg model=tiny --method-arg epochs=1 \
	  --method-arg max_negatives=2 --method-arg gen_repeats=2 --method-arg max_new_tokens=8 $(SMOKE)
	$(PY) -m unifybench run --method rap --method-arg model=tiny --method-arg max_new_tokens=8 $(SMOKE)
	$(PY) -m unifybench leaderboard $(SMOKE_OUT) --no-published

clean:
	rm -rf runs .pytest_cache .oldest

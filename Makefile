# toll: build, demo, tests and benchmarks.
#
#   make            the nginx module, tollctl, toll-settle and the plugins
#                   of lua-free-plugins/ (build/plugins/), in build/
#   make demo       Redis + nginx with the module + a demo upstream, on loopback
#   make test       every test: C unit tests, then the integration suites
#   make test-asan  the same suites against a module built with ASan and UBSan
#   make bench      throughput of toll against plain proxy_pass (benchmarks/)
#   make bench-callgrind  the module's own instructions per request
#   make bench-plugins    plugins and units against the gate (benchmarks/README.md)
#   make fuzz       each libFuzzer harness of t/fuzz/ for FUZZ_SECONDS
#   make sim        the seeded fault simulation (SEED=, MINUTES=, SIM_FAULTS=)
#   make docker-test  the image and compose set of docker/, built and run
#                   with Podman, checked through their ports (docker/README.md)
#
# Debian 12 packages that a step needs are installed by "make setup", which
# the other targets run first; it calls apt-get only when one is missing.

NGINX_SRC   ?= /usr/share/nginx/src
PYTHON      ?= /usr/bin/python3
BUILD       ?= build
SANITIZE    ?=

# what building the module, tollctl, toll-settle and the plugins needs,
# and nothing else: docker/Dockerfile's build stage installs these
# ("make print-build-pkgs")
BUILD_PKGS  := build-essential pkg-config nginx-dev libhiredis-dev \
               libjansson-dev libssl-dev libsqlite3-dev libcurl4-openssl-dev

DEB_PKGS    := $(BUILD_PKGS) nginx libcmocka-dev redis-server sqlite3 \
               python3-pytest python3-requests python3-redis wrk curl nghttp2-client \
               valgrind python3-jwt python3-cryptography faketime openssl

# only the tests need these: promtool checks the metrics, a headless
# browser loads the dashboard, gdb holds a worker where a busy machine
# could preempt it (t/test_usage_own_calls.py)
TEST_PKGS   := prometheus chromium chromium-driver python3-selenium gdb

TOP         := $(CURDIR)
OUT         := $(TOP)/$(BUILD)
NGX_OBJS    := $(OUT)/nginx

# nginx compiles the module with its own warnings and -Werror; these are the
# flags Debian built nginx with, so that the module matches the binary
NGX_CC_OPT  := -g -O2 -fstack-protector-strong -Wformat \
               -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2
NGX_LD_OPT  := -Wl,-z,relro -Wl,-z,now -fPIC

ifneq ($(SANITIZE),)
NGX_CC_OPT  := -g -O1 -fno-omit-frame-pointer -fPIC -fsanitize=$(SANITIZE)
NGX_LD_OPT  := -fPIC -fsanitize=$(SANITIZE)
SAN_FLAGS   := -fno-omit-frame-pointer -fsanitize=$(SANITIZE)
endif

CC          ?= cc
CSTD_FLAGS  := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
               -Wall -Wextra -Werror -O2 -g $(SAN_FLAGS)

LIB_SRCS    := $(wildcard lib/*.c)
LIB_HDRS    := $(wildcard lib/*.h)
MODULE_DEPS := config $(wildcard src/*.c src/*.h) $(LIB_SRCS) $(LIB_HDRS)
CTL_SRCS    := $(wildcard ctl/*.c) $(LIB_SRCS)
SETTLE_SRCS := $(wildcard settle/*.c) $(LIB_SRCS)
UNIT_TESTS  := $(patsubst t/unit/%.c,$(OUT)/unit/%,$(wildcard t/unit/test_*.c))

.PHONY: all setup setup-test module ctl settle plugins unit test test-unit \
        test-integration test-asan demo bench bench-callgrind bench-plugins clean fuzz \
        setup-fuzz

all: setup module ctl settle plugins

# installs the Debian packages of $(1) that are missing, apt-get options $(2)
define apt_install
	@missing=""; \
	for p in $(1); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	        | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) $$missing; \
	fi
endef

setup:
	$(call apt_install,$(DEB_PKGS))

# a browser's recommends are hundreds of MB the tests do not use
setup-test: setup
	$(call apt_install,$(TEST_PKGS),--no-install-recommends)

module: $(OUT)/ngx_http_toll_module.so

ctl: $(OUT)/tollctl

settle: $(OUT)/toll-settle

$(NGX_OBJS)/Makefile: config $(NGINX_SRC)/conf_flags Makefile
	@mkdir -p $(NGX_OBJS)
	cd $(NGINX_SRC) && bash -c '. ./conf_flags && ./configure \
	    "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(NGX_CC_OPT)" --with-ld-opt="$(NGX_LD_OPT)" \
	    --add-dynamic-module=$(TOP) --builddir=$(NGX_OBJS)' \
	    > $(NGX_OBJS)/configure.log || { cat $(NGX_OBJS)/configure.log; exit 1; }

# The dashboard page, compiled into the module.  The header is committed
# (as nginx-module-vts does with its page), so that building with nginx's
# own ./configure --add-dynamic-module needs no extra step.
src/ngx_http_toll_dashboard_html.h: src/dashboard/dashboard.html \
        tools/embed_html.sh
	sh tools/embed_html.sh $< $@

# The Lua scripts, compiled in with their SHA1 (lib/toll_scripts.h); the
# file is committed for the same reason as the dashboard's header.
lib/toll_scripts.c: $(wildcard lua/*.lua) tools/embed_lua.py
	$(PYTHON) tools/embed_lua.py $@ $(wildcard lua/*.lua)

$(OUT)/ngx_http_toll_module.so: $(NGX_OBJS)/Makefile $(MODULE_DEPS)
	$(MAKE) -C $(NGINX_SRC) -f $(NGX_OBJS)/Makefile modules
	@# a new inode: a running nginx keeps its mapping of the old file
	cp $(NGX_OBJS)/ngx_http_toll_module.so $@.tmp && mv -f $@.tmp $@

$(OUT)/tollctl: $(CTL_SRCS) $(LIB_HDRS) $(wildcard ctl/*.h)
	@mkdir -p $(OUT)
	$(CC) $(CSTD_FLAGS) -Ilib -o $@.tmp $(CTL_SRCS) -lhiredis -ljansson \
	    -lsqlite3 -lcrypto
	mv -f $@.tmp $@

$(OUT)/toll-settle: $(SETTLE_SRCS) $(LIB_HDRS) $(wildcard settle/*.h)
	@mkdir -p $(OUT)
	$(CC) $(CSTD_FLAGS) -pthread -Ilib -Isettle -o $@.tmp $(SETTLE_SRCS) \
	    -lhiredis -ljansson -lsqlite3 -lcurl -lcrypto
	mv -f $@.tmp $@

$(OUT)/unit/%: t/unit/%.c $(LIB_SRCS) $(LIB_HDRS)
	@mkdir -p $(OUT)/unit
	$(CC) $(CSTD_FLAGS) -pthread -Ilib -o $@ $< $(LIB_SRCS) -lcmocka -lsqlite3 \
	    -ljansson -lcrypto -lhiredis

# the webhook sender's test links the daemon's sender and its outbox,
# libcurl and pthreads
HOOK_SRCS   := settle/toll_settle_webhook.c \
               settle/toll_settle_webhook_xfer.c settle/toll_settle_outbox.c
HOOK_HDRS   := settle/toll_settle_webhook.h settle/toll_settle_webhook_int.h \
               settle/toll_settle_outbox.h
$(OUT)/unit/test_settle_webhook: t/unit/test_settle_webhook.c \
        $(HOOK_SRCS) $(HOOK_HDRS) $(LIB_SRCS) $(LIB_HDRS)
	@mkdir -p $(OUT)/unit
	$(CC) $(CSTD_FLAGS) -pthread -Ilib -Isettle -o $@ $< \
	    $(HOOK_SRCS) $(LIB_SRCS) -lcmocka -lsqlite3 -ljansson -lcurl \
	    -lcrypto -lhiredis

# lua-free-plugins/ builds itself (its Makefile needs no nginx); the test
# plugins of t/plugins/ (a wrong ABI, no entry, hooks made visible) too
PLUGIN_OUT   := $(OUT)/plugins
TEST_PLUGINS := $(patsubst t/plugins/%.c,$(PLUGIN_OUT)/test/%.so, \
                    $(wildcard t/plugins/*.c))

plugins: $(TEST_PLUGINS)
	$(MAKE) -C lua-free-plugins OUT=$(PLUGIN_OUT) \
	    CFLAGS="-O2 -g $(SAN_FLAGS)"

$(PLUGIN_OUT)/test/%.so: t/plugins/%.c lua-free-plugins/toll_plugin.h
	@mkdir -p $(PLUGIN_OUT)/test
	$(CC) -std=c11 -Wall -Wextra -Werror -fPIC -shared -O2 -g $(SAN_FLAGS) \
	    -Ilua-free-plugins -o $@.tmp $<
	mv -f $@.tmp $@

# llm_usage's scanner, alone: split at every byte of its inputs
$(OUT)/unit/test_llm_usage_scan: t/unit/test_llm_usage_scan.c \
        lua-free-plugins/llm_usage/usage_scan.c \
        lua-free-plugins/llm_usage/usage_scan.h
	@mkdir -p $(OUT)/unit
	$(CC) $(CSTD_FLAGS) -Ilua-free-plugins/llm_usage -o $@ $< \
	    lua-free-plugins/llm_usage/usage_scan.c -lcmocka

unit: $(UNIT_TESTS)

test-unit: setup-test unit
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

test-integration: setup-test all
	TOLL_BUILD=$(OUT) $(PYTHON) -m pytest -q t/

test: test-unit test-integration

# The Debian nginx binary has no sanitizer runtime: the tests preload it
test-asan: setup-test
	$(MAKE) BUILD=build-asan SANITIZE=address,undefined all unit
	@set -e; for t in $(patsubst $(OUT)/%,$(TOP)/build-asan/%,$(UNIT_TESTS)); \
	    do echo "== $$t"; $$t; done
	TOLL_BUILD=$(TOP)/build-asan \
	TOLL_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	    $(PYTHON) -m pytest -q t/

demo: all
	$(PYTHON) demo/run.py --build $(OUT)

# The seeded fault simulation (docs/simulation.md): SEED (default: a
# random one, printed), MINUTES (default 2), SIM_FAULTS (default all, or
# e.g. all,-timeout).  A failing run prints the command that replays it.
SEED        ?=
MINUTES     ?= 2
SIM_FAULTS  ?= all

.PHONY: sim
sim: all
	nice $(PYTHON) t/sim/run.py --build $(OUT) --minutes $(MINUTES) \
	    --faults $(SIM_FAULTS) $(if $(SEED),--seed $(SEED))

bench: all
	bash benchmarks/auth_ratio.sh --cpu $(OUT)

bench-callgrind: all
	$(PYTHON) benchmarks/callgrind.py $(OUT)

# plugins and units (benchmarks/README.md): a no-op plugin and unit
# pricing against the gate alone, llm_usage on a 64 KB event stream
bench-plugins: all
	bash benchmarks/auth_ratio.sh --variant limits,plugin,units --cpu $(OUT)
	bash benchmarks/auth_ratio.sh --sse --cpu $(OUT)
	$(PYTHON) benchmarks/callgrind.py --variant limits,plugin,units,llm_usage \
	    $(OUT)

# libFuzzer harnesses (t/fuzz/README.md): each runs FUZZ_SECONDS from its
# seeds in t/fuzz/corpus/NAME, keeping what it finds in build/fuzz/corpus/;
# a crash stops make and leaves its input in build/fuzz/
FUZZ_PKGS    := clang libclang-rt-14-dev
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_CFLAGS  := -g -O1 -fno-omit-frame-pointer -D_DEFAULT_SOURCE \
                -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined -Ilib -Isettle
FUZZ_LIBS    := -lcrypto -ljansson -lsqlite3 -lhiredis
FUZZ_NAMES   := $(patsubst t/fuzz/fuzz_%.c,%,$(wildcard t/fuzz/fuzz_*.c))
FUZZ_BINS    := $(patsubst %,$(OUT)/fuzz/fuzz_%,$(FUZZ_NAMES))
# the daemon's files a harness links besides lib/, and their libraries
SETTLE_LIB_SRCS := $(filter-out settle/toll_settle.c,$(wildcard settle/*.c))
FUZZ_LIBS_settle_conf  := -lhiredis -lcurl -pthread
FUZZ_SRCS_settle_conf  := $(SETTLE_LIB_SRCS)
FUZZ_SRCS_settle_claim := $(SETTLE_LIB_SRCS)
FUZZ_LIBS_settle_claim := -lhiredis -lcurl -pthread
# the daemon logs each claim it leaves: thousands of lines a second
FUZZ_OPTS_settle_claim := -close_fd_mask=2

$(OUT)/fuzz/fuzz_%: t/fuzz/fuzz_%.c $(LIB_SRCS) $(LIB_HDRS) \
        $(wildcard settle/*.c settle/*.h ctl/*.c ctl/*.h)
	@mkdir -p $(OUT)/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRCS) $(FUZZ_SRCS_$*) \
	    $(FUZZ_LIBS) $(FUZZ_LIBS_$*)

setup-fuzz: setup
	$(call apt_install,$(FUZZ_PKGS),--no-install-recommends)

$(FUZZ_BINS): | setup-fuzz

fuzz: $(FUZZ_BINS)
	@set -e; $(foreach n,$(FUZZ_NAMES), \
	    echo "== fuzz_$(n) for $(FUZZ_SECONDS) s"; \
	    mkdir -p $(OUT)/fuzz/corpus/$(n); \
	    $(OUT)/fuzz/fuzz_$(n) -max_total_time=$(FUZZ_SECONDS) \
	        -print_final_stats=1 -artifact_prefix=$(OUT)/fuzz/$(n)- \
	        $(FUZZ_OPTS_$(n)) $(OUT)/fuzz/corpus/$(n) t/fuzz/corpus/$(n);)

# The image and compose set of docker/ (docker/README.md), built from a
# Debian base made here with debootstrap (no registry needed) and run with
# Podman; docker/test/run.sh checks them through their published ports and
# removes everything it started, also on failure.
DOCKER_PKGS := podman runc debootstrap podman-compose netavark aardvark-dns \
               iptables curl python3-yaml

.PHONY: print-build-pkgs setup-docker docker-test
print-build-pkgs:
	@echo $(BUILD_PKGS)

setup-docker:
	$(call apt_install,$(DOCKER_PKGS),--no-install-recommends)

docker-test: setup-docker
	bash docker/test/run.sh

clean:
	rm -rf build build-asan

# `make test` is the whole test suite: the command the README names and
# .ci/run calls. `make run` starts the service on the embedded SQLite default.
GO        ?= go
FUZZTIME  ?= 40000x
BIN       ?= mmconnect
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The PostgreSQL the scale-out tests use (a fresh schema per test); set it
# empty to skip them on a machine without PostgreSQL.
MMCONNECT_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
export MMCONNECT_TEST_POSTGRES_URL

.PHONY: run build test check unit fuzz bench bench-http seed clean test-browser-repeat load

run:
	$(GO) run ./cmd/mmconnect

build:
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/mmconnect

test: check unit fuzz

# Formatting and vet: the cheap checks first.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...

# Every fuzz target, one per `go test -fuzz` call (the tool allows one).
# The budget is a count of executions, not a duration: Go 1.26's fuzz
# coordinator can report "context deadline exceeded" as a failure when a
# -fuzztime duration ends under load (golang/go#75804, fixed in Go 1.27).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x $$pkg; \
	  done; \
	done

# Every browser test, 20 times in a row: a flaky one fails here.
test-browser-repeat:
	CGO_ENABLED=1 $(GO) test -count=20 -timeout 40m -run '^TestBrowser' ./api

# The load run (not part of `make test`): 200 clients for 30 s against the
# built binary and a local TLS stand-in Mattermost, then SIGKILL and a
# restart; it fails on any 5xx or any acknowledged write lost.
LOAD_CLIENTS  ?= 200
LOAD_DURATION ?= 30s
# LOAD_POSTGRES=<url>: the same on PostgreSQL (an empty database, or a
# schema of its own: ?search_path=…).
LOAD_POSTGRES ?=
load: build
	$(GO) run ./cmd/mmconnect-load -bin ./$(BIN) -clients $(LOAD_CLIENTS) -duration $(LOAD_DURATION) -postgres "$(LOAD_POSTGRES)"

# Go benchmarks of the hot paths, then a load run over real HTTP against
# the built binary and a TLS stand-in Mattermost beside a bare Echo handler
# (the ceiling). BENCH_SEEDS=1000,1000000 measures both sizes in one run
# and compares them; BENCH_POSTGRES=<url> measures on PostgreSQL instead of
# SQLite (in a schema of its own, dropped after), and with
# BENCH_POSTGRES_DELAY=500us behind a proxy that holds every packet that
# long each way, as if the database were a network away; BENCH_LOAD=wrk
# makes the load with wrk (apt-get install wrk) instead of the bench's Go
# client. bench-http skips the Go benchmarks.
BENCH_SEEDS    ?= 1000
BENCH_DURATION ?= 10s
BENCH_POSTGRES ?=
BENCH_POSTGRES_DELAY ?= 0
BENCH_LOAD     ?= go
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./internal/... ./api
	$(MAKE) --no-print-directory bench-http

bench-http: build
	$(GO) run ./cmd/mmconnect-bench -bin ./$(BIN) -seeds $(BENCH_SEEDS) -duration $(BENCH_DURATION) -postgres "$(BENCH_POSTGRES)" -postgres-delay $(BENCH_POSTGRES_DELAY) -load $(BENCH_LOAD)

# Fill a database with SEED_ROWS active connections for measuring by hand
# (about 10 s for a million): the SQLite database in SEED_DATA_DIR, or the
# PostgreSQL at BENCH_POSTGRES (as is, not a schema of its own). Tokens are
# sealed under the data dir's key, or MMCONNECT_ENCRYPTION_KEY(S) when set.
SEED_ROWS     ?= 1000000
SEED_DATA_DIR ?= ./data
seed: build
	$(GO) run ./cmd/mmconnect-bench -bin ./$(BIN) -seed $(SEED_ROWS) -data-dir $(SEED_DATA_DIR) -postgres "$(BENCH_POSTGRES)"

clean:
	rm -f $(BIN)

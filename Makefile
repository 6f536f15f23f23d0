# cairn: the two commands of the README.
#   make run   install what is missing, build, start a single-node cairnd on 127.0.0.1:4001
#   make test  install what is missing, build, run every test (unit, system, compatibility, sanitizers)
# `make` alone builds build/cairnd, build/cairn, build/libcairn.a and build/libcairn.so.
#   make install PREFIX=DIR  (default /usr/local; DESTDIR too) installs the libraries,
#   include/cairn.h, lib/pkgconfig/cairn.pc and the two commands under DIR.

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
# Processes that run the system tests (pytest-xdist, a test file each at a time): the
# tests mostly wait on servers, so more than the CPUs.
TEST_JOBS ?= 3
PYTHON     ?= /usr/bin/python3
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
DATA       ?= ./data
PREFIX     ?= /usr/local

.PHONY: all deps build install run test unit system compat asan asan-build tsan bench bench-backup bench-cluster bench-hash bench-pagesum bench-write-growth bench-backup-busy bench-backup-s3 bench-catalog-s3 bench-live-restore bench-rto bench-archive bench-pitr clean format

all: build

deps:
	@bash scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The install rules are CMake's (CMakeLists.txt); cairn.pc names PREFIX as given.
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(abspath $(PREFIX))"

run: build
	@mkdir -p $(DATA)
	@echo "cairnd: starting on http://127.0.0.1:4001 with data in $(DATA)"
	@echo "cairnd: connect with  ./$(BUILD)/cairn --host http://127.0.0.1:4001  or  curl -XPOST 127.0.0.1:4001/db/execute -d '[\"CREATE TABLE t(x)\"]'"
	./$(BUILD)/cairnd --data-dir $(DATA) --http-addr 127.0.0.1:4001 --raft-addr 127.0.0.1:4002

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCAIRN_SANITIZE=ON

asan-build: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

system: build
	bash tests/compat/setup.sh
	bash tests/s3/setup.sh
	CAIRN_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=20 tests/system

# The sanitizer build runs the unit tests and a short system test.
asan: asan-build
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS)
	CAIRN_BUILD=$(abspath $(ASAN_BUILD)) CAIRN_SANITIZED=1 $(PYTHON) -m pytest -q -m smoke tests/system

# ThreadSanitizer over the tests where threads share the most (a request's thread and
# the loop on the writer, forwarding, concurrent clients, crashes under load). Not part
# of `make test`: it takes a while, and it is for changes to who touches what.
TSAN_TESTS ?= early or determinism or deterministic or roll_back or acknowledged or forward or compressed or replicas or heals or lacking or client_goes_away or sigterm_interrupts or threads_share_one_client or stop_ends_an_upload or reads_ahead or test_s3_catalog or named_bucket or test_live_restore or archive_sync or test_archive_faults or test_pitr or test_expire or test_applied_reporting or test_raft_stray or test_cluster_id
tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCAIRN_TSAN=ON
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	cd $(TSAN_BUILD) && TSAN_OPTIONS="die_after_fork=0 halt_on_error=1 suppressions=$(abspath tests/tsan.supp)" ctest --output-on-failure
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(abspath tests/tsan.supp)" CAIRN_BUILD=$(abspath $(TSAN_BUILD)) \
		CAIRN_SANITIZED=1 $(PYTHON) -m pytest -q -n 2 --dist loadfile -k "$(TSAN_TESTS)" tests/system

test: build asan-build
	$(MAKE) --no-print-directory asan
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory system
	$(MAKE) --no-print-directory fuzz-short

# libFuzzer targets of the parsers (fuzz/README.md), built with clang into build-fuzz/:
# FUZZ_SECONDS per target; exits non-zero if any target crashed.
FUZZ_SECONDS ?= 60
.PHONY: fuzz fuzz-short
fuzz: deps
	bash fuzz/run.sh $(FUZZ_SECONDS)

fuzz-short: deps
	bash fuzz/run.sh 15

bench: build
	bash bench/run.sh

# cairn's backups of a 1 GiB database vs sqlite3 .backup, VACUUM INTO, cp and restic.
bench-backup: build
	bash bench/backup.sh

bench-cluster: build
	bash bench/cluster.sh

# XXH3 in cairn's AVX2 code against libxxhash's own (SSE2): pages and a file's digest.
bench-hash: build
	$(BUILD)/bench_hash

# Page checksums on against off: single-row INSERTs and PK SELECTs, side by side.
bench-pagesum: build
	$(PYTHON) bench/pagesum.py

# The write growth bound (a preupdate hook on every row written) against --max-write-growth 0.
bench-write-growth: build
	BUILD=$(BUILD) $(PYTHON) bench/write_growth.py

# A standalone backup of a database another process reads and writes, against the idle case.
bench-backup-busy: build
	$(PYTHON) bench/backup_busy.py

# Backups to S3 (s3rver on loopback) against curl moving the file, and Litestream's restore.
bench-backup-s3: build
	$(PYTHON) bench/backup_s3.py

# The catalog of 10,000 backups in S3 (s3rver) and in a directory: list, restore latest,
# an incremental (BENCH_CATALOG_BEFORE=DIR also times the cairn of build DIR).
bench-catalog-s3: build
	$(PYTHON) bench/catalog_s3.py

# A live RESTORE DATABASE on a 3-node cluster under a 16-client write load, against the
# load alone (issue 17; BENCH_LIVE_MIB, BENCH_LIVE_CLIENTS, BENCH_LIVE_SECONDS).
bench-live-restore: build
	$(PYTHON) bench/live_restore.py --build $(BUILD)

# Recovery time: cairnd --restore-from a 1 GiB chain (full + 3 incrementals) until its
# first query, against cp + sync of the database file and a start on the copy (issue 17).
bench-rto: build
	$(PYTHON) bench/rto.py --build $(BUILD)

# The continuous archive: write throughput with it off, on and --archive-sync (64
# clients' INSERTs, 10,000-row transactions), and the RPO of losing every node (issue 18).
bench-archive: build
	BUILD=$(BUILD) $(PYTHON) bench/archive.py

# Restore to latest (256 MiB + 10,000 archived writes) against Litestream's, directory and S3 (issue 18).
bench-pitr: build
	$(PYTHON) bench/pitr_restore.py --build $(BUILD)

format:
	clang-format -i include/*.h src/*.c src/*.h src/backup/*.[ch] src/lib/*.[ch] src/cli/*.c src/cli/*.h tests/unit/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

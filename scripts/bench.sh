#!/usr/bin/env bash
# make bench: drain rates (fauxqs and LocalStack), masking cost, memory, end-to-end latency and
# idle cost of background workers. Unattended; prints the tables and writes them to
# bench/results/ (results.md, memory.csv, memory.png).
#   BENCH_QUICK=1 make bench     a small smoke run
#   make bench ARGS="mask"       only some sections (drain, drain-fauxqs, client, mask, memory, latency, citus;
#                                profile and sched run only when named: perf on one drain, see bench/src/)
#   BENCH_REV=<commit> make bench ARGS=drain-fauxqs
#                                that commit's extension (built in target/rev-<commit>) measured
#                                by this tree's harness: a before/after on one host, back to back
#                                (rows that need a setting the commit lacks are left out). This tree's
#                                build is installed again at the end.
#   BENCH_AB=<commit> make bench
#                                that commit's build (A, before) and this tree's (B, after) in
#                                alternating rounds (A B, B A, A B; BENCH_RUNS rounds) of the fauxqs
#                                drain's loader configurations and the bare client at 4, on one cluster
#                                restarted between sides: the host's drift falls on both alike. Writes
#                                bench/results/ab.md.
#   BENCH_NO_CHECKPOINT=1        no CHECKPOINT before each drain: the loading backend then zero-fills
#                                new WAL segments, as on a fresh server (docs/performance.md).
#   BENCH_RUNS=<n>               rounds of each section (default 3; 5 for the fauxqs drain, whose
#                                configurations take turns in an order rotated from round to round).
#   BENCH_NO_REPEATS=1           no IP repeated in the drains' messages (instead of about 10 %): no
#                                vault store can conflict, for telling conflicts from other costs.
# The citus section runs on a local Citus cluster (scripts/citus.sh; Citus is built from
# ../shared/vendor/ the first time).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/deps.sh bench
ab=
if [ -n "${BENCH_AB:-}" ]; then
  ab=$(git rev-parse --verify -q "$BENCH_AB^{commit}") || die "BENCH_AB=$BENCH_AB is not a commit of this repository"
  BENCH_REV=$ab
  ARGS=ab
fi
citus=
if [ -z "${ARGS:-}" ] || [[ " $ARGS " == *" citus "* ]]; then citus=1; bash scripts/deps.sh citus; fi
# The installed extension's files, copied to and from a directory (BENCH_AB switches builds).
pkglibdir=$("$PG_CONFIG" --pkglibdir); extdir=$("$PG_CONFIG" --sharedir)/extension
stash_installed() {
  rm -rf "$1"; mkdir -p "$1"
  cp "$pkglibdir/sqs_loader.so" "$extdir"/sqs_loader.control "$extdir"/sqs_loader--*.sql "$1/"
}
use_stashed() {
  rm -f "$extdir"/sqs_loader--*.sql
  # Unlinked first: a running process may still map the old library.
  cp --remove-destination "$1/sqs_loader.so" "$pkglibdir/"
  cp "$1"/sqs_loader.control "$1"/sqs_loader--*.sql "$extdir/"
}
if [ -n "${BENCH_REV:-}" ]; then
  rev=$(git rev-parse --verify -q "$BENCH_REV^{commit}") || die "BENCH_REV=$BENCH_REV is not a commit of this repository"
  step "building and installing sqs_loader at ${rev:0:12} (release, target/rev-${rev:0:12})"
  src=$RUN_DIR/build/rev-$rev
  export_commit "$rev" "$src"
  # Its own target directory: the same crate name, so the same path of the built library.
  (cd "$src" && CARGO_TARGET_DIR="$ROOT/target/rev-${rev:0:12}" install_extension)
  if [ -n "$ab" ]; then
    stash_installed "$RUN_DIR/ab/A"
    step "building and installing sqs_loader (release)"
    make -s install
    stash_installed "$RUN_DIR/ab/B"
  fi
else
  step "building and installing sqs_loader (release)"
  make -s install
fi
cargo build --release -q -p sqs_loader_bench

cleanup() {
  bash scripts/pg.sh destroy bench >/dev/null 2>&1 || true
  [ -z "$citus" ] || bash scripts/citus.sh destroy >/dev/null 2>&1 || true
  stop_started_emulators
  if [ -n "$ab" ] && [ -f "$RUN_DIR/ab/B/sqs_loader.so" ]; then use_stashed "$RUN_DIR/ab/B"
  elif [ -n "${BENCH_REV:-}" ]; then make -s install >/dev/null 2>&1 || echo "make install failed: this tree's build is not installed" >&2; fi
}
trap cleanup EXIT
start_emulators fauxqs localstack
# Their processes, whose CPU the drain reports next to the loader's (empty when another
# script started them: the column is then left out).
BENCH_FAUXQS_PID=$(cat "$RUN_DIR/fauxqs/pid" 2>/dev/null || true)
BENCH_LOCALSTACK_PID=$(cat "$RUN_DIR/localstack/pid" 2>/dev/null || true)
export BENCH_FAUXQS_PID BENCH_LOCALSTACK_PID

keys=$RUN_DIR/bench-keys
if [ ! -f "$keys/pgp_public.asc" ]; then
  step "benchmark keys (RSA for sqs_loader and the Python loader, PGP for pgcrypto)"
  rm -rf "$keys"; mkdir -p "$keys/gnupg"; chmod 700 "$keys/gnupg"
  KEY_DIR=$keys bash scripts/create_key.sh >/dev/null
  GNUPGHOME=$keys/gnupg gpg --batch --passphrase '' --quick-gen-key 'bench <bench@localhost>' rsa2048 cert never 2>/dev/null
  fpr=$(GNUPGHOME=$keys/gnupg gpg --list-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}')
  GNUPGHOME=$keys/gnupg gpg --batch --passphrase '' --quick-add-key "$fpr" rsa2048 encr never 2>/dev/null
  GNUPGHOME=$keys/gnupg gpg --armor --export >"$keys/pgp_public.asc"
fi

step "benchmark cluster on 127.0.0.1:$BENCH_PGPORT"
bash scripts/pg.sh destroy bench
bash scripts/pg.sh start bench "$BENCH_PGPORT" postgres
# Commit times of the loaded rows, for the latency benchmark (a server restart applies it).
psql_on "$BENCH_PGPORT" postgres -q -c "ALTER SYSTEM SET track_commit_timestamp = on"
bash scripts/pg.sh stop bench
bash scripts/pg.sh start bench "$BENCH_PGPORT" postgres
if [ -n "$citus" ]; then
  step "Citus cluster: coordinator 127.0.0.1:$CITUS_PGPORT, workers on $CITUS_WORKER_PORTS"
  bash scripts/citus.sh destroy
  bash scripts/citus.sh start
  bash scripts/citus.sh createdb bench
  # The recipe of docs/production.md, as documented.
  awk '/the Citus recipe/ {f = 1; next} f && /^```sql/ {g = 1; next} g && /^```/ {exit} g' docs/production.md \
    | psql_on "$CITUS_PGPORT" bench -v ON_ERROR_STOP=1 -q
  echo "SELECT set_rsa_public_key(:'pub');" \
    | psql_on "$CITUS_PGPORT" bench -v ON_ERROR_STOP=1 -q -v pub="$(cat "$keys/public_key.pem")" >/dev/null
fi
if [ -n "$ab" ]; then
  rm -f bench/results/ab-samples.tsv
  export BENCH_PGPORT BENCH_FAUXQS=http://127.0.0.1:$FAUXQS_PORT BENCH_LOCALSTACK=http://127.0.0.1:$LOCALSTACK_PORT \
    BENCH_KEYS=$keys BENCH_TOOLS=$TOOLS_DIR BENCH_ROOT=$ROOT BENCH_AB=${ab:0:12}
  for round in $(seq 1 "${BENCH_RUNS:-3}"); do
    order="A B"; [ $((round % 2)) = 1 ] || order="B A"
    for side in $order; do
      step "round $round: $side ($([ $side = A ] && echo "commit ${ab:0:12}" || echo "this tree"))"
      bash scripts/pg.sh stop bench
      use_stashed "$RUN_DIR/ab/$side"
      bash scripts/pg.sh start bench "$BENCH_PGPORT" postgres
      BENCH_AB_SIDE=$side "$ROOT/target/release/sqs_loader_bench" ab-drain
    done
  done
  "$ROOT/target/release/sqs_loader_bench" ab-report
  exit 0
fi
step "benchmarks"
# shellcheck disable=SC2086
BENCH_PGPORT=$BENCH_PGPORT BENCH_CITUS_PGPORT=$CITUS_PGPORT BENCH_FAUXQS=http://127.0.0.1:$FAUXQS_PORT BENCH_LOCALSTACK=http://127.0.0.1:$LOCALSTACK_PORT \
  BENCH_KEYS=$keys BENCH_TOOLS=$TOOLS_DIR BENCH_ROOT=$ROOT \
  "$ROOT/target/release/sqs_loader_bench" ${ARGS:-}
if [ -f bench/results/memory.csv ]; then
  "$TOOLS_DIR/pyref/bin/python" bench/plot_memory.py bench/results/memory.csv bench/results/memory.png
fi

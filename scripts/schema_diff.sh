#!/usr/bin/env bash
# For writing an upgrade script: the SQL pgrx generates for release 0.1.0 (from git history) and
# for the working tree, side by side as a unified diff. The upgrade script
# (sql/sqs_loader--<old>--<new>.sql) is then written by hand from it; the upgrade test checks
# that an upgraded database has exactly the catalog of a fresh install.
#   schema_diff.sh [old-commit]   (default: the 0.1.0 release)
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
old=${1:-0acc38b988908fa2e27fbbd53f75383ce8272bc5}
out=$RUN_DIR/schema-diff
rm -rf "$out"; mkdir -p "$out/old"
git archive "$old" | tar -x -C "$out/old"
(cd "$out/old" && CARGO_TARGET_DIR="$ROOT/target/v0.1.0" cargo pgrx schema -o "$out/old.sql" pg15 >/dev/null 2>&1)
cargo pgrx schema -o "$out/new.sql" pg15 >/dev/null 2>&1
diff -u "$out/old.sql" "$out/new.sql" || true

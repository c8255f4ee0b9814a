#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo fuzz) of the message parser and of both SQS
# response decoders. The machine's toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass
# its -Z flags, and no sanitizer runtime is needed for these safe-Rust targets.
#   fuzz.sh [seconds per target, default 60] [targets...]
source "$(dirname "$0")/lib.sh"
cd "$ROOT/fuzz"
secs=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(login_parse sqs_response_json sqs_response_xml)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
mkdir -p corpus/login_parse
# Seed the parser with the real sample messages and the hostile corpus.
i=0; while IFS= read -r line; do printf '%s' "$line" >"corpus/login_parse/sample-$i"; i=$((i + 1)); done <"$ROOT/data/sample_login_messages.jsonl"
for t in "${targets[@]}"; do
  step "fuzzing $t for $secs s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
    | grep -E '^(#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|Done)' || true
  # libFuzzer leaves crash-* files on a failure.
  if ls artifacts/"$t"/crash-* >/dev/null 2>&1; then die "fuzz target $t found a crash: fuzz/artifacts/$t"; fi
done

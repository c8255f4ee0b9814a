#!/usr/bin/env bash
# Check the output of `make demo` (read from stdin): the counts, the duplicate, the IP recovered
# in SQL and offline, the refused analyst, the worker's row within a second.
set -euo pipefail
out=$(cat)
line=$(grep '^demo check:' <<<"$out") || { echo "check_demo: no 'demo check:' line"; exit 1; }
echo "$line"
want='demo check: loaded=99 rejected=1 duplicate_ip_rows=2 unmasked_ip=199.172.111.135 expected_ip=199.172.111.135 queue_depth=0 live_row_within_1s=t'
[ "$line" = "$want" ] || { echo "check_demo: expected: $want"; exit 1; }
grep -q 'refused for demo_analyst: permission denied: unmask_pii() is for a member of sqs_loader_unmask' <<<"$out" \
  || { echo "check_demo: the analyst was not refused"; exit 1; }
grep -Eq '^offline: v1\.[A-Za-z0-9_-]{43},199\.172\.111\.135,ok$' <<<"$out" \
  || { echo "check_demo: the offline tool did not recover the duplicate IP"; exit 1; }
echo "check_demo: ok"

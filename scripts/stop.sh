#!/usr/bin/env bash
# Stop what make start / make demo started: the demo cluster and LocalStack.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/pg.sh" stop demo
bash "$ROOT/scripts/sqs.sh" stop localstack
echo "stopped (data kept in $RUN_DIR/pg-demo; make clean removes it)"

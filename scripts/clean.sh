#!/usr/bin/env bash
# Remove the local cluster's and LocalStack's data (make clean; run after make stop).
source "$(dirname "$0")/lib.sh"
rm -rf "$RUN_DIR/pg-demo" "$RUN_DIR/localstack"

#!/usr/bin/env bash
# Local SQS endpoints on 127.0.0.1 (no Docker):
#   sqs.sh start localstack|moto|fauxqs     start it unless it already answers on its port
#   sqs.sh stop  localstack|moto|fauxqs     stop it if this script started it
# moto is started with signature checking on; its access key goes to $RUN_DIR/moto/credentials.
source "$(dirname "$0")/lib.sh"
cmd=${1:?start|stop}; which=${2:?localstack|moto|fauxqs}
dir=$RUN_DIR/$which
mkdir -p "$dir"

port=$(emulator_port "$which") || die "unknown emulator $which"
case $which in
  localstack) health="http://127.0.0.1:$port/_localstack/health" ;;
  moto) health="http://127.0.0.1:$port/moto-api/" ;;
  fauxqs) health="http://127.0.0.1:$port/health" ;;
esac
answers() { curl -s -o /dev/null -m 2 "$health"; }

start() {
  if answers; then
    [ "$which" != moto ] || [ -f "$dir/credentials" ] || die "something else listens on $port"
    return 0
  fi
  case $which in
    localstack)
      # hypercorn: listens on 127.0.0.1 only (the default gateway binds every interface).
      env GATEWAY_SERVER=hypercorn GATEWAY_LISTEN=127.0.0.1:$port LOCALSTACK_HOST=localhost:$port \
        SERVICES=sqs,sns SQS_ENDPOINT_STRATEGY=off DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 \
        LOCALSTACK_VOLUME_DIR="$dir/volume" FILESYSTEM_ROOT="$dir/fs" \
        setsid "$TOOLS_DIR/localstack/bin/python" -m localstack.runtime.main >"$dir/log" 2>&1 &
      ;;
    moto)
      rm -f "$dir/credentials"
      INITIAL_NO_AUTH_ACTION_COUNT=3 setsid "$TOOLS_DIR/moto/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/log" 2>&1 &
      ;;
    fauxqs)
      # fauxqs always binds every interface: a preload makes every listen() bind 127.0.0.1 only.
      cat >"$dir/loopback.cjs" <<'JS'
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== null && typeof args[0] === 'object') args[0] = { ...args[0], host: '127.0.0.1' };
  else if (typeof args[0] === 'number') {
    if (typeof args[1] === 'string') args[1] = '127.0.0.1'; else args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
JS
      FAUXQS_PORT=$port setsid node --require "$dir/loopback.cjs" \
        "$TOOLS_DIR/fauxqs/node_modules/fauxqs/dist/cli.js" >"$dir/log" 2>&1 &
      ;;
  esac
  echo $! >"$dir/pid"
  wait_for 90 answers || { tail -20 "$dir/log"; die "$which did not start on port $port"; }
  if [ "$which" = moto ]; then
    "$TOOLS_DIR/moto/bin/python" "$ROOT/scripts/moto_bootstrap.py" "http://127.0.0.1:$port" >"$dir/credentials"
  fi
}

stop() {
  [ -f "$dir/pid" ] || return 0
  local pid; pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

"$cmd"

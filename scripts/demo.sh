#!/usr/bin/env bash
# Porch on examples/porch.toml in front of a demo upstream (python -m porch.demo_upstream)
# that shows the request it received.  Prints the URL to open; Ctrl-C (or SIGTERM to this
# script) stops Porch, then the demo upstream.  Creates .venv the first time; safe to rerun.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
. scripts/lib.sh
PYTHON=${PYTHON:-python3}
CONFIG=examples/porch.toml
UPSTREAM_PIDFILE=state/demo-upstream.pid
PORCH_PIDFILE=state/demo-porch.pid

ensure_venv . demo
.venv/bin/porch check -c "$CONFIG" >/dev/null  # a broken config stops here, with its errors

# Where Porch listens and where the demo upstream must listen, as the config says.
read -r porch_host porch_port upstream_host upstream_port < <(.venv/bin/python - "$CONFIG" <<'PY'
import sys
from porch.config.toml import load

config = load(sys.argv[1])
bind = config.porch.bind[0]
host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
upstream = config.sites[0].routes[0].upstreams[0]
print(f"[{host}]" if ":" in host else host, config.porch.http_port, upstream.host, upstream.port)
PY
)

port_open() {  # HOST PORT: something accepts connections there
    (exec 3<>"/dev/tcp/${1//[\[\]]/}/$2") 2>/dev/null
}

wait_port() {  # HOST PORT PID: until the port accepts, or PID exits, or 10 s pass
    local i
    for i in $(seq 100); do
        port_open "$1" "$2" && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

stop_pid() {  # PID: SIGTERM, then SIGKILL after 5 s
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

stop_stale() {  # PIDFILE MARK: a process left by an earlier run that was killed hard
    local pid
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"; then
        echo "stopping $2 left running by an earlier demo (pid $pid)"
        stop_pid "$pid"
    fi
    rm -f "$1"
}

mkdir -p state
stop_stale "$PORCH_PIDFILE" "porch run"
stop_stale "$UPSTREAM_PIDFILE" "porch.demo_upstream"
for where in "$upstream_host $upstream_port" "$porch_host $porch_port"; do
    if port_open $where; then
        echo "$0: ${where/ /:} is already in use by another program;" \
             "stop it, or change the ports in $CONFIG" >&2
        exit 1
    fi
done

upstream_pid="" porch_pid=""
cleanup() {
    if [ -n "$porch_pid" ]; then stop_pid "$porch_pid"; fi
    if [ -n "$upstream_pid" ]; then stop_pid "$upstream_pid"; fi
    rm -f "$PORCH_PIDFILE" "$UPSTREAM_PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Job control: each background process gets its own process group, so Ctrl-C reaches
# this script alone, which then stops Porch exactly once (a second signal would make
# Porch skip draining).
set -m
.venv/bin/python -m porch.demo_upstream --host "$upstream_host" --port "$upstream_port" &
upstream_pid=$!
echo "$upstream_pid" >"$UPSTREAM_PIDFILE"
if ! wait_port "$upstream_host" "$upstream_port" "$upstream_pid"; then
    echo "$0: the demo upstream did not start" >&2
    exit 1
fi

.venv/bin/porch run -c "$CONFIG" &
porch_pid=$!
echo "$porch_pid" >"$PORCH_PIDFILE"
trap 'kill -TERM "$porch_pid" 2>/dev/null || true' INT TERM HUP
if wait_port "$porch_host" "$porch_port" "$porch_pid"; then
    url="http://$porch_host:$porch_port/"
    cat <<MSG

  Porch is serving $CONFIG in front of the demo upstream on $upstream_host:$upstream_port.

  Open $url
   and ${url}app/hello?x=1 (a route with strip_prefix)
  or:  curl -i $url

  Ctrl-C stops Porch and the demo upstream.  Porch's access log follows.

MSG
fi

# Wait for Porch to exit; a trapped signal interrupts `wait`, so wait again.
status=0
wait "$porch_pid" || status=$?
while kill -0 "$porch_pid" 2>/dev/null; do
    status=0
    wait "$porch_pid" || status=$?
done
porch_pid=""
exit "$status"

#!/usr/bin/env bash
# imbus's XMPP client gateway against Prosody and ejabberd (Debian packages) on this
# machine: logins/s at equal concurrency and resident memory per idle authenticated
# connection.
#
#   tests/bench/gateway-vs-peers.sh            # as root (installs packages with apt-get)
#
# Environment (defaults): USERS=100 accounts user1..userN, IDLE=10000 idle connections,
# CONCURRENCY=64 login loops, DURATION=20 s of logins, SOURCE_IPS=8192 loopback source
# addresses, KEEP=1 keeps the work directory.
#
# The three servers run side by side (imbus 25222, Prosody 35222, ejabberd 45222, all on
# 127.0.0.1, one self-signed P-256 certificate; listen backlog 1024 for Prosody and
# ejabberd, imbus's gateway listens with tokio's 128), each with its own configuration
# written
# into a temporary directory; they are measured one after the other with xmppbench
# (tests/src/bin/xmppbench.rs): first IDLE authenticated idle connections (server RSS from
# /proc/<pid>/status before and after, divided by IDLE), then DURATION seconds of full
# login cycles (connect, STARTTLS, SCRAM-SHA-1, bind, close) with the server's CPU time per
# login (utime + stime over the run, divided by the logins including the USERS warm-up ones).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
USERS=${USERS:-100}
IDLE=${IDLE:-10000}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-20}
SOURCE_IPS=${SOURCE_IPS:-8192}
DOMAIN=example.com
PASSWORD=benchpass
ITERATIONS=10000 # imbus auth.scram_iterations (default) and Prosody default_iteration_count

say() { printf '\n== %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "run as root: it installs prosody and ejabberd with apt-get" >&2
  exit 1
fi

# Every connection is a file descriptor on both ends.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE + 1000)) ]; then
  echo "ulimit -n is $(ulimit -n): too low for IDLE=$IDLE" >&2
  exit 1
fi

say "installing prosody and ejabberd"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody ejabberd openssl curl >/dev/null

say "building imbus and xmppbench (release)"
(cd "$ROOT" && cargo build --release -q -p imbus -p imbus-tests --bin imbus --bin xmppbench)

WORK=$(mktemp -d /tmp/imbus-peers.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [ -n "${EJABBERDCTL:-}" ]; then
    $EJABBERDCTL stop >/dev/null 2>&1 || true
  fi
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
cp "$ROOT/target/release/imbus" "$ROOT/target/release/xmppbench" "$WORK/"
BENCH=("$WORK/xmppbench" --domain "$DOMAIN" --users "$USERS" --password "$PASSWORD" --source-ips "$SOURCE_IPS")

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK/key.pem"

wait_for_port() { # port
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "nothing listens on port $1" >&2
  return 1
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system) of a process in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# ---------------------------------------------------------------- imbus
say "imbus: starting on 25222"
export IMBUS_DATA_DIR="$WORK/imbus-data" IMBUS_DOMAIN=$DOMAIN IMBUS_BIND=127.0.0.1 \
  IMBUS_HTTP_BIND=127.0.0.1 IMBUS_C2S_PORT=25222 IMBUS_C2S_TLS_PORT=25223 \
  IMBUS_S2S_PORT=25269 IMBUS_HTTP_PORT=25280 IMBUS_TLS_CERT_FILE="$WORK/cert.pem" \
  IMBUS_TLS_KEY_FILE="$WORK/key.pem" IMBUS_AUTH_SCRAM_ITERATIONS=$ITERATIONS \
  IMBUS_LOG_LEVEL=warn
"$WORK/imbus" serve >"$WORK/imbus.log" 2>&1 &
IMBUS_PID=$!
PIDS+=("$IMBUS_PID")
wait_for_port 25280
wait_for_port 25222
for i in $(seq 1 "$USERS"); do
  echo "$PASSWORD" | "$WORK/imbus" user add "user$i@$DOMAIN" >/dev/null
done

# ---------------------------------------------------------------- Prosody
say "prosody: starting on 35222"
mkdir -p "$WORK/prosody/data"
cat >"$WORK/prosody/prosody.cfg.lua" <<EOF
run_as_root = true
daemonize = false
pidfile = "$WORK/prosody/prosody.pid"
data_path = "$WORK/prosody/data"
admin_socket = "$WORK/prosody/prosody.sock"
interfaces = { "127.0.0.1" }
c2s_ports = { 35222 }
c2s_direct_tls_ports = { }
s2s_ports = { 35269 }
log = { warn = "$WORK/prosody/prosody.log" }
authentication = "internal_hashed"
default_iteration_count = $ITERATIONS
c2s_require_encryption = true
network_settings = { tcp_backlog = 1024 }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "admin_shell" }
ssl = { certificate = "$WORK/cert.pem"; key = "$WORK/key.pem" }
VirtualHost "$DOMAIN"
EOF
PROSODYCTL=(prosodyctl --config "$WORK/prosody/prosody.cfg.lua")
prosody --config "$WORK/prosody/prosody.cfg.lua" >"$WORK/prosody/stdout.log" 2>&1 &
PROSODY_PID=$!
PIDS+=("$PROSODY_PID")
wait_for_port 35222
# One shell session creates every account (one prosodyctl per account takes ~0.5 s each).
for i in $(seq 1 "$USERS"); do
  echo "user:create(\"user$i@$DOMAIN\", \"$PASSWORD\")"
done | "${PROSODYCTL[@]}" shell >"$WORK/prosody/users.log" 2>&1

# ---------------------------------------------------------------- ejabberd
say "ejabberd: starting on 45222"
mkdir -p "$WORK/ejabberd/db" "$WORK/ejabberd/logs"
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/ejabberd/server.pem"
cat >"$WORK/ejabberd/ejabberd.yml" <<EOF
hosts: ["$DOMAIN"]
loglevel: warning
certfiles: ["$WORK/ejabberd/server.pem"]
listen:
  - port: 45222
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 1024
    starttls_required: true
    max_stanza_size: 262144
  - port: 45280
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
acl:
  loopback:
    ip: ["127.0.0.0/8"]
api_permissions:
  "loopback registration":
    from: [mod_http_api]
    who:
      acl: loopback
    what: ["register"]
shaper_rules:
  max_user_sessions: 100000
modules:
  mod_roster: {}
  mod_disco: {}
  mod_ping: {}
EOF
cat >"$WORK/ejabberd/ejabberdctl.cfg" <<EOF
ERLANG_NODE=benchejabberd@localhost
ERL_MAX_PORTS=65536
EOF
chown -R ejabberd: "$WORK/ejabberd"
EJABBERDCTL="ejabberdctl --config-dir $WORK/ejabberd --config $WORK/ejabberd/ejabberd.yml \
  --ctl-config $WORK/ejabberd/ejabberdctl.cfg --logs $WORK/ejabberd/logs --spool $WORK/ejabberd/db"
# Started as the ejabberd user without su (whose PAM session would reset the open-file
# limit to 1024); ejabberdctl then runs the node as the current user.
setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME=/var/lib/ejabberd \
  $EJABBERDCTL foreground >"$WORK/ejabberd/stdout.log" 2>&1 &
PIDS+=("$!")
wait_for_port 45280
wait_for_port 45222
EJABBERD_PID=$(pgrep -u ejabberd -f "beam.smp.*benchejabberd@localhost" | head -n1)
grep "open files" "/proc/$EJABBERD_PID/limits" >&2
for i in $(seq 1 "$USERS"); do
  curl -sf -X POST "http://127.0.0.1:45280/api/register" \
    -d "{\"user\":\"user$i\",\"host\":\"$DOMAIN\",\"password\":\"$PASSWORD\"}" >/dev/null
done

# ---------------------------------------------------------------- measurements
RESULTS="$WORK/results.md"
echo "| server | logins/s | server CPU per login | login cycle p50 | p99 | failed | idle connections | RSS before | RSS with idle | per idle connection | SCRAM iterations |" >"$RESULTS"
echo "|---|---|---|---|---|---|---|---|---|---|---|" >>"$RESULTS"

measure() { # name port pid
  local name=$1 port=$2 pid=$3
  say "$name: $IDLE idle authenticated connections"
  local before after out="$WORK/$name-idle.out"
  before=$(rss_kib "$pid")
  "${BENCH[@]}" --server "127.0.0.1:$port" idle --connections "$IDLE" --ramp 64 >"$out" 2>&1 &
  local bench=$!
  PIDS+=("$bench")
  until grep -qs READY "$out"; do
    if ! kill -0 "$bench" 2>/dev/null; then cat "$out" >&2; return 1; fi
    sleep 0.5
  done
  sleep 5
  after=$(rss_kib "$pid")
  kill -TERM "$bench"
  wait "$bench" || true
  cat "$out" >&2
  sleep 10 # let the server finish closing them
  local up iterations
  up=$(sed -n 's/^READY \([0-9]*\) .*/\1/p' "$out")
  iterations=$(sed -n 's/.*iteration count \([0-9]*\).*/\1/p' "$out")

  say "$name: logins at concurrency $CONCURRENCY for $DURATION s"
  local lout="$WORK/$name-logins.out" cpu0 cpu1
  cpu0=$(cpu_ticks "$pid")
  "${BENCH[@]}" --server "127.0.0.1:$port" logins --concurrency "$CONCURRENCY" \
    --duration "$DURATION" >"$lout" 2>&1 || true
  cpu1=$(cpu_ticks "$pid")
  cat "$lout" >&2
  local rate p50 p99 failed
  rate=$(sed -n 's/.* = \([0-9.]*\) logins\/s.*/\1/p' "$lout")
  failed=$(sed -n 's/.*, \([0-9]*\) failed$/\1/p' "$lout")
  p50=$(awk '/connect..closed/ {print $3 " ms"}' "$lout")
  p99=$(awk '/connect..closed/ {print $9 " ms"}' "$lout")
  local logins
  logins=$(sed -n 's/^logins: \([0-9]*\) in .*/\1/p' "$lout")
  awk -v n="$name" -v r="$rate" -v c="$((cpu1 - cpu0))" -v l="$((${logins:-0} + USERS))" -v hz="$(getconf CLK_TCK)" -v p50="$p50" -v p99="$p99" -v f="$failed" -v up="$up" \
    -v b="$before" -v a="$after" -v it="$iterations" 'BEGIN {
      printf "| %s | %s | %.2f ms | %s | %s | %s | %s | %.1f MiB | %.1f MiB | %.1f KiB | %s |\n",
        n, r, (l > 0 ? c * 1000 / hz / l : 0), p50, p99, f, up, b / 1024, a / 1024, (a - b) / (up > 0 ? up : 1), it }' >>"$RESULTS"
}

measure imbus 25222 "$IMBUS_PID"
measure prosody 35222 "$PROSODY_PID"
measure ejabberd 45222 "$EJABBERD_PID"

say "results"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); nproc: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "imbus $(cd "$ROOT" && git rev-parse --short HEAD); prosody $(dpkg-query -W -f '${Version}' prosody) ($(lua5.4 -v 2>&1 | head -n1)); ejabberd $(dpkg-query -W -f '${Version}' ejabberd) (Erlang/OTP $(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().'))"
echo "USERS=$USERS IDLE=$IDLE CONCURRENCY=$CONCURRENCY DURATION=$DURATION SOURCE_IPS=$SOURCE_IPS"
cat "$RESULTS"

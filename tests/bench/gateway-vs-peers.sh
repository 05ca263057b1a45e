#!/usr/bin/env bash
# imbus's XMPP client gateway against Prosody and ejabberd (Debian packages) on this
# machine: logins/s at equal concurrency and resident memory per idle authenticated
# connection.
#
#   tests/bench/gateway-vs-peers.sh            # as root (installs packages with apt-get)
#
# Environment (defaults): USERS=100 accounts user1..userN, IDLE=10000 idle connections,
# CONCURRENCY=64 login loops, DURATION=20 s of logins, SOURCE_IPS=8192 loopback source
# addresses, KEEP=1 keeps the work directory, SERVERS="imbus prosody ejabberd" the servers measured,
# BENCH_IMBUS_BIN another imbus binary than the release build.
#
# The three servers run side by side (imbus 25222, Prosody 35222, ejabberd 45222, all on
# 127.0.0.1, one self-signed P-256 certificate; listen backlog 1024 for Prosody and
# ejabberd, imbus's gateway listens with tokio's 128), each with its own configuration
# written
# into a temporary directory; they are measured one after the other with xmppbench
# (tests/src/bin/xmppbench): first IDLE authenticated idle connections (server RSS from
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

# shellcheck source=lib/peers.sh
. "$ROOT/tests/bench/lib/peers.sh"

# Every connection is a file descriptor on both ends.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE + 1000)) ]; then
  echo "ulimit -n is $(ulimit -n): too low for IDLE=$IDLE" >&2
  exit 1
fi

peers_prepare
BENCH=("$WORK/xmppbench" --domain "$DOMAIN" --users "$USERS" --password "$PASSWORD" --source-ips "$SOURCE_IPS")
# SERVERS: the servers to measure (default all three).
SERVERS=${SERVERS:-imbus prosody ejabberd}
wanted() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }
if wanted imbus; then start_imbus; fi
if wanted prosody; then start_prosody; fi
if wanted ejabberd; then
  start_ejabberd
  grep "open files" "/proc/$EJABBERD_PID/limits" >&2
fi

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

if wanted imbus; then measure imbus 25222 "$IMBUS_PID"; fi
if wanted prosody; then measure prosody 35222 "$PROSODY_PID"; fi
if wanted ejabberd; then measure ejabberd 45222 "$EJABBERD_PID"; fi

say "results"
peers_versions
echo "USERS=$USERS IDLE=$IDLE CONCURRENCY=$CONCURRENCY DURATION=$DURATION SOURCE_IPS=$SOURCE_IPS"
cat "$RESULTS"

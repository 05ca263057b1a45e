#!/usr/bin/env bash
# imbus's message routing against Prosody and ejabberd (Debian packages) on this machine,
# with the same accounts, client and workloads in one run:
#
#   tests/bench/messaging-vs-peers.sh          # as root (installs packages with apt-get)
#
# 1. one-to-one chat: PAIRS connected sender/receiver pairs (messages to the receiver's bare
#    JID, receivers available with priority 0) at stepped open-loop rates (RATES msg/s over
#    all pairs, STEP seconds each) until the server saturates (less than everything
#    delivered within DRAIN seconds, or p99 over 1 s); then a step at half of the highest
#    sustained rate. Per step: delivered msg/s, p50/p99/p99.9 latency from the due time in
#    the message body to arrival, and the server's CPU time per delivered message.
# 2. fixed rates: FIXED_RATES (default 2000 and 5000 msg/s) for STEP seconds each: latency and
#    server CPU time per message at a rate every server sustains.
# 3. offline: OFFLINE_PAIRS senders store OFFLINE_PER_PAIR messages each for offline
#    receivers, who then log in: store and drain rates.
# 4. presence fan-out: PRESENCE_USERS online users, each followed by PRESENCE_CONTACTS
#    contacts, change presence PRESENCE_RATE times/s in all.
#
# The load generator (xmppbench, tests/src/bin/xmppbench) runs on the same 2 cores as the
# server: at high rates it takes a large share of the machine, which is why the server's
# CPU time per message at fixed rates is reported beside the saturation rate. imbus runs
# on its embedded defaults (embedded log with fsync, the router, the compliance archive
# when it is part of the build) — every message is durably logged before it is routed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PAIRS=${PAIRS:-50}
RATES=${RATES:-1000,2000,5000,10000,15000,20000,30000,40000,60000}
FIXED_RATES=${FIXED_RATES:-2000,5000}
STEP=${STEP:-10}
DRAIN=${DRAIN:-5}
OFFLINE_PAIRS=${OFFLINE_PAIRS:-50}
OFFLINE_PER_PAIR=${OFFLINE_PER_PAIR:-200}
PRESENCE_USERS=${PRESENCE_USERS:-200}
PRESENCE_CONTACTS=${PRESENCE_CONTACTS:-20}
PRESENCE_RATE=${PRESENCE_RATE:-200}
SERVERS=${SERVERS:-imbus prosody ejabberd}
USERS=${USERS:-$(( 2 * PAIRS > PRESENCE_USERS ? 2 * PAIRS : PRESENCE_USERS ))}
if [ "$USERS" -lt $((2 * OFFLINE_PAIRS)) ]; then USERS=$((2 * OFFLINE_PAIRS)); fi
DOMAIN=example.com
PASSWORD=benchpass
ITERATIONS=4096

# shellcheck source=lib/peers.sh
. "$ROOT/tests/bench/lib/peers.sh"

IMBUS_EXTRA_ENV=(IMBUS_OFFLINE_QUOTA=100000)
PROSODY_EXTRA_MODULES='"offline";'
EJABBERD_EXTRA_MODULES='  mod_offline: {}'

peers_prepare
# Connections come from many loopback addresses: every server limits connections per
# address.
BENCH=("$WORK/xmppbench" --domain "$DOMAIN" --users "$USERS" --password "$PASSWORD" --source-ips 1024)

RESULTS="$WORK/results.txt"
: >"$RESULTS"

run_server() { # name port pid
  local name=$1 port=$2 pid=$3
  local out="$WORK/$name"
  say "$name: one-to-one at stepped rates"
  "${BENCH[@]}" --server "127.0.0.1:$port" messages --pairs "$PAIRS" --rates "$RATES" \
    --step-seconds "$STEP" --drain-seconds "$DRAIN" --server-pid "$pid" | tee "$out-steps.out" >&2
  say "$name: fixed rates $FIXED_RATES"
  "${BENCH[@]}" --server "127.0.0.1:$port" messages --pairs "$PAIRS" --rates "$FIXED_RATES" \
    --step-seconds "$STEP" --drain-seconds "$DRAIN" --all-rates --no-half --server-pid "$pid" \
    | tee "$out-fixed.out" >&2
  say "$name: offline store and drain"
  "${BENCH[@]}" --server "127.0.0.1:$port" offline --pairs "$OFFLINE_PAIRS" \
    --per-pair "$OFFLINE_PER_PAIR" | tee "$out-offline.out" >&2
  say "$name: presence fan-out"
  # A server that fails a workload (say, it does not confirm subscriptions in time) gets a
  # FAILED line in the results; the other servers are still measured.
  "${BENCH[@]}" --server "127.0.0.1:$port" presence --online "$PRESENCE_USERS" \
    --contacts "$PRESENCE_CONTACTS" --rate "$PRESENCE_RATE" --seconds "$STEP" \
    --drain-seconds "$DRAIN" --server-pid "$pid" 2>&1 | tee "$out-presence.out" >&2 \
    || echo "FAILED presence fan-out: $(tail -n 1 "$out-presence.out")" >>"$out-presence.out"
  {
    echo "### $name"
    grep -h -E '^(STEP|SUMMARY|saturated|OFFLINE|FAILED)' "$out-steps.out" "$out-fixed.out" \
      "$out-offline.out" "$out-presence.out"
    echo
  } >>"$RESULTS"
}

for server in $SERVERS; do
  case $server in
    imbus) start_imbus; run_server imbus 25222 "$IMBUS_PID"; kill "$IMBUS_PID" ;;
    prosody) start_prosody; run_server prosody 35222 "$PROSODY_PID"; kill "$PROSODY_PID" ;;
    ejabberd) start_ejabberd; run_server ejabberd 45222 "$EJABBERD_PID"; $EJABBERDCTL stop >/dev/null 2>&1 || true ;;
    *) echo "unknown server '$server' in SERVERS (imbus, prosody, ejabberd)" >&2; exit 1 ;;
  esac
done

say "results"
peers_versions
echo "PAIRS=$PAIRS RATES=$RATES FIXED_RATES=$FIXED_RATES STEP=$STEP DRAIN=$DRAIN OFFLINE=${OFFLINE_PAIRS}x$OFFLINE_PER_PAIR PRESENCE=${PRESENCE_USERS}users/${PRESENCE_CONTACTS}contacts/${PRESENCE_RATE}per_s"
cat "$RESULTS"

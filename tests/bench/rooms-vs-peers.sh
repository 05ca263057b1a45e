#!/usr/bin/env bash
# imbus's chat rooms (XEP-0045) against Prosody and ejabberd (Debian packages) on this
# machine, with the same accounts, client and workload in one run:
#
#   tests/bench/rooms-vs-peers.sh          # as root (installs packages with apt-get)
#
# For every room size in OCCUPANTS (default 50 and 500), on each server in SERVERS:
# 1. join storm: accounts user1..userN log in; user1 creates room bench<N> and accepts the
#    default configuration; then the other N-1 enter at the same instant. Joins/s, join
#    latency (sending the presence to receiving one's own presence with status 110), and
#    when the last occupant presence of the storm arrived anywhere.
# 2. fan-out: SENDERS of the occupants send group chat at stepped open-loop rates. DELIVERIES
#    lists the offered deliveries/s; each step offers DELIVERIES/N messages/s in all, every
#    one due at all N occupants (the sender included), STEP seconds each, until the server
#    saturates (not every delivery within DRAIN seconds, or p99 over 1 s); then a step at
#    half the highest sustained rate. Per step: deliveries/s counted at every occupant,
#    loss, p50/p99/p99.9 latency from the due time in the body to arrival, and the
#    server's CPU time per delivery.
#
# Room services: imbus at its chat node's system alias conference-1-imbus.<domain> (on by
# default); Prosody's muc component at conference.<domain>, with room history of 20 and no
# rate limits (Prosody 0.12 loads none unless configured); ejabberd's mod_muc at
# conference.<domain> with max_users raised from 200 to 1,000 (service and default room
# option) and no min_message_interval / min_presence_interval (ejabberd's anti-flood
# settings, off unless set). Prosody and ejabberd keep 20 messages of room history, imbus
# shows its default 15 to new participants; history is replayed with a delay stamp and is
# not counted (the rooms are new, so there is none).
#
# The load generator (xmppbench, tests/src/bin/xmppbench) runs on the same cores as the
# server; with 500 occupants it reads and decrypts every delivery on 500 TLS streams, so
# at high rates it takes a large share of the machine, which is why the server's CPU time
# per delivery is reported beside the rates.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OCCUPANTS=${OCCUPANTS:-50 500}
SENDERS=${SENDERS:-10}
DELIVERIES=${DELIVERIES:-5000,10000,20000,40000,60000,80000,100000,150000,200000}
STEP=${STEP:-10}
DRAIN=${DRAIN:-5}
SERVERS=${SERVERS:-imbus prosody ejabberd}
USERS=0
for n in $OCCUPANTS; do
  if [ "$n" -gt "$USERS" ]; then USERS=$n; fi
done
DOMAIN=example.com
PASSWORD=benchpass
ITERATIONS=4096

# Every occupant holds a connection (and the server one more), beside the servers' own
# files.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# shellcheck source=lib/peers.sh
. "$ROOT/tests/bench/lib/peers.sh"

PROSODY_EXTRA_CONFIG=$(cat <<EOF
Component "conference.$DOMAIN" "muc"
  max_history_messages = 20
  muc_room_default_history_length = 20
EOF
)
EJABBERD_EXTRA_MODULES=$(cat <<EOF
  mod_muc:
    hosts: ["conference.$DOMAIN"]
    access_create: all
    history_size: 20
    max_users: 1000
    default_room_options:
      max_users: 1000
EOF
)

peers_prepare
# Connections come from many loopback addresses: every server limits connections per
# address.
BENCH=("$WORK/xmppbench" --domain "$DOMAIN" --users "$USERS" --password "$PASSWORD" --source-ips 1024)

RESULTS="$WORK/results.txt"
: >"$RESULTS"

# Messages/s for each offered deliveries/s in DELIVERIES with N occupants (at least 1, no
# repeats).
rates_for() { # occupants
  echo "$DELIVERIES" | tr ',' '\n' | awk -v n="$1" '{ r = int($1 / n); if (r < 1) r = 1; if (!(r in seen)) { seen[r] = 1; out = out (out == "" ? "" : ",") r } } END { print out }'
}

# imbus writes the compliance records (one per recipient) to its database behind the
# deliveries, at the database's pace: the time from the end of the last step until the
# sink had written every record (its lag gauge back at 0), and the rows written by then.
compliance_catch_up() {
  local start=$SECONDS metrics lag
  while :; do
    metrics=$(curl -sf "http://127.0.0.1:25280/metrics" || true)
    lag=$(echo "$metrics" | awk '/^imbus_compliance_lag_records/ {s += $NF} END {print s + 0}')
    if [ "$lag" = 0 ] || [ $((SECONDS - start)) -ge 900 ]; then break; fi
    sleep 1
  done
  echo "COMPLIANCE lag_records=$lag caught_up_after_s=$((SECONDS - start)) rows_written=$(echo "$metrics" | awk '/^imbus_compliance_rows_written_total/ {s += $NF} END {printf "%d", s}')"
}

run_server() { # name port pid service
  local name=$1 port=$2 pid=$3 service=$4
  echo "### $name" >>"$RESULTS"
  for n in $OCCUPANTS; do
    local out="$WORK/$name-$n.out"
    local rates
    rates=$(rates_for "$n")
    say "$name: $n occupants, join storm, then group chat at $rates msg/s"
    # A server that fails the workload gets a FAILED line in the results; the other sizes
    # and servers are still measured.
    "${BENCH[@]}" --server "127.0.0.1:$port" rooms --service "$service" --room "bench$n" \
      --occupants "$n" --senders "$SENDERS" --rates "$rates" --step-seconds "$STEP" \
      --drain-seconds "$DRAIN" --server-pid "$pid" 2>&1 | tee "$out" >&2 \
      || echo "FAILED $n occupants: $(tail -n 1 "$out")" >>"$out"
    grep -h -E '^(JOIN|STEP|SUMMARY|saturated|FAILED)' "$out" >>"$RESULTS" || true
    if [ "$name" = imbus ]; then compliance_catch_up >>"$RESULTS"; fi
  done
  echo >>"$RESULTS"
}

for server in $SERVERS; do
  case $server in
    imbus)
      start_imbus
      run_server imbus 25222 "$IMBUS_PID" "conference-1-imbus.$DOMAIN"
      kill "$IMBUS_PID"
      ;;
    prosody)
      start_prosody
      run_server prosody 35222 "$PROSODY_PID" "conference.$DOMAIN"
      kill "$PROSODY_PID"
      ;;
    ejabberd)
      start_ejabberd
      run_server ejabberd 45222 "$EJABBERD_PID" "conference.$DOMAIN"
      $EJABBERDCTL stop >/dev/null 2>&1 || true
      ;;
    *) echo "unknown server '$server' in SERVERS (imbus, prosody, ejabberd)" >&2; exit 1 ;;
  esac
done

say "results"
peers_versions
echo "OCCUPANTS=$OCCUPANTS SENDERS=$SENDERS DELIVERIES=$DELIVERIES STEP=$STEP DRAIN=$DRAIN"
cat "$RESULTS"

# Shared by the side-by-side benchmarks in tests/bench: starts imbus, Prosody and ejabberd
# (Debian packages) on 127.0.0.1 with one self-signed certificate and the same accounts
# user1..user$USERS (password $PASSWORD), each in its own directory under $WORK.
#
# Source it after setting ROOT, USERS, DOMAIN, PASSWORD, ITERATIONS; then call
# peers_prepare, start_imbus, start_prosody, start_ejabberd. Ports: imbus 25222, Prosody
# 35222, ejabberd 45222 (STARTTLS client ports). The process ids to measure end up in
# IMBUS_PID, PROSODY_PID, EJABBERD_PID. Extra server settings come from IMBUS_EXTRA_ENV
# (an array of NAME=value), PROSODY_EXTRA_MODULES, PROSODY_EXTRA_CONFIG (Lua appended after
# the VirtualHost, such as a Component), EJABBERD_EXTRA_MODULES (YAML lines under
# `modules:`) and EJABBERD_EXTRA_CONFIG (top-level YAML lines).

say() { printf '\n== %s\n' "$*" >&2; }

PIDS=()
peers_cleanup() {
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

# Installs the peers, builds imbus and xmppbench, makes $WORK and the certificate.
# BENCH_IMBUS_BIN, when set, is the imbus binary measured instead of the release build.
peers_prepare() {
  if [ "$(id -u)" != 0 ]; then
    echo "run as root: it installs prosody and ejabberd with apt-get" >&2
    exit 1
  fi
  say "installing prosody and ejabberd"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody ejabberd openssl curl >/dev/null
  # The packages start their own instances; the benchmark runs its own.
  systemctl stop prosody ejabberd >/dev/null 2>&1 || service prosody stop >/dev/null 2>&1 || true
  service ejabberd stop >/dev/null 2>&1 || true

  say "building imbus and xmppbench (release)"
  (cd "$ROOT" && cargo build --release -q -p imbus -p imbus-tests --bin imbus --bin xmppbench)

  WORK=$(mktemp -d /tmp/imbus-peers.XXXXXX)
  chmod 755 "$WORK"
  trap peers_cleanup EXIT
  # BENCH_IMBUS_BIN: measure another build of imbus (say, one built without a feature).
  cp "${BENCH_IMBUS_BIN:-$ROOT/target/release/imbus}" "$WORK/imbus"
  cp "$ROOT/target/release/xmppbench" "$WORK/"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  chmod 644 "$WORK/key.pem"
}

start_imbus() {
  say "imbus: starting on 25222"
  # Exported: `imbus user add` below finds the running server from the same settings.
  export IMBUS_DATA_DIR="$WORK/imbus-data" IMBUS_DOMAIN="$DOMAIN" IMBUS_BIND=127.0.0.1 \
    IMBUS_HTTP_BIND=127.0.0.1 IMBUS_C2S_PORT=25222 IMBUS_C2S_TLS_PORT=25223 \
    IMBUS_S2S_PORT=25269 IMBUS_HTTP_PORT=25280 IMBUS_TLS_CERT_FILE="$WORK/cert.pem" \
    IMBUS_TLS_KEY_FILE="$WORK/key.pem" IMBUS_AUTH_SCRAM_ITERATIONS="$ITERATIONS" \
    IMBUS_LOG_LEVEL=warn
  env ${IMBUS_EXTRA_ENV[@]+"${IMBUS_EXTRA_ENV[@]}"} "$WORK/imbus" serve >"$WORK/imbus.log" 2>&1 &
  IMBUS_PID=$!
  PIDS+=("$IMBUS_PID")
  wait_for_port 25280
  wait_for_port 25222
  for i in $(seq 1 "$USERS"); do
    echo "$PASSWORD" | "$WORK/imbus" user add "user$i@$DOMAIN" >/dev/null
  done
}

start_prosody() {
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
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "admin_shell"; ${PROSODY_EXTRA_MODULES:-} }
ssl = { certificate = "$WORK/cert.pem"; key = "$WORK/key.pem" }
VirtualHost "$DOMAIN"
${PROSODY_EXTRA_CONFIG:-}
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
}

start_ejabberd() {
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
  max_user_offline_messages: 1000000
${EJABBERD_EXTRA_CONFIG:-}
modules:
  mod_roster: {}
  mod_disco: {}
  mod_ping: {}
${EJABBERD_EXTRA_MODULES:-}
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
  for i in $(seq 1 "$USERS"); do
    curl -sf -X POST "http://127.0.0.1:45280/api/register" \
      -d "{\"user\":\"user$i\",\"host\":\"$DOMAIN\",\"password\":\"$PASSWORD\"}" >/dev/null
  done
}

# One line identifying the machine and the three servers' versions.
peers_versions() {
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ); nproc: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "imbus $(cd "$ROOT" && git rev-parse --short HEAD); prosody $(dpkg-query -W -f '${Version}' prosody) ($(lua5.4 -v 2>&1 | head -n1)); ejabberd $(dpkg-query -W -f '${Version}' ejabberd) (Erlang/OTP $(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().'))"
}

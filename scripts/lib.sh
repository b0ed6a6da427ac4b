# Shell helpers shared by scripts/test and scripts/bench (sourced, not run): root and apt
# installs, a free port, and a throwaway PostgreSQL cluster from the machine's PostgreSQL
# binaries (Debian's `postgresql` is installed when missing).

log() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if ! pg_bindir >/dev/null; then
    log "installing PostgreSQL (Debian package postgresql)" >&2
    apt_install postgresql >&2
  fi
  pg_bindir
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

PG_DIR=""
PG_BIN=""
PG_URL=""
stop_postgres() {
  if [ -n "$PG_DIR" ] && [ -d "$PG_DIR/data" ]; then
    run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  # An `if`, not `&&`: as the EXIT trap's last command under `set -e`, a false test would
  # turn a successful run into exit status 1 (scripts/bench with BENCH_SKIP_PG=1 did).
  if [ -n "$PG_DIR" ]; then rm -rf "$PG_DIR"; fi
}

run_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres [SERVER OPTION...]: a new cluster on 127.0.0.1 (trust auth), the options
# appended to the server's command line (e.g. -c fsync=off). Sets PG_BIN, PG_DIR and PG_URL
# (postgres://postgres@127.0.0.1:PORT/postgres); stop it with stop_postgres.
start_postgres() {
  PG_BIN=$(ensure_postgres)
  PG_DIR=$(mktemp -d /tmp/rgw-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi
  local port
  port=$(free_port)
  log "starting a throwaway PostgreSQL on 127.0.0.1:$port ($PG_BIN)"
  run_pg "$PG_BIN/initdb" -D "$PG_DIR/data" --auth=trust --no-sync -U postgres >/dev/null
  run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w -l "$PG_DIR/log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR $*" start >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

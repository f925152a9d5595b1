#!/usr/bin/env bash
# A throwaway PostgreSQL for the store's tests (tests/storage run on SQLite and on PostgreSQL).
#   postgres-test.sh install        install Debian's postgresql when initdb is missing (idempotent)
#   postgres-test.sh start DIR      initdb a cluster in DIR as the postgres user, start it on
#                                   127.0.0.1 at a free port, print its SQLAlchemy URL
#   postgres-test.sh stop DIR       stop that cluster and remove DIR
# Without root (or passwordless sudo) and without PostgreSQL it says so and exits 0 for
# "install", 3 for "start": the tests then skip PostgreSQL and say why.
set -euo pipefail

find_bin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ]; then echo "$d"; return; fi
  done
  return 1
}

if [ "$(id -u)" -eq 0 ]; then SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
else SUDO="none"; fi

case "${1:-}" in
  install)
    if find_bin >/dev/null; then exit 0; fi
    if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "postgres-test: no PostgreSQL and no root/apt-get to install it; the store's PostgreSQL tests will skip" >&2
      exit 0
    fi
    echo "postgres-test: installing postgresql (Debian package) ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 || {
      $SUDO apt-get update -q >/dev/null
      $SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null
    }
    ;;
  start)
    dir="$2"
    bin="$(find_bin)" || { echo "postgres-test: PostgreSQL is not installed (run '$0 install')" >&2; exit 3; }
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
      # PostgreSQL refuses to run as root: the cluster belongs to the postgres account.
      id postgres >/dev/null 2>&1 || { echo "postgres-test: no 'postgres' account to run the server" >&2; exit 3; }
      chown postgres "$dir"
      as_pg() { runuser -u postgres -- "$@"; }
    else
      as_pg() { "$@"; }
    fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 3; }
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 3; }
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres scopeflow_test
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/scopeflow_test"
    ;;
  stop)
    dir="$2"
    bin="$(find_bin)" || exit 0
    if [ -d "$dir/data" ]; then
      if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
      else "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true; fi
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac

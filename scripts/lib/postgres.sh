# Finds a PostgreSQL server for the tests and tools, or starts a private one.
#
# ensure_postgres exports DATABASE_URL: the caller's own when set; else the server at
# 127.0.0.1:5432 when it answers; else a private cluster under target/postgres, made from the
# machine's PostgreSQL binaries (installed from Debian's packages when missing).
# database_url_for NAME prints DATABASE_URL with its database replaced by NAME.

PRIVATE_PG_PORT=${PRIVATE_PG_PORT:-55432}

pg_bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && echo "$dir"
}

install_postgres_packages() {
  echo "PostgreSQL binaries not found; installing them from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql postgresql-client >&2
}

answers() {
  pg_isready -q -d "$1" -t 3 2>/dev/null
}

start_private_cluster() {
  local bin root data sock log here="$PWD"
  bin=$(pg_bin_dir)
  root="$here/target/postgres"
  # initdb and postgres refuse to run as root.
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    as=(runuser -u postgres --)
    mkdir -p "$root"
    # The postgres user must reach the data directory; a checkout under a private home
    # directory is out of its reach, so the cluster lives in the temporary directory then.
    if ! (cd / && "${as[@]}" test -x "$here/target"); then
      root="${TMPDIR:-/tmp}/invite-sync-postgres-$(printf '%s' "$here" | cksum | cut -d' ' -f1)"
      echo "the postgres user cannot reach target/; the private cluster lives in $root" >&2
    fi
  fi
  data="$root/data"
  sock="$root/socket"
  log="$root/server.log"
  mkdir -p "$sock"
  [ "${#as[@]}" -gt 0 ] && chown -R postgres "$root"
  if [ ! -f "$data/PG_VERSION" ]; then
    echo "starting a private PostgreSQL cluster in $root (port $PRIVATE_PG_PORT)" >&2
    (cd "$root" && "${as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null)
  fi
  if ! answers "postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/postgres"; then
    (cd "$root" && "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
      -o "-p $PRIVATE_PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
      start >/dev/null)
  fi
}

ensure_postgres() {
  if ! command -v pg_isready >/dev/null 2>&1 || [ -z "$(pg_bin_dir)" ]; then
    install_postgres_packages
  fi
  export PATH="$(pg_bin_dir):$PATH"
  if [ -n "${DATABASE_URL:-}" ]; then
    if ! answers "$DATABASE_URL"; then
      echo "DATABASE_URL is set but its server does not answer" >&2
      return 1
    fi
    return 0
  fi
  local local_url="postgres://postgres@127.0.0.1:5432/postgres"
  if answers "$local_url"; then
    export DATABASE_URL="$local_url"
    return 0
  fi
  start_private_cluster
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/postgres"
  answers "$DATABASE_URL"
}

database_url_for() {
  python3 - "$DATABASE_URL" "$1" <<'PY'
import sys, urllib.parse as u
parts = u.urlsplit(sys.argv[1])
print(u.urlunsplit(parts._replace(path="/" + sys.argv[2])))
PY
}

#!/usr/bin/env bash
# Runs a command next to a throwaway PostgreSQL: `scripts/postgres.sh CMD ARGS...`.
# Debian's PostgreSQL (installed with apt-get when missing) gets a fresh cluster in a temporary
# folder, listening only on a Unix socket in that folder (no TCP port, so it never collides
# with another server); CMD runs with WEFT_TEST_POSTGRES naming it (and
# WEFT_TEST_POSTGRES_RESTART a script that restarts it), and the cluster is stopped
# and removed when CMD ends, however it ends. PostgreSQL refuses to run as root, so as root
# the cluster belongs to an unprivileged user (postgres, else nobody).
# Example: scripts/postgres.sh cargo test --release --test store -- --include-ignored
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: scripts/postgres.sh CMD [ARGS...]" >&2
  exit 2
fi

find_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

bin=$(find_bin) || {
  echo "postgres: installing Debian's postgresql"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q postgresql >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q postgresql >/dev/null; }
  bin=$(find_bin) || { echo "postgres: no pg_ctl under /usr/lib/postgresql/*/bin after installing" >&2; exit 1; }
}

# /tmp rather than the repository: the socket's path must stay short (108 bytes), and
# scripts/test.sh hides only the folders beside the repository.
dir=$(mktemp -d /tmp/weft-postgres.XXXXXX)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  owner=postgres
  id -u "$owner" >/dev/null 2>&1 || owner=nobody
  chown "$owner" "$dir"
  as_owner=(runuser -u "$owner" --)
fi

stop() {
  local status=$?
  if [ -f "$dir/data/postmaster.pid" ]; then
    "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  exit "$status"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U weft --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
  { cat "$dir/initdb.log" >&2; echo "postgres: initdb failed (log above)" >&2; exit 1; }
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 \
  -o "-c listen_addresses='' -k $dir -c max_connections=200" start >/dev/null ||
  { cat "$dir/server.log" >&2; echo "postgres: the server did not start (log above)" >&2; exit 1; }
export WEFT_TEST_POSTGRES="host=$dir user=weft dbname=postgres"
# A test restarts the server (stop, start again on the same data folder and socket: what an
# operator's restart or upgrade does to a fleet) by running this script.
cat >"$dir/restart" <<RESTART
#!/usr/bin/env bash
set -euo pipefail
${as_owner[*]} "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
${as_owner[*]} "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 \\
  -o "-c listen_addresses='' -k $dir -c max_connections=200" start >/dev/null
RESTART
chmod 755 "$dir/restart"
export WEFT_TEST_POSTGRES_RESTART="$dir/restart"
echo "postgres: a throwaway PostgreSQL $("$bin/postgres" --version | awk '{print $3}') server on $dir (WEFT_TEST_POSTGRES)"
"$@"

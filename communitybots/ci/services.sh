# Sourced by .ci/run before `make test` (in a `set -euo pipefail` shell): installs
# Debian's chromium and postgresql when missing, starts PostgreSQL, creates the test
# role and database, and exports the variables the communitybots tests read:
#   COMMUNITYBOTS_TEST_POSTGRES_URL  the same API tests run on this server
#   COMMUNITYBOTS_CHROMIUM           the browser of the end-to-end test
# Idempotent; never exits the calling shell; a failure only leaves a variable unset
# (the tests that need it are then skipped with the reason, or fail under CI=true).

_cb_services() {
  local pkgs=()
  command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || pkgs+=(postgresql)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    echo "communitybots services: installing ${pkgs[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; }; then
      echo "communitybots services: apt-get install ${pkgs[*]} failed" >&2
    fi
  fi
  if command -v chromium >/dev/null 2>&1; then
    export COMMUNITYBOTS_CHROMIUM="$(command -v chromium)"
  fi

  local version
  version="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$version" ]; then
    echo "communitybots services: no PostgreSQL; the PostgreSQL tests will be skipped (fail under CI=true)" >&2
    return 0
  fi
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$version main$"; then
    pg_createcluster "$version" main >/dev/null || { echo "communitybots services: pg_createcluster failed" >&2; return 0; }
  fi
  if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
    pg_ctlcluster "$version" main start || { echo "communitybots services: PostgreSQL did not start" >&2; return 0; }
  fi
  local port
  port="$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}' || true)"
  local psql=(runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA)
  local i
  for i in $(seq 1 30); do "${psql[@]}" -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.5; done
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='communitybots'")" != "1" ]; then
    "${psql[@]}" -c "CREATE ROLE communitybots LOGIN PASSWORD 'communitybots'" || return 0
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname='communitybots_test'")" != "1" ]; then
    "${psql[@]}" -c "CREATE DATABASE communitybots_test OWNER communitybots" || return 0
  fi
  export COMMUNITYBOTS_TEST_POSTGRES_URL="postgresql+psycopg://communitybots:communitybots@127.0.0.1:${port}/communitybots_test"
  echo "communitybots services: PostgreSQL $version on port $port, chromium ${COMMUNITYBOTS_CHROMIUM:-absent}"
}
_cb_services
unset -f _cb_services

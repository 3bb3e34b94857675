#!/usr/bin/env bash
# Staging from nothing to validated, on a PostgreSQL and a Redis you already have:
#   1. `m1 staging setup`: create the database if missing, migrate, verify Redis, write the env
#      file (fresh secrets, mode 0600, kept unless --force), check the tool registry, create the
#      admin credential (its key is printed once), run the configuration validator;
#   2. start one API replica (`m1 api`) in the background with a pid file and a log, unless the
#      pid file names one that is still running (then it is left alone);
#   3. wait until the API answers /health/live and /health/ready (`m1 staging verify`), then run
#      `m1 validate config --profile staging --no-strict` once more, the API now answering.
# Running it twice changes nothing the second time. `--stop` stops the API it started.
# See docs/deployment.md. Exit codes: 0 validated; 1 a step or the API check failed; 2 usage.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/setup-staging.sh --database-url URL --redis-url URL [options]
       scripts/setup-staging.sh --stop [--run-dir DIR]

  --database-url URL   staging database, created if missing (password: in the URL or PGPASSWORD)
  --admin-url URL      where CREATE DATABASE runs (default: same server, database postgres)
  --redis-url URL      staging Redis
  --redis-prefix P     M1_REDIS_PREFIX (default m1)
  --env-file FILE      written once with mode 0600 (default .env.staging)
  --force              rewrite an existing env file (new secrets)
  --api-host HOST      API address (default 127.0.0.1)
  --api-port PORT      API port (default 8000)
  --run-dir DIR        pid file and log (default .m1-staging)
  --wait-s S           how long to wait for the API to be ready (default 60)
  --stop               stop the API started here and remove its pid file
The m1 command is `m1`, or what M1CMD says (e.g. M1CMD="python -m m1lib.cli").
EOF
}

database_url="" admin_url="" redis_url="" redis_prefix="m1" env_file=".env.staging"
force="" api_host="127.0.0.1" api_port="8000" run_dir=".m1-staging" wait_s="60" stop=""
while (($#)); do
    case "$1" in
    --database-url | --admin-url | --redis-url | --redis-prefix | --env-file | --api-host | \
        --api-port | --run-dir | --wait-s)
        (($# >= 2)) || { echo "$1: needs a value" >&2; exit 2; }
        name="${1#--}"
        printf -v "${name//-/_}" '%s' "$2"
        shift 2
        ;;
    --force) force="--force"; shift ;;
    --stop) stop=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

read -r -a m1 <<<"${M1CMD:-m1}"
pid_file="$run_dir/api.pid"
log_file="$run_dir/api.log"

# The pid in the pid file when that process still runs and is an M1 API; nothing otherwise.
running_api() {
    [[ -f "$pid_file" ]] || return 1
    local pid
    pid="$(<"$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(ps -p "$pid" -o args=)" == *" api"* ]] || return 1  # a reused pid is not ours
    echo "$pid"
}

if [[ -n "$stop" ]]; then
    if pid="$(running_api)"; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
        echo "stopped the API (pid $pid)"
    else
        echo "no API running from $pid_file"
    fi
    rm -f "$pid_file"
    exit 0
fi

[[ -n "$database_url" && -n "$redis_url" ]] || { usage >&2; exit 2; }
start_s=$SECONDS
mkdir -p "$run_dir"
chmod 700 "$run_dir"

setup=("${m1[@]}" staging setup --database-url "$database_url" --redis-url "$redis_url"
    --redis-prefix "$redis_prefix" --env-file "$env_file")
[[ -n "$admin_url" ]] && setup+=(--admin-url "$admin_url")
[[ -n "$force" ]] && setup+=("$force")
"${setup[@]}"

if pid="$(running_api)"; then
    echo "API already running (pid $pid), left alone; log $log_file"
else
    rm -f "$pid_file"
    (
        set -a
        # shellcheck disable=SC1090 # the env file this script just had written
        . "$env_file"
        set +a
        export M1_API_HOST="$api_host" M1_API_PORT="$api_port"
        exec nohup "${m1[@]}" api
    ) >>"$log_file" 2>&1 </dev/null &
    echo "$!" >"$pid_file"
    echo "API started (pid $!); log $log_file"
fi

if ! "${m1[@]}" staging verify --api-url "http://$api_host:$api_port" --wait-s "$wait_s"; then
    echo "the API is not ready: see $log_file ($0 --stop stops it)" >&2
    exit 1
fi
# The validator once more, now that the API answers (setup ran it before any API existed).
M1_API_HOST="$api_host" M1_API_PORT="$api_port" \
    "${m1[@]}" --env-file "$env_file" validate config --profile staging --no-strict
echo "staging validated in $((SECONDS - start_s)) s"

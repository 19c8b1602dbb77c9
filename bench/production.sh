#!/usr/bin/env bash
# The production layout under load: one `serve` process, N `worker` processes, PostgreSQL
# or MariaDB, and the local Redis; everything on loopback, removed afterwards.
#
#   bench/production.sh postgresql 1 [POINTS]     bench/production.sh mariadb 2 [POINTS]
#
# Prints the `glowing-fiesta bench` ingest table, then the end-to-end rate: points divided
# by (time to get every 202 + time until the workers have made every point queryable).
set -euo pipefail
engine=${1:?postgresql or mariadb}
workers=${2:-1}
points=${3:-1000000}
here=$(cd "$(dirname "$0")/.." && pwd)
gf="$here/.venv/bin/glowing-fiesta"
db="gf_bench_$$"
prefix="gfbench$$"
port=$(( 20000 + $$ % 20000 ))
tmp=$(mktemp -d)
pids=()

case "$engine" in
  postgresql)
    psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" postgres
    url="postgresql://postgres@127.0.0.1:5432/$db"
    drop() { psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" postgres; } ;;
  mariadb)
    mariadb -h 127.0.0.1 -u root -e "CREATE DATABASE $db"
    url="mariadb://root@127.0.0.1:3306/$db"
    drop() { mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $db"; } ;;
  *) echo "engine must be postgresql or mariadb" >&2; exit 2 ;;
esac

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  drop || true
  redis-cli --scan --pattern "$prefix:*" | xargs -r redis-cli del >/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

export GF_DATABASE_URL="$url" GF_REDIS_URL="redis://127.0.0.1:6379/0" GF_REDIS_PREFIX="$prefix"
export GF_LOG_LEVEL=WARNING GF_RATE_LIMIT_PER_MINUTE=100000000
"$gf" db upgrade 2>/dev/null
key=$("$gf" keys create bench 2>/dev/null)
"$gf" serve --port "$port" >"$tmp/serve.log" 2>&1 & pids+=($!)
for _ in $(seq "$workers"); do "$gf" worker >>"$tmp/worker.log" 2>&1 & pids+=($!); done
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done

"$gf" bench --url "http://127.0.0.1:$port" --key "$key" --workload ingest --runs 1 \
  --points "$points" --json "$tmp/report.json"
python3 - "$tmp/report.json" "$engine" "$workers" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
s = report["summary"]
points = report["environment"]["options"]["points"]
accepted = s["ingest_points_per_s"]["median"]
drain = s["last_202_to_queryable_s"]["median"]
end_to_end = points / (points / accepted + drain)
print(f"{sys.argv[2]}, {sys.argv[3]} worker(s): accepted {accepted:,.0f} points/s, "
      f"queryable {drain:.1f} s after the last 202, end to end {end_to_end:,.0f} points/s")
PY

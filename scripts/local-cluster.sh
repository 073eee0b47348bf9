#!/usr/bin/env bash
# The scaled setup of deploy/compose.scaled.yaml without Docker, from Debian's packages,
# everything on 127.0.0.1: one Redis with AOF, three replicas with `--store redis`, and
# nginx balancing round robin over them with the proxy policy of deploy/nginx.conf
# (retries, keepalive). Ctrl-C (or any exit) stops everything.
#
#   scripts/local-cluster.sh                    # builds target/release/sensor-stats first
#   LOCAL_CLUSTER_BIN=/path/to/sensor-stats scripts/local-cluster.sh   # no build
#
# Needs: cargo (unless LOCAL_CLUSTER_BIN is set), redis-server and redis-cli
# (apt-get install redis-server), nginx (apt-get install nginx-light), curl.
#
# Settings (environment):
#   LOCAL_CLUSTER_LB_PORT        balancer port                     (8080)
#   LOCAL_CLUSTER_REPLICA_PORTS  one port per replica, space-separated (8081 8082 8083)
#   LOCAL_CLUSTER_REDIS_PORT     Redis port                        (6390)
#   LOCAL_CLUSTER_DIR            where the configs, logs and the Redis AOF go; kept at
#                                exit, so the data survives a restart (default: a
#                                temporary directory, removed at exit)
#   LOCAL_CLUSTER_BIN            the sensor-stats binary to run instead of building one
#   LOCAL_CLUSTER_WAIT           seconds to wait for readiness      (60)
# The replicas get their settings as flags, which win over any SENSOR_STATS_* variables
# of your environment; other SENSOR_STATS_* variables (log level, timeouts, ...) apply.
# Nothing is written under /etc, and no system service is started or touched.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"

lb_port="${LOCAL_CLUSTER_LB_PORT:-8080}"
read -r -a replica_ports <<<"${LOCAL_CLUSTER_REPLICA_PORTS:-8081 8082 8083}"
redis_port="${LOCAL_CLUSTER_REDIS_PORT:-6390}"
wait_seconds="${LOCAL_CLUSTER_WAIT:-60}"

die() {
  echo "local-cluster.sh: $*" >&2
  exit 1
}

# ------------------------------------------------------------------- prerequisites
for tool in redis-server redis-cli nginx curl; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is not installed (apt-get install redis-server nginx-light curl)"
done
[ "${#replica_ports[@]}" -ge 1 ] || die "LOCAL_CLUSTER_REPLICA_PORTS names no port"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$lb_port" "${replica_ports[@]}" "$redis_port"; do
  if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    die "not a port: $port"
  fi
  if port_in_use "$port"; then
    die "127.0.0.1:$port is already in use (choose others with LOCAL_CLUSTER_LB_PORT, LOCAL_CLUSTER_REPLICA_PORTS, LOCAL_CLUSTER_REDIS_PORT)"
  fi
done
if [ "$(printf '%s\n' "$lb_port" "${replica_ports[@]}" "$redis_port" | sort | uniq -d)" != "" ]; then
  die "the ports must all differ: $lb_port ${replica_ports[*]} $redis_port"
fi

# --------------------------------------------------------------------------- build
if [ -n "${LOCAL_CLUSTER_BIN:-}" ]; then
  bin="$LOCAL_CLUSTER_BIN"
else
  command -v cargo >/dev/null 2>&1 || die "cargo is not installed (or set LOCAL_CLUSTER_BIN)"
  echo "local-cluster.sh: cargo build --release --locked" >&2
  cargo build --release --locked
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/sensor-stats"
fi
[ -x "$bin" ] || die "$bin is not an executable"

# ------------------------------------------------------------------------ workspace
if [ -n "${LOCAL_CLUSTER_DIR:-}" ]; then
  dir="$LOCAL_CLUSTER_DIR"
  keep_dir=1
else
  dir="$(mktemp -d "${TMPDIR:-/tmp}/sensor-stats-cluster.XXXXXX")"
  keep_dir=0
fi
mkdir -p "$dir/redis" "$dir/nginx"
dir="$(cd "$dir" && pwd)"

pids=()
names=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Stop everything even when the terminal or a pipe reading our output is gone.
  trap '' PIPE
  set +e
  if [ "${#pids[@]}" -gt 0 ]; then
    echo >&2
    echo "local-cluster.sh: stopping ${names[*]}" >&2
    # The balancer and the replicas first, Redis last (it fsyncs its AOF on SIGTERM).
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    for _ in $(seq 1 150); do
      local alive=0 pid
      for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then alive=1; fi
      done
      [ "$alive" -eq 0 ] && break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do
      kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
  fi
  if [ "$keep_dir" -eq 1 ]; then
    echo "local-cluster.sh: configs, logs and Redis data kept in $dir" >&2
  else
    rm -rf "$dir"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in the background with its output in $dir/$name.log.
start() {
  local name="$1"
  shift
  "$@" >>"$dir/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# Fails with the end of the process's log when it is no longer running.
check_alive() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "local-cluster.sh: ${names[$i]} exited; the end of $dir/${names[$i]}.log:" >&2
      tail -n 20 "$dir/${names[$i]}.log" >&2 || true
      exit 1
    fi
  done
}

# Waits until "$@" succeeds, checking every 0.2 s that everything still runs.
wait_for() {
  local what="$1" deadline=$((SECONDS + wait_seconds))
  shift
  until "$@"; do
    check_alive
    [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after ${wait_seconds}s (logs in $dir)"
    sleep 0.2
  done
}

http_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" || true; }
answers_204() { [ "$(http_status "$1")" = 204 ]; }

# --------------------------------------------------------------------------- redis
# As in the compose file: AOF fsynced every second, no RDB snapshots, noeviction.
start redis redis-server --bind 127.0.0.1 --port "$redis_port" --protected-mode yes \
  --dir "$dir/redis" --appendonly yes --appendfsync everysec --save "" \
  --maxmemory-policy noeviction --daemonize no --logfile ""
redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; }
wait_for "redis on 127.0.0.1:$redis_port" redis_ping

# ------------------------------------------------------------------------ replicas
redis_url="redis://127.0.0.1:$redis_port/0"
for i in "${!replica_ports[@]}"; do
  start "replica-$((i + 1))" "$bin" --host 127.0.0.1 --port "${replica_ports[$i]}" \
    --store redis --redis-url "$redis_url"
done
for port in "${replica_ports[@]}"; do
  wait_for "the replica on 127.0.0.1:$port" answers_204 "http://127.0.0.1:$port/healthz"
done

# --------------------------------------------------------------------------- nginx
# deploy/nginx.conf with the replicas on 127.0.0.1 (no Docker DNS: no resolver, no
# `resolve`), listening on 127.0.0.1 only, and its temporary files and logs under $dir.
servers=""
for port in "${replica_ports[@]}"; do
  servers+="        server 127.0.0.1:$port max_fails=3 fail_timeout=10s;\n"
done
conf="$dir/nginx/nginx.conf"
sed -E \
  -e '/^[[:space:]]*server[[:space:]]+sensor-stats-[0-9]+:[0-9]+/d' \
  -e '/^[[:space:]]*resolver[[:space:]]/d' \
  -e "s|^([[:space:]]*zone[[:space:]]+sensor_stats[[:space:]].*)$|\1\n$servers|" \
  -e "s|^([[:space:]]*)listen[[:space:]]+8080;|\1listen 127.0.0.1:$lb_port;|" \
  -e "/^http[[:space:]]*\\{/a\\    client_body_temp_path $dir/nginx/body; proxy_temp_path $dir/nginx/proxy; fastcgi_temp_path $dir/nginx/fastcgi; uwsgi_temp_path $dir/nginx/uwsgi; scgi_temp_path $dir/nginx/scgi;" \
  "$repo/deploy/nginx.conf" >"$conf"
if [ "$(grep -c '^[[:space:]]*server 127\.0\.0\.1:' "$conf")" -ne "${#replica_ports[@]}" ] ||
  ! grep -q "listen 127.0.0.1:$lb_port;" "$conf"; then
  die "could not derive $conf from deploy/nginx.conf (has its upstream or listen line changed?)"
fi
nginx_cmd=(nginx -p "$dir/nginx/" -c "$conf" -e stderr -g "daemon off; pid $dir/nginx/nginx.pid;")
"${nginx_cmd[@]}" -t -q >"$dir/nginx.log" 2>&1 || {
  cat "$dir/nginx.log" >&2
  die "nginx -t failed on $conf"
}
start nginx "${nginx_cmd[@]}"
wait_for "nginx on 127.0.0.1:$lb_port" answers_204 "http://127.0.0.1:$lb_port/healthz"

# ---------------------------------------------------------------------------- ready
first="${replica_ports[0]}"
cat <<EOF

sensor-stats local cluster is ready: nginx on http://127.0.0.1:$lb_port, round robin over
${#replica_ports[@]} replicas (${replica_ports[*]}) sharing Redis on 127.0.0.1:$redis_port.

  # Ingest through the balancer; the Idempotency-Key makes a retry count once.
  curl -i -XPOST 127.0.0.1:$lb_port/data -H 'content-type: application/json' \\
       -H 'Idempotency-Key: batch-1' --data-binary @$repo/samples/post_data_ex1.json

  # Every replica answers the same statistics.
  for p in ${replica_ports[*]}; do curl -s 127.0.0.1:\$p/statistics/sensor1; echo; done

  # Readiness through the balancer; one replica's metrics; the AOF; which replica
  # served each request (nginx's access log).
  curl -i 127.0.0.1:$lb_port/healthz
  curl -s 127.0.0.1:$first/metrics | grep '^sensor_stats_'
  redis-cli -p $redis_port info persistence | grep '^aof_'
  tail -f $dir/nginx.log

Stop one replica to watch nginx route around it: kill <pid> (pids: ${pids[*]:1:${#replica_ports[@]}}).
Logs and configs: $dir. Ctrl-C stops everything.
EOF

# Until Ctrl-C, or until Redis, nginx or the last replica exits. A replica that exits is
# reported and left out: nginx routes around it.
declare -A reported=()
while :; do
  sleep 1
  replicas_alive=0
  for i in "${!pids[@]}"; do
    name="${names[$i]}"
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      [[ "$name" == replica-* ]] && replicas_alive=$((replicas_alive + 1))
    elif [[ "$name" == replica-* ]]; then
      if [ -z "${reported[$name]:-}" ]; then
        reported[$name]=1
        echo "local-cluster.sh: $name exited (see $dir/$name.log); nginx routes around it" >&2
      fi
    else
      check_alive
    fi
  done
  [ "$replicas_alive" -gt 0 ] || die "every replica has exited (logs in $dir)"
done

#!/usr/bin/env bash
# Two ringlb binaries (or one binary on two engines) side by side on one workload, in
# alternating runs, pinned as bench/run.sh pins: what a change to the data path costs or saves
# per request or per connection, where single runs on a busy virtual machine swing by 20 %.
#
#   bench/ab.sh BIN_A BIN_B [ROUNDS] [WORKLOAD] [ENGINE_A] [ENGINE_B]
#
# WORKLOAD: new (wrk -c50, Connection: close), ka1, ka50, ka500 (keep-alive, wrk -cN); default new.
# ENGINE_*: uring (default) or epoll. Each round runs A then B for AB_SECONDS (default 4) seconds.
# Prints per run: requests (or connections) per second, the forwarder's CPU time per unit in µs
# (user + system from /proc/PID/stat) and how busy CPU 0 (wrk and the nginx backend) was; then
# the medians. Needs wrk and nginx (./bench/run.sh installs them).
set -euo pipefail
export LC_ALL=C

bin_a=${1:?usage: bench/ab.sh BIN_A BIN_B [ROUNDS] [WORKLOAD] [ENGINE_A] [ENGINE_B]}
bin_b=${2:?usage: bench/ab.sh BIN_A BIN_B [ROUNDS] [WORKLOAD] [ENGINE_A] [ENGINE_B]}
rounds=${3:-5}
workload=${4:-new}
engine_a=${5:-uring}
engine_b=${6:-$engine_a}
seconds=${AB_SECONDS:-4}
backend_port=${AB_BACKEND_PORT:-18180}
port_a=${AB_PORT_A:-18181}
port_b=${AB_PORT_B:-18182}

case $workload in
    new) wrk_args=(-c50 -H "Connection: close") ;;
    ka1) wrk_args=(-c1) ;;
    ka50) wrk_args=(-c50) ;;
    ka500) wrk_args=(-c500) ;;
    *) echo "ab: unknown workload $workload (new, ka1, ka50, ka500)" >&2; exit 2 ;;
esac

ulimit -n 20000 2>/dev/null || true
dir=$(mktemp -d /tmp/ringlb-ab.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

mkdir -p "$dir/www" "$dir/tmp"
printf 'ringlb bench: this response body is exactly sixty-four bytes!!\n' >"$dir/www/64b"
cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 20000; }
http {
    access_log off;
    default_type application/octet-stream;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy; fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
    server { listen 127.0.0.1:$backend_port backlog=4096; root $dir/www; }
}
EOF
ringlb_config() {  # ENGINE PORT: the configuration bench/run.sh gives its ringlb rows
    cat <<EOF
[global]
engine = "$1"
threads = 1
max_sessions = 100000
max_sessions_per_ip = 0
buffer_size = "64k"
[[rule]]
id = "http"
listen = ["127.0.0.1:$2"]
timeout = "300s"
connect_timeout = "3s"
servers = ["127.0.0.1:$backend_port"]
EOF
}
ringlb_config "$engine_a" "$port_a" >"$dir/a.toml"
ringlb_config "$engine_b" "$port_b" >"$dir/b.toml"

taskset -c 0 nginx -p "$dir/" -c "$dir/nginx.conf" -e stderr 2>"$dir/nginx.log" &
pids+=($!)
taskset -c 1 "$bin_a" -c "$dir/a.toml" 2>"$dir/a.log" &
pid_a=$!
pids+=("$pid_a")
taskset -c 1 "$bin_b" -c "$dir/b.toml" 2>"$dir/b.log" &
pid_b=$!
pids+=("$pid_b")
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu0_busy_idle() { awk '$1 == "cpu0" {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }

results="$dir/results"
for round in $(seq 1 "$rounds"); do
    for side in A B; do
        if [[ $side == A ]]; then pid=$pid_a port=$port_a; else pid=$pid_b port=$port_b; fi
        ticks_before=$(cpu_ticks "$pid")
        read -r busy_before idle_before < <(cpu0_busy_idle)
        out=$(taskset -c 0 wrk -t1 "${wrk_args[@]}" -d"${seconds}s" "http://127.0.0.1:$port/64b" 2>&1)
        ticks_after=$(cpu_ticks "$pid")
        read -r busy_after idle_after < <(cpu0_busy_idle)
        units=$(awk '/requests in/ {print $1}' <<<"$out")
        rate=$(awk '/Requests\/sec/ {print int($2)}' <<<"$out")
        tick_us=$((1000000 / $(getconf CLK_TCK)))
        awk -v side="$side" -v round="$round" -v rate="$rate" -v units="$units" -v ticks=$((ticks_after - ticks_before)) \
            -v tick_us="$tick_us" -v busy=$((busy_after - busy_before)) -v idle=$((idle_after - idle_before)) \
            'BEGIN { printf "round %d %s: %d/s, forwarder %.1f us per unit, cpu0 %d%% busy\n", round, side, rate,
                     ticks * tick_us / units, 100 * busy / (busy + idle) }' | tee -a "$results"
    done
done
for side in A B; do
    awk -v side="$side" 'BEGIN { n = 0 } $3 == side":" { rate[n] = $4 + 0; cpu[n] = $6 + 0; n++ }
        function median(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                                           return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }
        END { printf "median %s: %d/s, %.1f us per unit (%d runs)\n", side, median(rate, n), median(cpu, n), n }' "$results"
done

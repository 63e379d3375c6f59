#!/usr/bin/env python3
"""ringlb benchmark orchestrator. Started by bench/run.sh, which installs the tools, builds ringlb,
raises the file limit and sets the environment; see bench/README.md for what is measured.

Every row (direct, ringlb-uring, ringlb-epoll and their zero-copy variants, haproxy,
haproxy-splice, nginx) runs the same workloads between the same clients and the same backends. The
forwarders are pinned to one CPU, clients and backends to the other; all forwarders run side by
side on their own ports and each cell is measured on every row in turn. Progress goes to standard error; the report (header and one
Markdown table per workload) goes to standard output and to BENCH_OUT.
"""
import contextlib
import datetime
import http.client
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import shutil
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable

# A row's place in ALL_ROWS fixes its ports (rows added later come last, so the others keep theirs).
# ringlb-ENGINE keeps the rules' default zero_copy; -splice sets zero_copy = "splice" on every
# rule, -copy "off", -auto "auto".
ALL_ROWS = ["direct", "ringlb-uring", "ringlb-epoll", "haproxy", "haproxy-splice", "nginx",
            "ringlb-uring-splice", "ringlb-epoll-splice", "ringlb-uring-copy", "ringlb-uring-auto",
            "ringlb-uring-busy", "ringlb-epoll-busy", "haproxy-busy"]
DEFAULT_ROWS = ["direct", "ringlb-uring", "ringlb-uring-copy", "ringlb-epoll", "haproxy", "haproxy-splice",
                "nginx"]
ALL_WORKLOADS = ["idle", "integrity", "bulk", "capped", "keepalive", "newconn"]
RINGLB_ZERO_COPY = {"splice": "splice", "copy": "off", "auto": "auto"}  # row suffix -> the rules' zero_copy
# "-busy" rows: polling without sleeping while sessions are busy, ringlb for BENCH_BUSY_POLL_US
# after its last completion ([global] busy_poll_us), HAProxy always (its global `busy-polling`).
BASELINE = "haproxy"
HOST = "127.0.0.1"
BACKEND_PORTS = {"iperf": 19100, "http": 19101, "echo": 19102, "integrity": 19103}
FRONT_BASE = 19200  # row i listens on FRONT_BASE + 10 * i + {0, 1, 2, 3}; ringlb's metrics on + 4
SERVICES = ["iperf", "http", "echo", "integrity"]


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def env_list(name, default):
    value = os.environ.get(name, "")
    return [v.strip() for v in value.split(",") if v.strip()] if value.strip() else list(default)


class Settings:
    def __init__(self):
        self.seconds = env_int("BENCH_SECONDS", 5)
        self.runs = env_int("BENCH_RUNS", 3)          # keep-alive c=50 and new connections
        self.runs_all = env_int("BENCH_RUNS_ALL", 1)  # every other cell
        self.rows = env_list("BENCH_ROWS", DEFAULT_ROWS)
        self.workloads = env_list("BENCH_WORKLOADS", ALL_WORKLOADS)
        self.idle_conns = env_int("BENCH_IDLE_CONNS", 9800)
        self.integrity_mib = env_int("BENCH_INTEGRITY_MIB", 256)
        self.ka_conns = [int(c) for c in env_list("BENCH_KA_CONNS", ["1", "50", "500"])]
        self.nc_conns = env_int("BENCH_NEWCONN_CONNS", 50)
        self.fwd_cpu = os.environ.get("BENCH_FWD_CPU", "1")
        self.load_cpu = os.environ.get("BENCH_LOAD_CPU", "0")
        self.pin = os.environ.get("BENCH_PIN", "1") != "0"
        self.budget = env_int("BENCH_MAX_SECONDS", 750)
        self.cap_percent = env_int("BENCH_CAP_PERCENT", 30)  # the capped workload's CPU budget
        self.busy_poll_us = env_int("BENCH_BUSY_POLL_US", 50)  # busy_poll_us of the ringlb "-busy" rows
        self.cap_cgroup = os.environ.get("BENCH_CAP_CGROUP", "auto")  # auto (v1, then v2), v1 or v2
        self.ringlb = os.environ.get("RINGLB_BIN", os.path.join(REPO, "build", "ringlb"))
        self.out = os.environ.get("BENCH_OUT", os.path.join(HERE, "results", "latest.md"))
        self.logdir = os.environ.get("BENCH_LOGDIR", os.path.join(HERE, "results", "logs"))
        self.pidfile = os.environ.get("BENCH_PIDFILE", "")
        self.drain_wait = env_int("BENCH_DRAIN_WAIT", 20)
        self.quiet_budget = env_int("BENCH_QUIET_BUDGET", 90)
        self.quiet_pct = env_int("BENCH_QUIET_PCT", 25)
        self.command = os.environ.get("BENCH_COMMAND", "./bench/run.sh")
        for row in self.rows:
            if row not in ALL_ROWS:
                sys.exit(f"bench: unknown row {row!r} in BENCH_ROWS (known: {', '.join(ALL_ROWS)})")
        for workload in self.workloads:
            if workload not in ALL_WORKLOADS:
                sys.exit(f"bench: unknown workload {workload!r} in BENCH_WORKLOADS (known: {', '.join(ALL_WORKLOADS)})")
        if not 1 <= self.cap_percent <= 100:
            sys.exit(f"bench: BENCH_CAP_PERCENT={self.cap_percent} is not a percentage of one CPU from 1 to 100")
        if self.cap_cgroup not in ("auto", "v1", "v2"):
            sys.exit(f"bench: BENCH_CAP_CGROUP={self.cap_cgroup!r} is none of auto, v1, v2")

    def runs_for(self, cell):
        if cell == "idle":
            return 1  # only a fresh forwarder shows what idle connections cost
        return max(self.runs, self.runs_all) if cell in ("ka50", "ka500", "nc") else self.runs_all


S = Settings()
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
if NOFILE == resource.RLIM_INFINITY:
    NOFILE = 1048576
# HAProxy needs about 2 descriptors per connection plus a few; it cannot go past this process's
# limit (a container may refuse to raise it), so its maxconn is the most that fits, 40000 at most.
HAPROXY_MAXCONN = min(40000, (NOFILE - 64) // 2)
# With splicing HAProxy also reserves 2 descriptors per pipe, maxpipes = maxconn / 4 by default;
# under a low limit the pipes are capped so that maxconn still covers the idle workload.
HAPROXY_MAXPIPES = None if NOFILE >= 2 * 40000 + 2 * 10000 + 64 else 32
HAPROXY_SPLICE_MAXCONN = HAPROXY_MAXCONN if HAPROXY_MAXPIPES is None else (NOFILE - 64 - 2 * HAPROXY_MAXPIPES) // 2
NGINX_CONNECTIONS = max(20000, min(40000, NOFILE))  # worker_connections counts both sides
T0 = time.monotonic()


def log(*parts):
    print(f"[bench {time.monotonic() - T0:6.1f}s]", *parts, file=sys.stderr, flush=True)


class CellError(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# Processes: each runs in its own session (so one signal reaches its whole tree), its pid goes to
# BENCH_PIDFILE for run.sh's trap, and stop_all() ends whatever is still running.

class Procs:
    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.running = []

    def start(self, name, argv, cpu=None, log_path=None, stdin=subprocess.DEVNULL, stdout=None):
        command = list(argv)
        if cpu is not None and S.pin:
            command = ["taskset", "-c", str(cpu)] + command
        log_file = open(log_path, "ab") if log_path else subprocess.DEVNULL
        process = subprocess.Popen(command, stdin=stdin,
                                   stdout=stdout if stdout is not None else log_file,
                                   stderr=log_file, start_new_session=True)
        if log_path:
            log_file.close()
        process.bench_name = name
        self.running.append(process)
        if self.pidfile:
            with open(self.pidfile, "a") as f:
                f.write(f"{process.pid}\n")
        return process

    @staticmethod
    def descendants(pid):
        found = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    for child in f.read().split():
                        found.append(int(child))
                        found.extend(Procs.descendants(int(child)))
        except OSError:
            pass
        return found

    def stop(self, process, grace=5.0):
        if process in self.running:
            self.running.remove(process)
        if process.poll() is not None:
            return process.returncode
        tree = self.descendants(process.pid)
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            for pid in [process.pid] + tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()
        for pid in tree:  # children that outlived their parent (not expected)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return process.returncode

    def stop_all(self):
        for process in list(reversed(self.running)):
            self.stop(process, grace=2.0)


PROCS = Procs(S.pidfile)


def listening_ports():
    ports = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def wait_listening(ports, process=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise CellError(f"exited with code {process.returncode} before listening")
        if set(ports) <= listening_ports():
            return
        time.sleep(0.05)
    raise CellError(f"not listening on {sorted(set(ports) - listening_ports())} after {timeout:.0f} s")


OPEN_STATES = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT: not yet closed by this end


def open_sockets(remote_ports, local_ports=()):
    """Sockets on this machine, not yet closed by their owner, connected to one of remote_ports
    or accepted on one of local_ports."""
    wanted = {f"{port:04X}" for port in remote_ports}
    wanted_local = {f"{port:04X}" for port in local_ports}
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split(None, 4)
                    if fields[3] in OPEN_STATES and (fields[2].rsplit(":", 1)[1] in wanted or
                                                     fields[1].rsplit(":", 1)[1] in wanted_local):
                        count += 1
        except OSError:
            pass
    return count


def wait_drained(remote_ports, timeout, local_ports=()):
    """Seconds until no such socket is open (None if some still are at timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if open_sockets(remote_ports, local_ports) == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def pss_kib(pid):
    total = 0
    for p in [pid] + Procs.descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def run(argv, timeout, cpu=None):
    command = list(argv)
    if cpu is not None and S.pin:
        command = ["taskset", "-c", str(cpu)] + command
    # Run in its own session too, so a timeout can end it and everything it started.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    PROCS.running.append(process)
    if PROCS.pidfile:
        with open(PROCS.pidfile, "a") as f:
            f.write(f"{process.pid}\n")
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        PROCS.stop(process, grace=1.0)
        raise CellError(f"{os.path.basename(argv[0])} did not finish within {timeout:.0f} s")
    # (On Ctrl-C it stays in PROCS.running, for stop_all.)
    PROCS.running.remove(process)
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# ----------------------------------------------------------------------------------------------
# CPU used by programs other than this benchmark while a row runs (other builds, tests...): the
# machine's busy time (user + nice + system, from /proc/stat) minus the CPU time of this process,
# of every process it started and reaped (os.times children) and of the backends still running.

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system = (int(x) for x in fields[1:4])
    return (user + nice + system) / CLK_TCK


def process_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def own_cpu_seconds():
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for process in list(PROCS.running):
        if process is not None and process.poll() is None:
            total += sum(process_cpu_seconds(p) for p in [process.pid] + Procs.descendants(process.pid))
    return total


def cpu_busy_seconds(cpu):
    """Busy time of one CPU (user + nice + system + irq + softirq, from /proc/stat)."""
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields[0] == f"cpu{cpu}":
                user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
                return (user + nice + system + irq + softirq) / CLK_TCK
    return 0.0


class LoadCpuBusy:
    """How busy the CPU of the load generator and backends was during a cell, in %: at 95 % or
    more, that CPU, not the forwarder, sets the cell's throughput. Only meaningful when pinned."""

    def __init__(self):
        self.wall = time.monotonic()
        self.busy = cpu_busy_seconds(S.load_cpu)

    def percent(self):
        wall = time.monotonic() - self.wall
        return 100.0 * (cpu_busy_seconds(S.load_cpu) - self.busy) / wall if wall > 0 else 0.0


class ForeignLoad:
    """CPU time used by other programs from now on: everything started by this benchmark, running
    (PROCS.running) or reaped (os.times children), is its own."""

    def __init__(self):
        self.wall = time.monotonic()
        self.busy = machine_busy_seconds()
        self.own = own_cpu_seconds()

    def percent(self):
        wall = time.monotonic() - self.wall
        foreign = (machine_busy_seconds() - self.busy) - (own_cpu_seconds() - self.own)
        return max(0.0, 100.0 * foreign / wall) if wall > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# Backends (shared by every row, pinned to the load CPU)

class Backends:
    def __init__(self, tmp):
        self.tmp = tmp
        self.http = None
        self.echo = None

    def start(self):
        prefix = os.path.join(self.tmp, "http-backend")
        for sub in ("www", "tmp", "logs"):
            os.makedirs(os.path.join(prefix, sub), exist_ok=True)
        with open(os.path.join(prefix, "www", "64b"), "wb") as f:
            f.write(b"ringlb bench: this response body is exactly sixty-four bytes!!\n")
        temp_paths = "\n".join(f"    {kind}_temp_path {prefix}/tmp/{kind};"
                               for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = f"""daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {NOFILE};
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections {NGINX_CONNECTIONS};
}}
http {{
    access_log off;
    default_type application/octet-stream;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    open_file_cache max=16 inactive=600s;
{temp_paths}
    server {{
        listen {HOST}:{BACKEND_PORTS['http']} backlog=4096;
        root {prefix}/www;
    }}
}}
"""
        with open(os.path.join(prefix, "nginx.conf"), "w") as f:
            f.write(conf)
        self.http = PROCS.start("nginx-http-backend",
                                ["nginx", "-p", prefix + "/", "-c", prefix + "/nginx.conf", "-e", "stderr"],
                                cpu=S.load_cpu, log_path=os.path.join(S.logdir, "backend-http-nginx.log"))
        self.echo = PROCS.start("echo-backend", [PY, os.path.join(HERE, "echo_server.py"), HOST,
                                                 str(BACKEND_PORTS["echo"])],
                                cpu=S.load_cpu, log_path=os.path.join(S.logdir, "backend-echo.log"))
        try:
            wait_listening([BACKEND_PORTS["http"]], self.http)
            wait_listening([BACKEND_PORTS["echo"]], self.echo)
        except CellError as error:
            raise CellError(f"backends: {error} (see {S.logdir}/backend-*.log)")

    def check(self):
        for process in (self.http, self.echo):
            if process is not None and process.poll() is not None:
                raise CellError(f"backend {process.bench_name} exited with code {process.returncode}")


# ----------------------------------------------------------------------------------------------
# Forwarders

def front_ports(row_index):
    base = FRONT_BASE + 10 * row_index
    return {service: base + i for i, service in enumerate(SERVICES)}


def metrics_port(row_index):
    return FRONT_BASE + 10 * row_index + len(SERVICES)


def ringlb_variant(row):
    """(engine, zero_copy) of a ringlb row; zero_copy None keeps the rules' default."""
    parts = row.split("-")
    return parts[1], (RINGLB_ZERO_COPY.get(parts[2]) if len(parts) > 2 else None)


def ringlb_config(engine, fronts, zero_copy=None, metrics=None, busy_poll_us=0):
    zero_copy_line = f'zero_copy = "{zero_copy}"\n' if zero_copy else ""
    busy_line = f"busy_poll_us = {busy_poll_us}\n" if busy_poll_us else ""
    rules = "".join(f"""
[[rule]]
id = "{service}"
mode = "rr"
listen = ["{HOST}:{fronts[service]}"]
timeout = "300s"
connect_timeout = "3s"
servers = ["{HOST}:{BACKEND_PORTS[service]}"]
{zero_copy_line}""" for service in SERVICES)
    metrics_table = f"""
[metrics]
listen = "{HOST}:{metrics}"
""" if metrics else ""
    return f"""[global]
engine = "{engine}"
threads = 1
max_sessions = 100000
max_sessions_per_ip = 0
buffer_size = "64k"
log_level = "info"
{busy_line}{metrics_table}{rules}"""


def haproxy_config(fronts, splice, busy=False):
    maxconn = HAPROXY_SPLICE_MAXCONN if splice else HAPROXY_MAXCONN
    maxpipes = f"    maxpipes {HAPROXY_MAXPIPES}\n" if splice and HAPROXY_MAXPIPES else ""
    listens = "".join(f"""
listen {service}
    bind {HOST}:{fronts[service]}
    server {service}1 {HOST}:{BACKEND_PORTS[service]}
""" for service in SERVICES)
    return f"""global
    nbthread 1
    maxconn {maxconn}
{maxpipes}{"    busy-polling" + chr(10) if busy else ""}
defaults
    mode tcp
    timeout connect 3s
    timeout client 300s
    timeout server 300s
    maxconn {maxconn}
{"    option splice-auto" + chr(10) if splice else ""}{listens}"""


def nginx_stream_config(prefix, fronts):
    module = "/usr/lib/nginx/modules/ngx_stream_module.so"
    load = f"load_module {module};\n" if os.path.exists(module) else ""
    servers = "".join(f"""
    server {{
        listen {HOST}:{fronts[service]} backlog=4096;
        proxy_pass {HOST}:{BACKEND_PORTS[service]};
    }}
""" for service in SERVICES)
    return f"""{load}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {NOFILE};
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections {NGINX_CONNECTIONS};
}}
stream {{
    proxy_connect_timeout 3s;
    proxy_timeout 300s;
{servers}}}
"""


# Rows whose forwarder keeps its CPU busy even without traffic (HAProxy's busy-polling): run only
# for their own cells, or they would take the forwarders' CPU from every other row.
SPINS_WHEN_IDLE = {"haproxy-busy"}


def start_forwarder(row, forwarder):
    try:
        forwarder.start()
        log(f"{row}: started")
        DEAD.pop(row, None)
    except CellError as error:
        DEAD[row] = f"did not start: {error}"
        log(f"{row}: {DEAD[row]}")


class Forwarder:
    def __init__(self, row, row_index, tmp):
        self.row = row
        self.fronts = front_ports(row_index)
        # ringlb rows export their counters (bytes spliced, pipes taken) on a metrics port.
        self.metrics_port = metrics_port(row_index) if row.startswith("ringlb") else None
        self.dir = os.path.join(tmp, row)
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(S.logdir, f"{row}.log")
        self.process = None

    def start(self):
        readies = self.log_text().count("ready")
        busy = set(self.ports()) & listening_ports()
        if busy:
            raise CellError(f"ports {sorted(busy)} already in use by another program")
        if self.row.startswith("ringlb"):
            engine, zero_copy = ringlb_variant(self.row)
            conf = os.path.join(self.dir, "ringlb.toml")
            with open(conf, "w") as f:
                f.write(ringlb_config(engine, self.fronts, zero_copy, self.metrics_port,
                                      S.busy_poll_us if self.row.endswith("-busy") else 0))
            if not os.access(S.ringlb, os.X_OK):
                raise CellError(f"{S.ringlb} not found or not executable")
            argv = [S.ringlb, "-c", conf, "--engine", engine]
        elif self.row.startswith("haproxy"):
            conf = os.path.join(self.dir, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write(haproxy_config(self.fronts, splice=self.row.endswith("splice"), busy=self.row.endswith("-busy")))
            argv = ["haproxy", "-f", conf, "-db"]
        elif self.row == "nginx":
            conf = os.path.join(self.dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(nginx_stream_config(self.dir, self.fronts))
            argv = ["nginx", "-p", self.dir + "/", "-c", conf, "-e", "stderr"]
        else:
            raise AssertionError(self.row)
        self.process = PROCS.start(self.row, argv, cpu=S.fwd_cpu, log_path=self.log_path)
        try:
            wait_listening(self.ports(), self.process)
            if self.row.startswith("ringlb"):
                deadline = time.monotonic() + 5
                while self.log_text().count("ready") <= readies and time.monotonic() < deadline:
                    time.sleep(0.05)
        except CellError as error:
            self.stop()
            raise CellError(f"{error}; log: {self.start_failure()}")
        time.sleep(0.3)

    def ports(self):
        return list(self.fronts.values()) + ([self.metrics_port] if self.metrics_port else [])

    def metrics(self):
        """ringlb's counters now (None for other forwarders); a failed scrape raises CellError."""
        return scrape_metrics(self.metrics_port) if self.metrics_port else None

    def check(self):
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise CellError(f"forwarder exited (code {code}); log: {self.log_tail(1)}")

    def stop(self):
        if self.process is not None:
            PROCS.stop(self.process)

    def cpu_seconds(self):
        """CPU time of the forwarder's processes (all threads, and nginx's workers) so far."""
        pid = self.process.pid
        return sum(process_cpu_seconds(p) for p in [pid] + Procs.descendants(pid))

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start_failure(self):
        """Why it did not start: ringlb lists the problems of a rejected configuration first and
        sums them up last; the first one says more than the sum."""
        tail = self.log_tail(1)
        if "configuration rejected" in tail:
            lines = [line for line in self.log_text().splitlines() if line.strip()]
            first = re.sub(r"^\S+\.toml:", "line ", lines[0]) if lines else ""
            return f"{tail}: {first}"
        return tail

    def log_tail(self, lines=3):
        text = [line for line in self.log_text().splitlines() if line.strip()]
        return " | ".join(text[-lines:]) if text else "(empty)"


# ----------------------------------------------------------------------------------------------
# ringlb's metrics: what share of a cell's bytes splice moved, how many pipes the cell took

METRIC_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
METRIC_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape_metrics(port):
    """ringlb's Prometheus text as {(name, frozenset of (label, value)): value}."""
    connection = http.client.HTTPConnection(HOST, port, timeout=3)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        status = response.status
    except (OSError, http.client.HTTPException) as error:
        raise CellError(f"metrics on {HOST}:{port}: {error}")
    finally:
        connection.close()
    if status != 200:
        raise CellError(f"metrics on {HOST}:{port}: HTTP {status}")
    samples = {}
    for line in body.splitlines():
        match = METRIC_LINE.match(line)
        if not match or line.startswith("#"):
            continue
        try:
            samples[(match.group(1), frozenset(METRIC_LABEL.findall(match.group(2) or "")))] = float(match.group(3))
        except ValueError:
            continue
    return samples


def metric_sum(samples, name, **labels):
    """Sum of the series of one metric whose labels include these (None if it has no series)."""
    wanted = set(labels.items())
    values = [value for (metric, series), value in samples.items() if metric == name and wanted <= series]
    return sum(values) if values else None


# The rule whose bytes a cell moves (the rules are named after the backend services).
CELL_RULE = {"idle": "echo", "integrity": "integrity", "nc": "http"}


def cell_rule(cell):
    if cell.startswith(("bulk", "cap")):
        return "iperf"
    return "http" if cell.startswith("ka") else CELL_RULE[cell]


def zero_copy_figures(before, after, cell):
    """What the counters of ringlb's metrics moved by during a cell: bytes of the cell's rule
    (both directions), of which by splice, pipes taken and splice fallbacks (all workers). None
    where the counter is missing (a ringlb without splice) or a scrape failed."""
    def delta(name, **labels):
        if before is None or after is None:
            return None
        new, old = metric_sum(after, name, **labels), metric_sum(before, name, **labels)
        return None if new is None or old is None else new - old
    rule = cell_rule(cell)
    moved = delta("ringlb_rule_bytes_total", rule=rule)
    spliced = delta("ringlb_spliced_bytes_total", rule=rule)
    causes = {}
    for cause in ("pool_empty", "refused", "shrunk", "resize_failed"):
        count = delta("ringlb_splice_fallbacks_total", cause=cause)
        if count:
            causes[cause] = int(count)
    return {"rule_bytes": moved, "spliced_bytes": spliced,
            "spliced_pct": (100.0 * spliced / moved if moved else None) if spliced is not None else None,
            "pipes_taken": delta("ringlb_pipes_taken_total"),
            "splice_fallbacks": delta("ringlb_splice_fallbacks_total"),
            "splice_fallback_causes": ", ".join(f"{k} {v}" for k, v in causes.items())}


# ----------------------------------------------------------------------------------------------
# The capped workload: a forwarder's CPU limited to BENCH_CAP_PERCENT % of one CPU for a cell

class CpuCap:
    """A cgroup of its own for one forwarder's process tree during one cell, with a CFS quota of
    BENCH_CAP_PERCENT % of one CPU: the cgroup v1 cpu controller (every thread's id written to
    `tasks`), else cgroup v2 with its cpu controller (each process written to `cgroup.procs`).
    On leaving, every thread goes back to the cgroup it came from and the cgroup is removed."""
    V1 = "/sys/fs/cgroup/cpu"
    V2 = "/sys/fs/cgroup/unified"
    PERIOD_US = 100000
    USED = []  # "v1" or "v2": how caps were made in this run (for the report)

    def __init__(self, row, pid):
        self.pid = pid
        self.name = f"ringlb-bench-{row}-{pid}"
        self.kind = None
        self.path = None
        self.origin = {}  # tid (v1) or pid (v2) -> the file to write it back to
        self.stat_before = {}
        self.problems = []

    def __enter__(self):
        errors = []
        kinds = ["v1", "v2"] if S.cap_cgroup == "auto" else [S.cap_cgroup]
        for kind in kinds:
            try:
                (self.make_v1 if kind == "v1" else self.make_v2)()
                self.kind = kind
                break
            except OSError as error:
                errors.append(f"cgroup {kind}: {error}")
                self.remove()
        if self.kind is None:
            raise CellError("no cgroup for the CPU cap could be made (" + "; ".join(errors) + ")")
        if self.kind not in CpuCap.USED:
            CpuCap.USED.append(self.kind)
        self.stat_before = self.cpu_stat()
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def tree(self):
        return [self.pid] + Procs.descendants(self.pid)

    @staticmethod
    def write(path, text):
        with open(path, "w") as f:
            f.write(text)

    @staticmethod
    def own_cgroup(pid, controller):
        """The path of pid's cgroup in the hierarchy of this controller (v1) or in cgroup v2 ("")."""
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (controller == "" and controllers == "") or controller in controllers.split(","):
                    return path
        return "/"

    def make_v1(self):
        if not os.path.exists(os.path.join(self.V1, "cpu.cfs_quota_us")):
            raise OSError(f"{self.V1} is not a cgroup v1 cpu controller")
        self.path = os.path.join(self.V1, self.name)
        os.mkdir(self.path)
        self.write(os.path.join(self.path, "cpu.cfs_period_us"), str(self.PERIOD_US))
        self.write(os.path.join(self.path, "cpu.cfs_quota_us"), str(self.PERIOD_US * S.cap_percent // 100))
        # Threads may start meanwhile (nginx's worker, a resolver thread): move until none is left.
        for _ in range(5):
            moved = 0
            for pid in self.tree():
                try:
                    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
                except OSError:
                    continue
                for tid in tids:
                    if tid in self.origin:
                        continue
                    try:
                        home = self.own_cgroup(tid, "cpu")
                        self.write(os.path.join(self.path, "tasks"), str(tid))
                    except ProcessLookupError:
                        continue  # ended meanwhile
                    except FileNotFoundError:
                        continue
                    self.origin[tid] = os.path.join(self.V1 + home.rstrip("/"), "tasks")
                    moved += 1
            if not moved:
                break
        if self.pid not in self.origin:
            raise OSError(f"could not move pid {self.pid} into {self.path}")

    def make_v2(self):
        with open(os.path.join(self.V2, "cgroup.controllers")) as f:
            if "cpu" not in f.read().split():
                raise OSError(f"the cpu controller is not available in {self.V2} (it is bound to cgroup v1)")
        with open(os.path.join(self.V2, "cgroup.subtree_control")) as f:
            if "cpu" not in f.read().split():
                self.write(os.path.join(self.V2, "cgroup.subtree_control"), "+cpu")
        self.path = os.path.join(self.V2, self.name)
        os.mkdir(self.path)
        self.write(os.path.join(self.path, "cpu.max"), f"{self.PERIOD_US * S.cap_percent // 100} {self.PERIOD_US}")
        for pid in self.tree():
            try:
                home = self.own_cgroup(pid, "")
                self.write(os.path.join(self.path, "cgroup.procs"), str(pid))
            except (ProcessLookupError, FileNotFoundError):
                continue
            self.origin[pid] = os.path.join(self.V2 + home.rstrip("/"), "cgroup.procs")
        if self.pid not in self.origin:
            raise OSError(f"could not move pid {self.pid} into {self.path}")

    def members(self):
        name = "tasks" if self.path and self.path.startswith(self.V1 + "/") else "cgroup.procs"
        try:
            with open(os.path.join(self.path, name)) as f:
                return [int(x) for x in f.read().split()]
        except (OSError, TypeError):
            return []

    def remove(self):
        if self.path is None or not os.path.isdir(self.path):
            self.path = None
            return
        fallback = os.path.join(self.V1 if self.path.startswith(self.V1 + "/") else self.V2,
                                "tasks" if self.path.startswith(self.V1 + "/") else "cgroup.procs")
        for _ in range(3):
            for member in self.members():
                for target in (self.origin.get(member, fallback), fallback):
                    try:
                        self.write(target, str(member))
                        break
                    except ProcessLookupError:
                        break
                    except OSError:
                        continue
            try:
                os.rmdir(self.path)
                self.path = None
                return
            except OSError as error:
                last = error
                time.sleep(0.1)
        self.problems.append(f"cgroup {self.path} could not be removed: {last}")
        log(self.problems[-1])

    def cpu_stat(self):
        stat = {}
        try:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    stat[key] = int(value)
        except (OSError, ValueError):
            pass
        return stat

    def figures(self):
        """Of the CFS periods during the cell, the share in which the cap stopped the forwarder."""
        after = self.cpu_stat()
        periods = after.get("nr_periods", 0) - self.stat_before.get("nr_periods", 0)
        throttled = after.get("nr_throttled", 0) - self.stat_before.get("nr_throttled", 0)
        return {"cap_throttled_pct": 100.0 * throttled / periods if periods > 0 else None}


# ----------------------------------------------------------------------------------------------
# Workloads. Each returns a dict of numbers or raises CellError.

def bulk(target_port, streams):
    server = PROCS.start("iperf3-server", ["iperf3", "-s", "-1", "-B", HOST, "-p", str(BACKEND_PORTS["iperf"])],
                         cpu=S.load_cpu, log_path=os.path.join(S.logdir, "backend-iperf3.log"))
    try:
        wait_listening([BACKEND_PORTS["iperf"]], server, timeout=5)
        code, out, err = run(["iperf3", "-c", HOST, "-p", str(target_port), "-t", str(S.seconds),
                              "-P", str(streams), "-J", "--connect-timeout", "3000"],
                             timeout=S.seconds + 30, cpu=S.load_cpu)
    finally:
        PROCS.stop(server, grace=2.0)
    try:
        result = json.loads(out)
    except ValueError:
        raise CellError(f"iperf3 exit {code}: {(err or out).strip()[:200]}")
    if "error" in result:
        raise CellError(f"iperf3: {result['error']}")
    received = result["end"]["sum_received"]
    return {"gbps": received["bits_per_second"] / 1e9, "bytes": received["bytes"]}


WRK_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk_time(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise CellError(f"wrk: cannot read latency {text!r}")
    return float(match.group(1)) * WRK_TIME_UNITS[match.group(2)]


def wrk(target_port, conns, close):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{S.seconds}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{HOST}:{target_port}/64b")
    code, out, err = run(argv, timeout=S.seconds + 30, cpu=S.load_cpu)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s*(\d+) requests in", out, re.M)
    if code != 0 or not rps or not total:
        raise CellError(f"wrk exit {code}: {(err or out).strip()[-200:]}")
    if int(total.group(1)) == 0:
        raise CellError("wrk completed no request")
    result = {"rps": float(rps.group(1)), "requests": int(total.group(1))}
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = parse_wrk_time(match.group(1)) if match else None
    problems = []
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        names = ("connect", "read", "write", "timeout")
        counts = [int(x) for x in socket_errors.groups()]
        problems += [f"{n} {name} errors" for name, n in zip(names, counts) if n]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        problems.append(f"{non2xx.group(1)} non-2xx responses")
    result["problems"] = problems
    return result


def idle(forwarder, target_port):
    time.sleep(0.5)
    before = pss_kib(forwarder.process.pid)
    client = PROCS.start("idle-clients", [PY, os.path.join(HERE, "idle_clients.py"), HOST, str(target_port),
                                          str(S.idle_conns), "--hold", "120"],
                         cpu=S.load_cpu, log_path=os.path.join(S.logdir, "idle-clients.log"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = client.stdout.readline()
        if not line:
            raise CellError(f"idle client exited with code {client.wait()}")
        opened = json.loads(line)
        time.sleep(1.0)
        forwarder.check()
        after = pss_kib(forwarder.process.pid)
        client.stdin.write(b"close\n")
        client.stdin.flush()
        line = client.stdout.readline()
        reset_at = time.monotonic()
        dropped = json.loads(line)["dropped"] if line else None
        client.wait(30)
    finally:
        PROCS.stop(client, grace=2.0)
    # The clients reset every connection at once: how long until the forwarder has closed every
    # connection to the backend? (The next cells must not start while it is still busy with that.)
    drained = wait_drained([BACKEND_PORTS["echo"]], S.drain_wait)
    teardown = time.monotonic() - reset_at if drained is not None else None
    left = open_sockets([BACKEND_PORTS["echo"]]) if drained is None else 0
    ok = opened["ok"]
    result = {"before": before, "after": after, "ok": ok, "failed": opened["failed"],
              "errors": opened["errors"], "dropped": dropped, "open_seconds": opened["seconds"],
              "per_conn": (after - before) / ok if ok else None, "teardown": teardown}
    problems = []
    if drained is None:
        problems.append(f"{left} of {ok} sessions still open {S.drain_wait} s after the clients reset them")
    if opened["failed"]:
        problems.append(f"{opened['failed']} of {S.idle_conns} connections failed: " +
                        ", ".join(f"{k} x{v}" for k, v in opened["errors"].items()))
    if dropped:
        problems.append(f"{dropped} established connections closed by the far side while idle")
    result["problems"] = problems
    if not ok:
        raise CellError("; ".join(problems) or "no connection established")
    return result


def integrity(target_port):
    code, out, err = run([PY, os.path.join(HERE, "integrity.py"), "--listen", f"{HOST}:{BACKEND_PORTS['integrity']}",
                          "--connect", f"{HOST}:{target_port}", "--mib", str(S.integrity_mib),
                          "--timeout", "30"],
                         timeout=180, cpu=S.load_cpu)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise CellError(f"integrity.py exit {code}: {err.strip()[-200:]}")
    problems = []
    for key in ("error", "c2b_send_error", "c2b_recv_error", "b2c_send_error", "b2c_recv_error"):
        if key in result:
            problems.append(f"{key}: {result[key]}")
    for key in ("c2b", "b2c"):
        if result[key] != "PASS":
            problems.append(f"{key}: sent {result.get(key + '_sent')} B, received {result.get(key + '_received')} B")
    result["problems"] = problems
    return result


# ----------------------------------------------------------------------------------------------
# Running the rows

CELLS = {
    "idle": ["idle"],
    "integrity": ["integrity"],
    "bulk": ["bulk1", "bulk4"],
    "capped": ["cap1", "cap4"],
    "keepalive": [f"ka{c}" for c in S.ka_conns],
    "newconn": ["nc"],
}


def measure(cell, forwarder, fronts):
    if cell == "idle":
        if forwarder is None:
            raise CellError("no forwarder process to measure")
        return idle(forwarder, fronts["echo"])
    if cell == "integrity":
        return integrity(fronts["integrity"])
    if cell.startswith("bulk"):
        return bulk(fronts["iperf"], int(cell[4:]))
    if cell.startswith("cap"):
        return bulk(fronts["iperf"], int(cell[3:]))
    if cell.startswith("ka"):
        return wrk(fronts["http"], int(cell[2:]), close=False)
    if cell == "nc":
        return wrk(fronts["http"], S.nc_conns, close=True)
    raise AssertionError(cell)


def combine(samples, failures):
    """Median of each numeric field over the successful runs; problems and failures are pooled.
    Runs during which other programs kept more than BENCH_QUIET_PCT % of a CPU busy are left out
    when at least one run was undisturbed (each such exclusion is noted)."""
    problems = set()
    calm = [s for s in samples if s.get("foreign_pct", 0) <= S.quiet_pct]
    if calm and len(calm) < len(samples):
        busiest = max(s.get("foreign_pct", 0) for s in samples)
        problems.add(f"{len(samples) - len(calm)} of {len(samples)} runs left out: other programs used up to "
                     f"{busiest:.0f}% of a CPU meanwhile")
    elif not calm and samples and any("foreign_pct" in s for s in samples):
        problems.add(f"other programs used {min(s.get('foreign_pct', 0) for s in samples):.0f}% of a CPU or more "
                     f"meanwhile")
    all_samples, samples = samples, (calm or samples)
    result = {}
    for key in samples[0]:
        values = [s[key] for s in samples if isinstance(s.get(key), (int, float)) and not isinstance(s.get(key), bool)]
        if values and len(values) == len(samples):
            result[key] = statistics.median(values)
        else:
            result[key] = samples[-1].get(key)
    problems |= {p for s in samples for p in s.get("problems", [])}
    for reason in failures:
        problems.add(f"{len(failures)} of {len(all_samples) + len(failures)} runs failed: {reason}")
    result["problems"] = sorted(problems)
    result["runs"] = len(samples)
    result["samples"] = all_samples
    return result


class RowState:
    def __init__(self):
        self.samples = {}     # cell -> [sample, ...]
        self.failures = {}    # cell -> [reason, ...]
        self.self_exits = []  # exit codes of a forwarder that ended by itself
        self.notes = []       # sessions left open, ...
        self.stuck = 0        # forwarder sockets still open after the last cell


QUIET_SPENT = [0.0]


def wait_quiet(backends):
    """Before a cell: while other programs keep more than BENCH_QUIET_PCT % of one CPU busy, wait
    (at most 10 s per cell and BENCH_QUIET_BUDGET s in the whole run) for them to calm down."""
    started = time.monotonic()
    while QUIET_SPENT[0] < S.quiet_budget and time.monotonic() - started < 10.0:
        load = ForeignLoad()
        time.sleep(0.5)
        busy = load.percent()
        QUIET_SPENT[0] += time.monotonic() - load.wall
        if busy < S.quiet_pct:
            break
    waited = time.monotonic() - started
    if waited > 0.6:
        log(f"waited {waited:.1f} s for other programs to calm down (total {QUIET_SPENT[0]:.0f} s of "
            f"BENCH_QUIET_BUDGET={S.quiet_budget})")


def measure_cell(row, cell, round_index, forwarder, fronts, backends, state):
    """Measures one cell of one row once, recording the sample or the reason it failed."""
    if cell == "idle" and forwarder is None:
        state.failures.setdefault(cell, []).append("no forwarder process to measure")
        return
    if cell.startswith("cap") and forwarder is None:
        state.failures.setdefault(cell, []).append("no forwarder process to cap")
        return
    if row in DEAD:
        state.failures.setdefault(cell, []).append(DEAD[row])
        return
    if time.monotonic() - T0 > S.budget:
        state.failures.setdefault(cell, []).append(f"skipped: time budget BENCH_MAX_SECONDS={S.budget} used up")
        return
    try:
        backends.check()
        if forwarder is not None:
            forwarder.check()
        wait_quiet(backends)
        metrics_before, metrics_error = scrape_or_note(forwarder)
        cap = CpuCap(row, forwarder.process.pid) if cell.startswith("cap") else contextlib.nullcontext()
        with cap:
            cell_load = ForeignLoad()
            load_cpu = LoadCpuBusy()
            cpu_before = forwarder.cpu_seconds() if forwarder is not None else None
            started = time.monotonic()
            sample = measure(cell, forwarder, fronts)
            wall = time.monotonic() - started
            sample["foreign_pct"] = round(cell_load.percent())
            if S.pin:
                sample["load_busy_pct"] = min(100.0, load_cpu.percent())
            if cpu_before is not None:
                add_forwarder_cpu(sample, forwarder.cpu_seconds() - cpu_before, wall)
            if isinstance(cap, CpuCap):
                sample.update(cap.figures())
        if isinstance(cap, CpuCap):
            sample["problems"] = sample.get("problems", []) + cap.problems + capped_problems(sample)
        if forwarder is not None:
            forwarder.check()
        if forwarder is not None and forwarder.metrics_port:
            metrics_after, error = scrape_or_note(forwarder)
            sample.update(zero_copy_figures(metrics_before, metrics_after, cell))
            sample["problems"] = sample.get("problems", []) + [e for e in (metrics_error, error) if e] + \
                zero_copy_problems(row, cell, sample)
        state.samples.setdefault(cell, []).append(sample)
        log(f"{row} {cell} (round {round_index + 1}): {summary(cell, sample)}")
    except CellError as error:
        if forwarder is not None and forwarder.process.poll() is not None and "forwarder exited" not in str(error):
            error = CellError(f"forwarder exited (code {forwarder.process.returncode}) during the cell "
                              f"({error}); log: {forwarder.log_tail(1)}")
        if forwarder is not None and forwarder.process.poll() is not None:
            DEAD[row] = str(error)
            state.self_exits.append(forwarder.process.returncode)
        state.failures.setdefault(cell, []).append(str(error))
        log(f"{row} {cell} (round {round_index + 1}): n/a: {error}")
    if forwarder is not None and row not in DEAD:
        # Every session should end once its client is gone.
        if wait_drained(BACKEND_PORTS.values(), 2.0, fronts.values()) is None:
            left = open_sockets(BACKEND_PORTS.values(), fronts.values())
            if left > state.stuck:
                note = (f"round {round_index + 1}, after {CELL_LABELS.get(cell, cell)}: {left} of the "
                        f"forwarder's sockets still open 2 s after the clients were gone")
                state.notes.append(note)
                log(f"{row}: {note}")
            state.stuck = left
    time.sleep(0.3)


DEAD = {}  # row -> why its forwarder is gone


def scrape_or_note(forwarder):
    """(ringlb's metrics, None) or (None, why not): a failed scrape costs the zero-copy figures
    of the cell, not the cell."""
    if forwarder is None or not forwarder.metrics_port:
        return None, None
    try:
        return forwarder.metrics(), None
    except CellError as error:
        return None, str(error)


CAP_LOAD_LIMIT = 80  # % busy of the load generator's CPU above which a capped cell says little


def capped_problems(sample):
    """A capped cell compares forwarders only while the cap, not the load generator, is the limit."""
    busy = sample.get("load_busy_pct")
    if busy is None:
        return ["load generator busy unknown (not pinned): cannot tell whether the cap was the limit"]
    if busy >= CAP_LOAD_LIMIT:
        return [f"load generator {busy:.0f} % busy ({CAP_LOAD_LIMIT} % or more): it, not the cap, may set this rate"]
    return []


def zero_copy_problems(row, cell, sample):
    """'auto' (and the rules' default) should never splice a 64-byte request and its response."""
    taken = sample.get("pipes_taken")
    setting = ringlb_variant(row)[1] if row.startswith("ringlb") else "n/a"
    if setting in (None, "auto") and cell.startswith("ka") and taken:
        return [f"zero_copy {setting or 'default'} took {taken:.0f} pipes on 64-byte keep-alive requests"]
    return []


def add_forwarder_cpu(sample, cpu_seconds, wall=None):
    """How much CPU the forwarder spent per unit of work in this cell. On this machine the load
    generator and the backend share one CPU and are often the bottleneck, so equal throughputs can
    hide very different costs; this is the figure that shows them."""
    sample["fwd_cpu_s"] = cpu_seconds
    if wall:
        sample["fwd_cpu_pct"] = 100.0 * cpu_seconds / wall
    if sample.get("requests"):
        sample["fwd_us_per_req"] = cpu_seconds * 1e6 / sample["requests"]
    if sample.get("bytes"):
        sample["fwd_s_per_gb"] = cpu_seconds * 1e9 / sample["bytes"]


def finish_row(row, state, cells, forwarder_log):
    results = {}
    for cell in cells:
        samples, failures = state.samples.get(cell, []), state.failures.get(cell, [])
        if samples:
            results[cell] = combine(samples, failures)
        elif failures:
            results[cell] = {"na": failures[0]}
    measured = [sample["foreign_pct"] for cell_samples in state.samples.values() for sample in cell_samples
                if "foreign_pct" in sample]
    results["_foreign"] = statistics.mean(measured) if measured else 0.0
    results["_foreign_max"] = max(measured) if measured else 0.0
    results["_notes"] = state.notes
    if forwarder_log is not None:
        results["_log"] = forwarder_log
        results["_exit"] = state.self_exits[0] if state.self_exits else None
    return results


def zero_copy_summary(r):
    parts = []
    if r.get("spliced_pct") is not None:
        parts.append(f"{r['spliced_pct']:.0f}% spliced")
    if r.get("pipes_taken") is not None:
        parts.append(f"{r['pipes_taken']:.0f} pipes taken")
    if r.get("splice_fallbacks"):
        parts.append(f"splice fallbacks {r['splice_fallback_causes']}")
    return ", " + ", ".join(parts) if parts else ""


def summary(cell, r):
    if "gbps" in r:
        cpu = f", forwarder {r['fwd_s_per_gb']:.3f} CPU s/GB" if "fwd_s_per_gb" in r else ""
        if cell.startswith("cap") and r.get("fwd_cpu_pct") is not None:
            throttled = r.get("cap_throttled_pct")
            cpu += (f" ({r['fwd_cpu_pct']:.0f}% of a CPU, cap {S.cap_percent}%"
                    + (f", throttled in {throttled:.0f}% of periods)" if throttled is not None else ")"))
        if "load_busy_pct" in r:
            cpu += f", load CPU {r['load_busy_pct']:.0f}% busy"
        return (f"{r['gbps']:.2f} Gbit/s{cpu}{zero_copy_summary(r)} (others busy {r.get('foreign_pct', 0):.0f}%) "
                f"{'; '.join(r.get('problems', []))}")
    if "rps" in r:
        cpu = f", forwarder {r['fwd_us_per_req']:.1f} µs/req" if "fwd_us_per_req" in r else ""
        if "load_busy_pct" in r:
            cpu += f", load CPU {r['load_busy_pct']:.0f}% busy"
        return (f"{r['rps']:.0f} req/s p50 {fmt_ms(r['p50_ms'])} p99 {fmt_ms(r['p99_ms'])}{cpu}{zero_copy_summary(r)} "
                f"(others busy {r.get('foreign_pct', 0):.0f}%) {'; '.join(r['problems'])}")
    if "per_conn" in r:
        return (f"{r['ok']} conns, PSS {r['before']} -> {r['after']} KiB, {fmt_num(r['per_conn'], 2)} KiB/conn "
                f"{'; '.join(r['problems'])}")
    if "c2b" in r:
        return f"{r['c2b']}/{r['b2c']} {r.get('duplex_mib_per_s')} MiB/s {'; '.join(r['problems'])}"
    return str(r)


# ----------------------------------------------------------------------------------------------
# Report

def fmt_num(value, digits=0):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def fmt_ms(ms):
    if ms is None:
        return "n/a"
    if ms < 1.0:
        return f"{ms * 1000:.0f} µs"
    if ms < 100:
        return f"{ms:.2f} ms"
    return f"{ms:.0f} ms"


def ratio(results, row, cell, key):
    base = results.get(BASELINE, {}).get(cell, {})
    mine = results.get(row, {}).get(cell, {})
    if key not in base or key not in mine or not base[key] or mine[key] is None:
        return "n/a"
    return f"{mine[key] / base[key]:.2f}x"


def notes_for(results, row, cells):
    """Problems of the given cells, each text once, prefixed by the cells it concerns."""
    by_text = {}
    for cell in cells:
        r = results.get(row, {}).get(cell)
        if r is None:
            continue
        texts = [f"n/a: {r['na']}"] if "na" in r else list(r.get("problems", []))
        for text in texts:
            by_text.setdefault(text, []).append(CELL_LABELS.get(cell, cell))
    notes = []
    for text, labels in by_text.items():
        notes.append(text if len(labels) == len(cells) and len(cells) > 1 else f"{', '.join(labels)}: {text}")
    return "; ".join(notes).replace("|", "/").replace("\n", " ")


CELL_LABELS = {"bulk1": "1 stream", "bulk4": "4 streams", "cap1": "capped 1 stream", "cap4": "capped 4 streams",
               "nc": f"c={S.nc_conns}", "idle": "idle",
               "integrity": "integrity", **{f"ka{c}": f"c={c}" for c in S.ka_conns}}


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def runs_label(cell):
    n = S.runs_for(cell)
    return f"median of {n} runs" if n > 1 else "1 run"


def cell_value(results, row, cell, key, fmt):
    r = results.get(row, {}).get(cell)
    if r is None:
        return "-"
    if "na" in r:
        return "n/a"
    return fmt(r.get(key))


def report_tables(results):
    rows = [row for row in S.rows if row in results]
    out = []
    if "bulk" in S.workloads:
        out.append(f"### Bulk throughput: iperf3, Gbit/s (higher is better; {S.seconds} s per cell, "
                   f"{runs_label('bulk1')})")
        out.append(table(["row", "1 stream", "vs haproxy", "4 streams", "vs haproxy", "notes"], [
            [row,
             cell_value(results, row, "bulk1", "gbps", lambda v: fmt_num(v, 2)), ratio(results, row, "bulk1", "gbps"),
             cell_value(results, row, "bulk4", "gbps", lambda v: fmt_num(v, 2)), ratio(results, row, "bulk4", "gbps"),
             notes_for(results, row, ["bulk1", "bulk4"])] for row in rows]))
    if "capped" in S.workloads:
        out.append(capped_table(results, rows))
    if "keepalive" in S.workloads:
        headers, body = ["row"], []
        for c in S.ka_conns:
            headers += [f"c={c} req/s", "vs haproxy", "p50", "p99"]
        headers.append("notes")
        for row in rows:
            line = [row]
            for c in S.ka_conns:
                cell = f"ka{c}"
                line += [cell_value(results, row, cell, "rps", lambda v: fmt_num(v)), ratio(results, row, cell, "rps"),
                         cell_value(results, row, cell, "p50_ms", fmt_ms), cell_value(results, row, cell, "p99_ms", fmt_ms)]
            line.append(notes_for(results, row, [f"ka{c}" for c in S.ka_conns]))
            body.append(line)
        runs = ", ".join(f"c={c}: {runs_label(f'ka{c}')}" for c in S.ka_conns)
        out.append(f"### Keep-alive requests: wrk -t1, 64-byte HTTP response, requests/s (higher is better) "
                   f"and latency percentiles ({S.seconds} s per cell; {runs})")
        out.append(table(headers, body))
    if "newconn" in S.workloads:
        out.append(f"### New connections: wrk -t1 -c{S.nc_conns} with `Connection: close`, connections/s "
                   f"(higher is better; {S.seconds} s per cell, {runs_label('nc')})")
        out.append(table(["row", "conn/s", "vs haproxy", "p50", "p99", "notes"], [
            [row, cell_value(results, row, "nc", "rps", lambda v: fmt_num(v)), ratio(results, row, "nc", "rps"),
             cell_value(results, row, "nc", "p50_ms", fmt_ms), cell_value(results, row, "nc", "p99_ms", fmt_ms),
             notes_for(results, row, ["nc"])] for row in rows]))
    cpu_table = forwarder_cpu_table(results, rows)
    if cpu_table:
        out.append(cpu_table)
    zero_copy = zero_copy_table(results, rows)
    if zero_copy:
        out.append(zero_copy)
    load_table = load_cpu_table(results, rows)
    if load_table:
        out.append(load_table)
    if "idle" in S.workloads:
        out.append(f"### Idle connections: {S.idle_conns:,} connections held open through the forwarder, "
                   f"PSS of the forwarder's processes (lower is better); teardown = time from the clients "
                   f"resetting them all at once until the forwarder has closed every connection to the backend")
        out.append(table(["row", "PSS before (KiB)", "PSS after (KiB)", "KiB / connection", "vs haproxy",
                          "established", "teardown", "notes"], [
            [row, cell_value(results, row, "idle", "before", lambda v: fmt_num(v)),
             cell_value(results, row, "idle", "after", lambda v: fmt_num(v)),
             cell_value(results, row, "idle", "per_conn", lambda v: fmt_num(v, 2)),
             ratio(results, row, "idle", "per_conn"),
             cell_value(results, row, "idle", "ok", lambda v: f"{v:,} / {S.idle_conns:,}"),
             cell_value(results, row, "idle", "teardown", lambda v: "n/a" if v is None else f"{v:.2f} s"),
             notes_for(results, row, ["idle"])] for row in rows]))
    if "integrity" in S.workloads:
        out.append(f"### Integrity: {S.integrity_mib} MiB of seeded pseudo-random data each way at the same time, "
                   f"SHA-256 compared at the far ends")
        out.append(table(["row", "client→backend", "backend→client", "result", "duplex MiB/s", "vs haproxy",
                          "notes"], [
            [row, cell_value(results, row, "integrity", "c2b", str), cell_value(results, row, "integrity", "b2c", str),
             cell_value(results, row, "integrity", "c2b",
                        lambda v: "PASS" if results[row]["integrity"].get("b2c") == "PASS" and v == "PASS" else "FAIL"),
             cell_value(results, row, "integrity", "duplex_mib_per_s", lambda v: fmt_num(v, 0)),
             ratio(results, row, "integrity", "duplex_mib_per_s"),
             notes_for(results, row, ["integrity"])] for row in rows]))
    return "\n\n".join(out)


def forwarder_cpu_table(results, rows):
    """CPU the forwarder's own processes spent per unit of work, from the same runs as the tables
    above (the median over the runs)."""
    columns = []  # (cell, key, header, digits)
    if "bulk" in S.workloads:
        columns += [("bulk1", "fwd_s_per_gb", "bulk 1 stream, CPU s/GB", 3),
                    ("bulk4", "fwd_s_per_gb", "bulk 4 streams, CPU s/GB", 3)]
    if "keepalive" in S.workloads:
        columns += [(f"ka{c}", "fwd_us_per_req", f"keep-alive c={c}, µs/req", 1) for c in S.ka_conns]
    if "newconn" in S.workloads:
        columns += [("nc", "fwd_us_per_req", f"new connections c={S.nc_conns}, µs/conn", 1)]
    if not columns:
        return ""
    headers = ["row"]
    for _, _, header_text, _ in columns:
        headers += [header_text, "vs haproxy"]
    body = []
    for row in rows:
        if row == "direct":
            continue
        line = [row]
        for cell, key, _, digits in columns:
            line += [cell_value(results, row, cell, key, lambda v, d=digits: fmt_num(v, d)),
                     ratio(results, row, cell, key)]
        body.append(line)
    return ("### Forwarder CPU per unit of work (lower is better): CPU time of the forwarder's processes (user + "
            "system, all threads) during a cell, divided by the bytes moved, requests answered or connections "
            "made in it. Where the load generator's CPU is the bottleneck, equal throughputs can hide different "
            "costs; this shows them.\n\n" + table(headers, body))


def capped_table(results, rows):
    kind = " and ".join(CpuCap.USED) or "none made"
    how = {"v1": "cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`", "v2": "cgroup v2 `cpu.max`"}
    mechanism = ", ".join(how[k] for k in CpuCap.USED) or "no cgroup could be made: see the notes"
    headers = ["row"]
    for streams in (1, 4):
        headers += [f"{streams} stream{'s' if streams > 1 else ''} Gbit/s", "vs haproxy", "forwarder CPU",
                    "load CPU busy"]
    headers.append("notes")
    body = []
    for row in rows:
        line = [row]
        for cell in ("cap1", "cap4"):
            line += [cell_value(results, row, cell, "gbps", lambda v: fmt_num(v, 2)), ratio(results, row, cell, "gbps"),
                     cell_value(results, row, cell, "fwd_cpu_pct", lambda v: "-" if v is None else f"{v:.0f} %"),
                     cell_value(results, row, cell, "load_busy_pct", lambda v: "-" if v is None else f"{v:.0f} %")]
        line.append(notes_for(results, row, ["cap1", "cap4"]))
        body.append(line)
    return (f"### CPU-capped bulk: iperf3 as in bulk, each forwarder's processes limited to {S.cap_percent} % of one "
            f"CPU ({mechanism}; cgroup: {kind}), Gbit/s (higher is better; {S.seconds} s per cell, "
            f"{runs_label('cap1')}). The same budget for every forwarder, so this is bytes per CPU-second. "
            f"forwarder CPU = its CPU time over the cell's wall time (iperf3 start-up included). A cell means "
            f"something only while the load generator's CPU stays below {CAP_LOAD_LIMIT} % busy (its notes say "
            f"when not).\n\n" + table(headers, body))


def zero_copy_table(results, rows):
    """ringlb rows only: how much of each cell's bytes splice moved, and how many pipes it took."""
    ringlb_rows = [row for row in rows if row.startswith("ringlb")]
    columns = []  # (cell, key, header)
    for workload, cells in (("bulk", ("bulk1", "bulk4")), ("capped", ("cap1", "cap4")), ("integrity", ("integrity",))):
        if workload in S.workloads:
            columns += [(cell, "spliced_pct", f"{CELL_LABELS[cell] if workload != 'integrity' else 'integrity'}: "
                         f"spliced") for cell in cells]
    if "keepalive" in S.workloads:
        columns += [(f"ka{c}", "pipes_taken", f"keep-alive c={c}: pipes taken") for c in S.ka_conns]
    if "newconn" in S.workloads:
        columns += [("nc", "pipes_taken", f"new connections c={S.nc_conns}: pipes taken")]
    if not ringlb_rows or not columns:
        return ""
    cells = [cell for cell in dict.fromkeys(cell for cell, _, _ in columns)]
    body = []
    for row in ringlb_rows:
        setting = ringlb_variant(row)[1]
        line = [row, f"`{setting}`" if setting else "rule default"]
        for cell, key, _ in columns:
            line.append(cell_value(results, row, cell, key,
                                   lambda v, k=key: "-" if v is None else (f"{v:.1f} %" if k == "spliced_pct"
                                                                           else fmt_num(v))))
        fallbacks = [f"{CELL_LABELS.get(cell, cell)}: {results[row][cell]['splice_fallback_causes']}"
                     for cell in cells if results.get(row, {}).get(cell, {}).get("splice_fallback_causes")]
        measured = [results[row][cell] for cell in cells if "na" not in results.get(row, {}).get(cell, {"na": 1})]
        missing = bool(measured) and all(r.get("spliced_bytes") is None for r in measured)
        notes = (["no `ringlb_spliced_bytes_total` in this ringlb's metrics (no splice support?)"] if missing else [])
        if not measured:
            reasons = [results.get(row, {}).get(cell, {}).get("na") for cell in cells]
            notes += [f"n/a: {reasons[0]}"] if reasons and reasons[0] else []
        notes += [f"splice fallbacks: {'; '.join(fallbacks)}"] if fallbacks else []
        notes += [p for cell in cells for p in results.get(row, {}).get(cell, {}).get("problems", [])
                  if "pipes on 64-byte" in p or p.startswith("metrics on")]
        line.append("; ".join(dict.fromkeys(notes)).replace("|", "/"))
        body.append(line)
    return ("### Zero-copy (ringlb rows): share of the cell's bytes that splice moved (difference of "
            "`ringlb_spliced_bytes_total` over that of `ringlb_rule_bytes_total` for the cell's rule, both directions, "
            "scraped from ringlb's metrics port before and after the cell; median over the runs) and pipes taken "
            "(`ringlb_pipes_taken_total`, all workers). `auto` (and the rules' default) should take no pipe for 64-byte "
            "keep-alive requests; `-` means the counter is missing.\n\n"
            + table(["row", "zero_copy"] + [h for _, _, h in columns] + ["notes"], body))


def load_cpu_table(results, rows):
    """How busy the load generator's CPU was in each cell (the median over the runs): where it is
    at 95 % or more, the load generator, not the forwarder, set the throughput, and the forwarder's
    CPU per unit of work is the figure that compares them."""
    if not S.pin:
        return ""
    cells = []  # (cell, header)
    if "bulk" in S.workloads:
        cells += [("bulk1", "bulk 1 stream"), ("bulk4", "bulk 4 streams")]
    if "capped" in S.workloads:
        cells += [("cap1", f"capped {S.cap_percent} %, 1 stream"), ("cap4", f"capped {S.cap_percent} %, 4 streams")]
    if "keepalive" in S.workloads:
        cells += [(f"ka{c}", f"keep-alive c={c}") for c in S.ka_conns]
    if "newconn" in S.workloads:
        cells += [("nc", f"new connections c={S.nc_conns}")]
    if not cells:
        return ""
    body = [[row] + [cell_value(results, row, cell, "load_busy_pct", lambda v: "-" if v is None else f"{v:.0f} %") for cell, _ in cells]
            for row in rows]
    return (f"### Load generator CPU busy (CPU {S.load_cpu}: wrk or iperf3 and the backends; user + system + irq + "
            f"softirq from /proc/stat, % of the cell's wall time). At 95 % or more the load generator, not the "
            f"forwarder, is the limit of that cell's throughput.\n\n" + table(["row"] + [h for _, h in cells], body))


def log_findings(results):
    lines = []
    iperf_upstream = f'upstream: "{HOST}:{BACKEND_PORTS["iperf"]}"'
    for row in S.rows:
        r = results.get(row, {})
        if r.get("_log") is None:
            continue
        text = r["_log"]
        interesting, iperf_resets, engine_seen = [], 0, False
        for line in text.splitlines():
            if "engine=" in line:
                if engine_seen:
                    continue
                engine_seen = True
            if not re.search(r"\b(warn|warning|error|alert|emerg|crit|fatal|stopped|rejected|engine=)|\[(WARNING|ALERT)\]",
                             line, re.I):
                continue
            # iperf3 ends a test by closing its data connections while the other side still sends.
            if iperf_upstream in line and re.search(r"reset by peer|Broken pipe", line):
                iperf_resets += 1
                continue
            interesting.append(line.strip())
        if iperf_resets:
            interesting.append(f"({iperf_resets} lines about connection reset / broken pipe on the iperf3 "
                               f"connections, as iperf3 closes its data connections at the end of a test: expected)")
        interesting = [f"bench: {note}" for note in r.get("_notes", [])] + interesting
        exit_note = f" (exited by itself with code {r['_exit']} during the run)" if r.get("_exit") is not None else ""
        if interesting or exit_note:
            shown = interesting[:10]
            more = (f"\n    ... {len(interesting) - 10} more lines in bench/results/logs/{row}.log"
                    if len(interesting) > 10 else "")
            lines.append(f"- **{row}**{exit_note}:\n" + "\n".join(f"    {l}" for l in shown) + more)
    if not lines:
        return ""
    return ("### Forwarder log lines (warnings, errors, start-up and totals; full logs in bench/results/logs/)\n\n"
            + "\n".join(lines))


def conditions(results):
    parts = [f"{row} {results[row]['_foreign']:.0f}% (max {results[row]['_foreign_max']:.0f}%)"
             for row in S.rows if "_foreign" in results.get(row, {})]
    if not parts:
        return ""
    return ("CPU used by other programs on this machine during the measurements, in % of one CPU, mean over the "
            "row's cells (busy time from /proc/stat minus this benchmark's own processes; near 0 means "
            "undisturbed): "
            + ", ".join(parts) + f". Load average at the end: {load_average()}.")


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def header():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip() or sh("uname -m")
    ringlb_version = sh(f"{S.ringlb} --version") or "n/a"
    commit = sh(f"git -C {REPO} rev-parse --short HEAD")
    dirty = sh(f"git -C {REPO} --no-optional-locks status --porcelain -- src include CMakeLists.txt | wc -l")
    tree = f"{commit}" + (f" + {dirty} uncommitted change(s) in src/include" if dirty not in ("", "0") else "")
    built = ""
    try:
        built = datetime.datetime.fromtimestamp(os.path.getmtime(S.ringlb), datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
    except OSError:
        pass
    try:
        import hashlib
        with open(S.ringlb, "rb") as f:
            built += ", sha256 " + hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        pass
    versions = "; ".join(v for v in [
        ringlb_version + (f" (tree {tree}, binary built {built})" if commit else ""),
        sh("haproxy -v | head -1 | cut -d' ' -f1-3"),
        sh("nginx -v 2>&1").replace("nginx version: ", ""),
        sh("wrk -v 2>&1 | head -1 | cut -d' ' -f1-2"),
        sh("iperf3 -v | head -1 | cut -d' ' -f1-2"),
        "Python " + sys.version.split()[0],
    ] if v)
    nproc = sh("nproc")
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    distro = sh(". /etc/os-release && echo $PRETTY_NAME")
    pin = (f"forwarder pinned to CPU {S.fwd_cpu}; load generator (wrk, iperf3 client, Python clients) and backends "
           f"(nginx HTTP, iperf3 server, Python echo/integrity) pinned to CPU {S.load_cpu} (taskset), the same for "
           f"every row" if S.pin else "no CPU pinning (BENCH_PIN=0 or a single CPU)")
    return "\n".join([
        "## ringlb benchmark",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- machine: `nproc` {nproc}, {cpu}, {mem_gib} GiB RAM; kernel {os.uname().release}; {distro}",
        f"- command: `{S.command}`",
        f"- versions: {versions}",
        f"- fairness: {pin}; all traffic on 127.0.0.1; each forwarder with 1 worker thread/process and its "
        f"default buffers (ringlb `buffer_size = \"64k\"`, HAProxy `tune.bufsize` 16k, nginx `proxy_buffer_size` 16k); "
        f"ringlb rows also listen for metrics (`[metrics]`, {HOST}, port of the row + 4) and set `zero_copy` on "
        f"every rule as their name says (`-splice`: \"splice\", `-copy`: \"off\", `-auto`: \"auto\", none: the rules' "
        f"default); "
        f"open-file limit {NOFILE} per process, so HAProxy `maxconn {HAPROXY_MAXCONN}`"
        + (f" (splice row: `maxconn {HAPROXY_SPLICE_MAXCONN}`, `maxpipes {HAPROXY_MAXPIPES}`)" if HAPROXY_MAXPIPES else "")
        + f", nginx `worker_connections {NGINX_CONNECTIONS}`.",
        f"- load average at start: {load_average()}",
        "- rows: `direct` = client straight to the backend (no forwarder: the limit of this client/backend on "
        "one CPU); `vs haproxy` = value / value of the `haproxy` row.",
    ])


def main():
    busy = set(BACKEND_PORTS.values()) & listening_ports()
    if busy:
        # Most likely another run of this benchmark: leave its logs and report alone.
        print(f"bench: ports {sorted(busy)} on {HOST} are already in use (another benchmark running?); "
              f"nothing measured", file=sys.stderr)
        return 2
    os.makedirs(S.logdir, exist_ok=True)
    for name in os.listdir(S.logdir):
        if name.endswith(".log"):
            os.remove(os.path.join(S.logdir, name))
    results = {}
    head = header()
    print(head + "\n", flush=True)
    tmp = tempfile.mkdtemp(prefix="ringlb-bench-")
    os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user and must read the served file
    # Every ringlb row runs the same binary even if build/ is rebuilt meanwhile.
    if os.access(S.ringlb, os.X_OK):
        snapshot = os.path.join(tmp, "ringlb")
        shutil.copy2(S.ringlb, snapshot)
        S.ringlb = snapshot
    backends = Backends(tmp)
    try:
        backends.start()
        cells = [cell for workload in S.workloads for cell in CELLS[workload]]
        states = {row: RowState() for row in S.rows}
        # All forwarders run side by side on their own ports (an idle one costs nothing), so that
        # each cell is measured on every row within a short while: a busy patch of time (another
        # program on the machine) then hits all rows alike instead of one. Round 1 measures every
        # cell; later rounds repeat the median cells; the row order flips from cell to cell.
        forwarders, fronts = {}, {}
        for row in S.rows:
            if row == "direct":
                fronts[row] = dict(BACKEND_PORTS)
                continue
            forwarders[row] = Forwarder(row, ALL_ROWS.index(row), tmp)
            fronts[row] = forwarders[row].fronts
            if row not in SPINS_WHEN_IDLE:
                start_forwarder(row, forwarders[row])
        rounds = max([S.runs_for(cell) for cell in cells] or [1])
        flip = 0
        for round_index in range(rounds):
            for cell in cells:
                if S.runs_for(cell) <= round_index:
                    continue
                order = S.rows if flip % 2 == 0 else list(reversed(S.rows))
                flip += 1
                for row in order:
                    if row in SPINS_WHEN_IDLE:
                        start_forwarder(row, forwarders[row])
                    measure_cell(row, cell, round_index, forwarders.get(row), fronts[row], backends, states[row])
                    if row in SPINS_WHEN_IDLE:
                        forwarders[row].stop()
        for row, forwarder in forwarders.items():
            if forwarder.process is not None:
                code = forwarder.process.poll()
                if code is not None and not states[row].self_exits:
                    states[row].self_exits.append(code)
                forwarder.stop()
        for row in S.rows:
            log_path = os.path.join(S.logdir, f"{row}.log")
            text = None
            if row != "direct":
                try:
                    with open(log_path, errors="replace") as f:
                        text = f.read()
                except OSError:
                    text = ""
            results[row] = finish_row(row, states[row], cells, text)
            log(f"{row}: CPU used by other programs during its cells: "
                f"{results[row]['_foreign']:.0f}% of one CPU on average")
    except CellError as error:
        log(f"cannot run: {error}")
        for row in S.rows:
            results.setdefault(row, {})
            for workload in S.workloads:
                for cell in CELLS[workload]:
                    results[row].setdefault(cell, {"na": str(error)})
    finally:
        PROCS.stop_all()
        subprocess.run(["rm", "-rf", tmp])
    elapsed = time.monotonic() - T0
    body = report_tables(results)
    findings = log_findings(results)
    footer = (conditions(results) + "\n\n" if conditions(results) else "") + \
        f"Measured in {elapsed:.0f} s. Logs of this run: bench/results/logs/."
    report = "\n\n".join(x for x in [head, body, findings, footer] if x) + "\n"
    print(body + "\n")
    if findings:
        print(findings + "\n")
    print(footer, flush=True)
    os.makedirs(os.path.dirname(S.out), exist_ok=True)
    with open(S.out, "w") as f:
        f.write(report)
    with open(os.path.join(S.logdir, "results.json"), "w") as f:
        json.dump({row: {k: v for k, v in cells.items() if not k.startswith("_")} for row, cells in results.items()},
                  f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: stopping every process started")
        PROCS.stop_all()
        sys.exit(130)

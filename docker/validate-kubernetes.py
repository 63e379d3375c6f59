#!/usr/bin/env python3
"""Checks docker/kubernetes.yaml without a cluster (no kubectl needed).

    python3 docker/validate-kubernetes.py [--ringlb BINARY] [MANIFEST]

MANIFEST defaults to kubernetes.yaml beside this script. Checks: every YAML document parses and
has a known apiVersion/kind and a name; one namespace throughout; workload selectors match their
pod labels; the ringlb workload mounts the ConfigMap at /etc/ringlb; the ConfigMap's ringlb.toml
is valid TOML and, with --ringlb, passes `ringlb -c FILE --check`; every `ringlb ctl` in a probe or
hook names the [admin] listen address of that file; httpGet probes hit the metrics port and the
metrics `allow` admits the kubelet; terminationGracePeriodSeconds > preStop sleep +
shutdown_timeout; non-root, read-only root filesystem, the Localhost seccomp profile, resources;
Services select existing pods and target declared ports; DNS servers name a headless Service of
the manifest whose pods listen on the port. Then a self-test breaks the manifest in known ways
(grace period too short, wrong admin address, ...) and requires each break to be caught.

Prints PASS:/FAIL: lines and "validate-kubernetes: N passed, N failed"; exits 1 if any failed,
2 on a usage problem. Needs PyYAML (Debian: apt-get install python3-yaml) and Python 3.11+
(tomllib). When the python3 first on PATH lacks PyYAML, it re-runs itself with /usr/bin/python3.
"""

import copy
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    system_python = "/usr/bin/python3"
    if os.environ.get("RINGLB_VALIDATE_REEXEC") != "1" and os.path.exists(system_python) and \
            os.path.realpath(sys.executable) != os.path.realpath(system_python):
        os.environ["RINGLB_VALIDATE_REEXEC"] = "1"
        os.execv(system_python, [system_python] + sys.argv)
    sys.exit("validate-kubernetes: PyYAML is missing: apt-get install python3-yaml")
try:
    import tomllib
except ImportError:
    sys.exit("validate-kubernetes: needs Python 3.11 or newer (tomllib)")

CONFIG_DIR = "/etc/ringlb"
CONFIG_PATH = CONFIG_DIR + "/ringlb.toml"
SECCOMP_PROFILE = "profiles/ringlb-io_uring.json"
DEFAULT_ADMIN = "127.0.0.1:9900"  # `ringlb ctl` without --admin or $RINGLB_ADMIN
KNOWN = {
    ("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"), ("policy/v1", "PodDisruptionBudget"),
}
NAMESPACED = {"ConfigMap", "Service", "Deployment", "DaemonSet", "PodDisruptionBudget"}
WORKLOADS = {"Deployment", "DaemonSet"}
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def parse_duration(value):
    """ringlb durations: "250ms", "30s", "5m", "1h", or a number of seconds. Returns seconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration: %r" % value)
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
    if not match:
        raise ValueError("not a duration: %r" % value)
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def split_host_port(text):
    """ "1.2.3.4:80", "[::1]:80", "name:80" -> (host, port)."""
    text = str(text)
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text) or re.fullmatch(r"([^:\[\]]+):(\d+)", text)
    if not match:
        raise ValueError("not HOST:PORT: %r" % text)
    return match.group(1), int(match.group(2))


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def labels_match(selector, labels):
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


class Validator:
    def __init__(self, docs, ringlb=None, base_dir=None):
        self.docs = docs
        self.ringlb = ringlb
        self.base_dir = base_dir
        self.results = []  # (ok, message)

    def ok(self, cond, message):
        self.results.append((bool(cond), message))
        return bool(cond)

    def fail(self, message):
        return self.ok(False, message)

    # ---- helpers -----------------------------------------------------------------------------
    def of_kind(self, *kinds):
        return [d for d in self.docs if d.get("kind") in kinds]

    @staticmethod
    def name(doc):
        return (doc.get("metadata") or {}).get("name")

    @staticmethod
    def ns(doc):
        return (doc.get("metadata") or {}).get("namespace", "default")

    @staticmethod
    def pod_spec(workload):
        return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}

    @staticmethod
    def pod_labels(workload):
        return (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}

    @staticmethod
    def where(doc):
        return "%s/%s" % (doc.get("kind"), Validator.name(doc))

    @staticmethod
    def container_port(container, port):
        """The containerPort number a probe/Service port (name or number) refers to, or None."""
        for p in container.get("ports") or []:
            if port == p.get("name") or port == p.get("containerPort"):
                return p.get("containerPort")
        return None

    def workloads_selected_by(self, selector, namespace):
        return [w for w in self.of_kind(*WORKLOADS)
                if self.ns(w) == namespace and labels_match(selector, self.pod_labels(w))]

    # ---- the checks --------------------------------------------------------------------------
    def run(self):
        self.check_documents()
        for workload in self.of_kind(*WORKLOADS):
            self.check_workload(workload)
        ringlb = self.find_ringlb()
        if ringlb is None:
            return self.results
        workload, container = ringlb
        config = self.check_config(workload, container)
        self.check_security(workload, container)
        self.check_services(workload, container, config)
        if config is not None:
            self.check_probes_and_hooks(workload, container, config)
            self.check_dns_servers(workload, config)
        return self.results

    def check_documents(self):
        seen = set()
        for index, doc in enumerate(self.docs, 1):
            where = "document %d (%s/%s)" % (index, doc.get("kind"), self.name(doc))
            pair = (doc.get("apiVersion"), doc.get("kind"))
            self.ok(pair in KNOWN, "%s: apiVersion/kind %s/%s is one of the expected kinds" % (where, *pair))
            name = self.name(doc)
            valid = isinstance(name, str) and (DNS1123_LABEL if doc.get("kind") in ("Service", "Namespace")
                                               else DNS1123_SUBDOMAIN).match(name) and len(name) <= 63
            self.ok(valid, "%s: metadata.name is a valid name" % where)
            key = (doc.get("kind"), self.ns(doc), name)
            self.ok(key not in seen, "%s: no other object of this kind has this name" % where)
            seen.add(key)
            if doc.get("kind") != "Namespace" and doc.get("kind") in NAMESPACED:
                self.ok(isinstance(doc.get("spec" if doc["kind"] != "ConfigMap" else "data"), dict),
                        "%s: has its %s" % (where, "spec" if doc["kind"] != "ConfigMap" else "data"))
        for kind in ("ConfigMap", "Service"):
            self.ok(self.of_kind(kind), "the manifest has a %s" % kind)
        self.ok(self.of_kind(*WORKLOADS), "the manifest has a Deployment or DaemonSet")
        namespaces = {self.name(d) for d in self.of_kind("Namespace")}
        used = {self.ns(d) for d in self.docs if d.get("kind") in NAMESPACED}
        self.ok(len(used) == 1, "all objects are in one namespace (%s)" % ", ".join(sorted(used)))
        if namespaces:
            self.ok(used <= namespaces, "the namespace used is the manifest's Namespace %s"
                    % ", ".join(sorted(namespaces)))

    def check_workload(self, w):
        where = self.where(w)
        spec = w.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        self.ok(labels_match(selector, self.pod_labels(w)),
                "%s: spec.selector.matchLabels %s match the pod template's labels" % (where, selector))
        if w.get("kind") == "Deployment" and "replicas" in spec:
            self.ok(isinstance(spec["replicas"], int) and spec["replicas"] >= 1, "%s: replicas >= 1" % where)
        containers = self.pod_spec(w).get("containers") or []
        self.ok(containers, "%s: has containers" % where)
        for c in containers:
            cw = "%s container %s" % (where, c.get("name"))
            self.ok(c.get("name") and c.get("image"), "%s: has a name and an image" % cw)
            res = c.get("resources") or {}
            self.ok(all(k in (res.get("requests") or {}) for k in ("cpu", "memory")) and
                    all(k in (res.get("limits") or {}) for k in ("cpu", "memory")),
                    "%s: resources.requests and resources.limits set cpu and memory" % cw)
            names = [p.get("name") for p in c.get("ports") or [] if p.get("name")]
            self.ok(len(names) == len(set(names)) and all(len(n) <= 15 for n in names),
                    "%s: port names are unique and at most 15 characters" % cw)
            self.ok(all(isinstance(p.get("containerPort"), int) for p in c.get("ports") or []),
                    "%s: every port has a numeric containerPort" % cw)

    def find_ringlb(self):
        """The workload container running ringlb itself (image's entrypoint, or command ringlb)."""
        found = []
        for w in self.of_kind(*WORKLOADS):
            for c in self.pod_spec(w).get("containers") or []:
                command = c.get("command")
                if "ringlb" in str(c.get("image", "")) and (not command or os.path.basename(command[0]) == "ringlb"):
                    found.append((w, c))
        self.ok(len(found) == 1, "exactly one workload container runs ringlb (found %d)" % len(found))
        return found[0] if len(found) == 1 else None

    def config_path(self, container):
        argv = (container.get("command") or []) + (container.get("args") or [])
        for i, arg in enumerate(argv):
            if arg in ("-c", "--config") and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith("--config="):
                return arg.split("=", 1)[1]
        return CONFIG_PATH  # the image's entrypoint

    def check_config(self, w, c):
        """Finds the ConfigMap mounted where ringlb reads its file; returns the parsed TOML."""
        where = self.where(w)
        path = self.config_path(c)
        directory, filename = os.path.dirname(path), os.path.basename(path)
        volumes = {v.get("name"): v for v in self.pod_spec(w).get("volumes") or []}
        config_map = key = None
        for m in c.get("volumeMounts") or []:
            volume = volumes.get(m.get("name")) or {}
            if "configMap" not in volume:
                continue
            if m.get("mountPath") == directory and not m.get("subPath"):
                items = volume["configMap"].get("items")
                key = filename if not items else next((i["key"] for i in items if i.get("path") == filename), None)
            elif m.get("mountPath") == path and m.get("subPath"):
                key = m["subPath"]
            else:
                continue
            config_map = volume["configMap"].get("name")
            self.ok(m.get("readOnly") is True, "%s: the configuration volume is mounted readOnly" % where)
        if not self.ok(config_map and key, "%s: a ConfigMap volume provides %s" % (where, path)):
            return None
        docs = [d for d in self.of_kind("ConfigMap") if self.name(d) == config_map and self.ns(d) == self.ns(w)]
        if not self.ok(docs, "%s: ConfigMap %s exists in namespace %s" % (where, config_map, self.ns(w))):
            return None
        text = (docs[0].get("data") or {}).get(key)
        if not self.ok(isinstance(text, str), "ConfigMap/%s has data key %s" % (config_map, key)):
            return None
        try:
            config = tomllib.loads(text)
            self.ok(True, "ConfigMap/%s %s parses as TOML" % (config_map, key))
        except tomllib.TOMLDecodeError as e:
            self.fail("ConfigMap/%s %s parses as TOML: %s" % (config_map, key, e))
            return None
        if self.ringlb:
            self.run_ringlb_check(config_map, key, text)
        self.ok(isinstance(config.get("rule"), list) and config["rule"], "%s has at least one [[rule]]" % key)
        return config

    def run_ringlb_check(self, config_map, key, text):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, key)
            with open(path, "w") as f:
                f.write(text)
            try:
                proc = subprocess.run([self.ringlb, "-c", path, "--check"], capture_output=True, text=True,
                                      timeout=60)
                output = (proc.stdout + proc.stderr).strip().replace(tmp + "/", "")
                self.ok(proc.returncode == 0 and output.startswith("ok:"),
                        "ConfigMap/%s %s passes `%s -c FILE --check` (exit %d): %s"
                        % (config_map, key, self.ringlb, proc.returncode, output.replace("\n", "\n    ")))
            except (OSError, subprocess.TimeoutExpired) as e:
                self.fail("run %s --check: %s" % (self.ringlb, e))

    def check_security(self, w, c):
        where = "%s container %s" % (self.where(w), c.get("name"))
        pod = self.pod_spec(w).get("securityContext") or {}
        own = c.get("securityContext") or {}
        merged = {**pod, **own}
        self.ok(merged.get("runAsNonRoot") is True, "%s: runAsNonRoot: true" % where)
        self.ok(merged.get("runAsUser", 999) != 0, "%s: runAsUser is not 0" % where)
        self.ok(own.get("readOnlyRootFilesystem") is True, "%s: readOnlyRootFilesystem: true" % where)
        self.ok(own.get("allowPrivilegeEscalation") is False, "%s: allowPrivilegeEscalation: false" % where)
        seccomp = own.get("seccompProfile") or pod.get("seccompProfile") or {}
        self.ok(seccomp.get("type") == "Localhost" and seccomp.get("localhostProfile") == SECCOMP_PROFILE,
                "%s: seccompProfile is Localhost %s (got %s)" % (where, SECCOMP_PROFILE, seccomp or "none"))
        if self.base_dir:
            profile = os.path.join(self.base_dir, "seccomp-io_uring.json")
            try:
                with open(profile) as f:
                    data = json.load(f)
                allowed = {n for s in data.get("syscalls", []) if s.get("action") == "SCMP_ACT_ALLOW"
                           and not s.get("args") and not s.get("includes") for n in s.get("names", [])}
                need = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
                self.ok(need <= allowed, "%s (the profile to install on nodes) allows %s"
                        % (os.path.basename(profile), ", ".join(sorted(need))))
            except (OSError, ValueError) as e:
                self.fail("read the seccomp profile %s: %s" % (profile, e))

    def check_services(self, w, c, config):
        labels = self.pod_labels(w)
        listen_ports = set()
        for rule in (config or {}).get("rule") or []:
            for address in rule.get("listen") or []:
                try:
                    listen_ports.add(split_host_port(address)[1])
                except ValueError:
                    self.fail("rule %s: listen address %r is HOST:PORT" % (rule.get("id"), address))
        declared = {p.get("containerPort") for p in c.get("ports") or []}
        for port in sorted(listen_ports):
            self.ok(port in declared, "ringlb listens on %d and the container declares it" % port)
        front = [s for s in self.of_kind("Service")
                 if labels_match((s.get("spec") or {}).get("selector"), labels)]
        self.ok(front, "a Service selects the ringlb pods")
        for s in self.of_kind("Service"):
            spec = s.get("spec") or {}
            where = self.where(s)
            self.ok(spec.get("type", "ClusterIP") in ("ClusterIP", "LoadBalancer", "NodePort"),
                    "%s: type is ClusterIP, NodePort or LoadBalancer" % where)
            selected = self.workloads_selected_by(spec.get("selector"), self.ns(s))
            if not self.ok(selected, "%s: its selector %s matches a workload's pods"
                           % (where, spec.get("selector"))):
                continue
            self.ok(spec.get("ports"), "%s: has ports" % where)
            for p in spec.get("ports") or []:
                target = p.get("targetPort", p.get("port"))
                hits = [self.container_port(ct, target) for wl in selected
                        for ct in self.pod_spec(wl).get("containers") or []]
                number = next((h for h in hits if h is not None), None)
                self.ok(number is not None, "%s: port %s targets a declared container port (%s)"
                        % (where, p.get("port"), target))
                if s in front and number is not None:
                    self.ok(number in listen_ports, "%s: port %s reaches a ringlb listener (%s)"
                            % (where, p.get("port"), number))
        for pdb in self.of_kind("PodDisruptionBudget"):
            selector = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels")
            self.ok(self.workloads_selected_by(selector, self.ns(pdb)),
                    "%s: its selector matches a workload's pods" % self.where(pdb))

    @staticmethod
    def exec_commands(c):
        """(what, argv) for every exec probe and hook of a container."""
        out = []
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            command = ((c.get(probe) or {}).get("exec") or {}).get("command")
            if command:
                out.append((probe, command))
        for hook in ("preStop", "postStart"):
            command = ((((c.get("lifecycle") or {}).get(hook)) or {}).get("exec") or {}).get("command")
            if command:
                out.append((hook, command))
        return out

    @staticmethod
    def shell_words(argv):
        """argv, with `sh -c "..."` scripts split into words as well."""
        words = []
        for i, word in enumerate(argv):
            if i > 0 and argv[i - 1] == "-c" and os.path.basename(argv[0]) in ("sh", "bash", "dash"):
                try:
                    words.extend(shlex.split(word))
                except ValueError:
                    words.append(word)
            else:
                words.append(word)
        return words

    @staticmethod
    def ctl_invocations(words):
        """Each `ringlb ctl ...` in words, as the list of words after `ctl` (up to ; && ||)."""
        out = []
        for i in range(len(words) - 1):
            if os.path.basename(words[i]) == "ringlb" and words[i + 1] == "ctl":
                rest = []
                for word in words[i + 2:]:
                    if word in (";", "&&", "||", "|"):
                        break
                    rest.append(word)
                out.append(rest)
        return out

    @staticmethod
    def sleep_seconds(words):
        total = 0.0
        for i in range(len(words) - 1):
            if os.path.basename(words[i]) == "sleep":
                try:
                    total += parse_duration(words[i + 1])
                except ValueError:
                    pass
        return total

    def check_probes_and_hooks(self, w, c, config):
        where = "%s container %s" % (self.where(w), c.get("name"))
        glob = config.get("global") or {}
        admin = config.get("admin") or {}
        metrics = config.get("metrics") or {}
        admin_listen = admin.get("listen")
        self.ok(isinstance(admin_listen, str), "[admin] listen is set (probes use the management port): %s"
                % admin_listen)
        if isinstance(admin_listen, str) and not admin_listen.startswith("unix:"):
            try:
                host, _ = split_host_port(admin_listen)
                self.ok(is_loopback(host) or admin.get("token") or admin.get("insecure") is True,
                        "[admin] listens on loopback, or has a token (or insecure = true)")
            except ValueError:
                self.fail("[admin] listen %r is HOST:PORT or unix:PATH" % admin_listen)
        env = {e.get("name"): e.get("value") for e in c.get("env") or []}

        for what, argv in self.exec_commands(c):
            for args in self.ctl_invocations(self.shell_words(argv)):
                address = env.get("RINGLB_ADMIN") or DEFAULT_ADMIN
                for i, word in enumerate(args):
                    if word == "--admin" and i + 1 < len(args):
                        address = args[i + 1]
                    elif word.startswith("--admin="):
                        address = word.split("=", 1)[1]
                self.ok(address == admin_listen, "%s: %s `ringlb ctl` asks %s, the [admin] listen address %s"
                        % (where, what, address, admin_listen))
                if admin.get("token"):
                    self.ok("--token" in " ".join(args) or "RINGLB_TOKEN" in env,
                            "%s: %s `ringlb ctl` passes the admin token" % (where, what))

        metrics_port = None
        if isinstance(metrics.get("listen"), str):
            try:
                metrics_port = split_host_port(metrics["listen"])[1]
            except ValueError:
                self.fail("[metrics] listen %r is HOST:PORT" % metrics["listen"])
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                continue
            number = self.container_port(c, get.get("port"))
            if get.get("path") in ("/healthz", "/metrics"):
                self.ok(number is not None and number == metrics_port,
                        "%s: %s httpGet %s goes to the [metrics] port (%s -> %s, metrics on %s)"
                        % (where, probe, get.get("path"), get.get("port"), number, metrics_port))
                host = split_host_port(metrics["listen"])[0] if metrics_port else "127.0.0.1"
                allow = metrics.get("allow")
                self.ok(not is_loopback(host) and allow and not all(is_loopback(a.split("/")[0]) for a in allow),
                        "%s: %s from the kubelet can reach [metrics] (not loopback-only listen/allow)"
                        % (where, probe))

        readiness = c.get("readinessProbe") or {}
        ready_cmd = (readiness.get("exec") or {}).get("command") or []
        ready_get = readiness.get("httpGet") or {}
        self.ok(self.ctl_invocations(self.shell_words(ready_cmd)) or ready_get.get("path") == "/healthz",
                "%s: readinessProbe asks the management port (ringlb ctl) or GET /healthz" % where)

        pre_stop = (c.get("lifecycle") or {}).get("preStop")
        self.ok(pre_stop, "%s: has a preStop hook (time for endpoints to drop the pod)" % where)
        pre_stop_seconds = 0.0
        if pre_stop:
            if "sleep" in pre_stop:
                pre_stop_seconds = float((pre_stop["sleep"] or {}).get("seconds", 0))
            else:
                pre_stop_seconds = self.sleep_seconds(
                    self.shell_words((pre_stop.get("exec") or {}).get("command") or []))
        try:
            shutdown = parse_duration(glob.get("shutdown_timeout", "30s"))
        except ValueError as e:
            self.fail("[global] shutdown_timeout: %s" % e)
            return
        grace = self.pod_spec(w).get("terminationGracePeriodSeconds", 30)
        self.ok(isinstance(grace, int) and grace > shutdown,
                "%s: terminationGracePeriodSeconds (%s) > shutdown_timeout (%gs)" % (self.where(w), grace, shutdown))
        self.ok(isinstance(grace, int) and grace > pre_stop_seconds + shutdown,
                "%s: terminationGracePeriodSeconds (%s) > preStop sleep (%gs) + shutdown_timeout (%gs)"
                % (self.where(w), grace, pre_stop_seconds, shutdown))

    def check_dns_servers(self, w, config):
        namespace = self.ns(w)
        dns_servers = [(rule.get("id"), s) for rule in config.get("rule") or []
                       for s in rule.get("servers") or [] if isinstance(s, dict) and "dns" in s]
        self.ok(dns_servers, "the configuration has DNS-discovered servers ({ dns = ... })")
        for rule_id, server in dns_servers:
            what = "rule %s: server dns = %r" % (rule_id, server["dns"])
            try:
                host, port = split_host_port(server["dns"])
            except ValueError as e:
                self.fail("%s: %s" % (what, e))
                continue
            if "resolve_interval" in server:
                try:
                    self.ok(parse_duration(server["resolve_interval"]) > 0, "%s: resolve_interval > 0" % what)
                except ValueError as e:
                    self.fail("%s: resolve_interval: %s" % (what, e))
            parts = host.rstrip(".").split(".")
            service, svc_ns = parts[0], parts[1] if len(parts) > 1 else namespace
            if not self.ok(len(parts) <= 2 or parts[2:] in (["svc"], ["svc", "cluster", "local"]),
                           "%s: is SERVICE[.NAMESPACE[.svc[.cluster.local]]]" % what):
                continue
            matches = [s for s in self.of_kind("Service") if self.name(s) == service and self.ns(s) == svc_ns]
            if not self.ok(matches, "%s: names Service %s in namespace %s of this manifest"
                           % (what, service, svc_ns)):
                continue
            spec = matches[0].get("spec") or {}
            self.ok(spec.get("clusterIP") == "None",
                    "%s: Service %s is headless (clusterIP: None), so its name resolves to the pods"
                    % (what, service))
            ports = [p for p in spec.get("ports") or [] if p.get("port") == port]
            if not self.ok(ports, "%s: Service %s has port %d" % (what, service, port)):
                continue
            # A headless Service's A records are the pod IPs: the pods must listen on `port`.
            target = ports[0].get("targetPort", port)
            numbers = [self.container_port(ct, target)
                       for wl in self.workloads_selected_by(spec.get("selector"), svc_ns)
                       for ct in self.pod_spec(wl).get("containers") or []]
            self.ok(port in numbers, "%s: the pods of Service %s listen on %d (targetPort %s)"
                    % (what, service, port, target))


# ---- self-test: each break of the manifest must be caught ------------------------------------

def find(docs, kind, name):
    return next(d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name)


def ringlb_container(docs):
    for d in docs:
        if d.get("kind") in WORKLOADS:
            for c in d["spec"]["template"]["spec"]["containers"]:
                if "ringlb" in str(c.get("image")) and not c.get("command"):
                    return d, c
    raise LookupError("no ringlb container")


def config_map(docs):
    return next(d for d in docs if d.get("kind") == "ConfigMap")


def edit_toml(docs, old, new):
    cm = config_map(docs)
    key = next(iter(cm["data"]))
    if old not in cm["data"][key]:
        raise LookupError("%r not in the ConfigMap" % old)
    cm["data"][key] = cm["data"][key].replace(old, new, 1)


def set_grace(docs):
    ringlb_container(docs)[0]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 28


def wrong_admin(docs):
    c = ringlb_container(docs)[1]
    c["readinessProbe"] = {"exec": {"command": ["ringlb", "ctl", "--admin", "127.0.0.1:9999", "show", "stats"]}}


def not_headless(docs):
    find(docs, "Service", "backend")["spec"].pop("clusterIP", None)


def root_allowed(docs):
    w, c = ringlb_container(docs)
    w["spec"]["template"]["spec"].setdefault("securityContext", {})["runAsNonRoot"] = False
    c.setdefault("securityContext", {})["runAsNonRoot"] = False


def writable_root(docs):
    ringlb_container(docs)[1].setdefault("securityContext", {})["readOnlyRootFilesystem"] = False


def runtime_default(docs):
    w, c = ringlb_container(docs)
    w["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    c.get("securityContext", {}).pop("seccompProfile", None)


def bad_kind(docs):
    find(docs, "Service", "backend")["kind"] = "Servise"


def selector_mismatch(docs):
    w = ringlb_container(docs)[0]
    for s in docs:
        if s.get("kind") == "Service" and labels_match(s["spec"].get("selector"), Validator.pod_labels(w)):
            s["spec"]["selector"] = {"app.kubernetes.io/name": "nothing"}


def metrics_loopback(docs):
    edit_toml(docs, '0.0.0.0:9901"', '127.0.0.1:9901"')
    ringlb_container(docs)[1]["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": "metrics"}}


def no_prestop(docs):
    ringlb_container(docs)[1].pop("lifecycle", None)


MUTATIONS = [
    ("terminationGracePeriodSeconds below preStop + shutdown_timeout", set_grace, "terminationGracePeriodSeconds"),
    ("readiness probe asking another admin address", wrong_admin, "the [admin] listen address"),
    ("ConfigMap TOML broken", lambda d: edit_toml(d, "[[rule]]", "[[rule]"), "parses as TOML"),
    ("shutdown_timeout raised above the grace period",
     lambda d: edit_toml(d, 'shutdown_timeout = "', 'shutdown_timeout = "1'), "shutdown_timeout"),
    ("backend Service not headless", not_headless, "headless"),
    ("DNS name of a Service that does not exist",
     lambda d: edit_toml(d, 'dns = "backend.', 'dns = "backends.'), "names Service"),
    ("runAsNonRoot false", root_allowed, "runAsNonRoot"),
    ("writable root filesystem", writable_root, "readOnlyRootFilesystem"),
    ("seccomp RuntimeDefault instead of the Localhost profile", runtime_default, "seccompProfile"),
    ("misspelt kind", bad_kind, "expected kinds"),
    ("front Service selecting no pods", selector_mismatch, "selector"),
    ("metrics on loopback with an httpGet probe", metrics_loopback, "kubelet can reach"),
    ("no preStop hook", no_prestop, "preStop"),
]


def self_test(docs):
    results = []
    for label, mutate, expected in MUTATIONS:
        broken = copy.deepcopy(docs)
        try:
            mutate(broken)
        except (LookupError, KeyError, StopIteration) as e:
            results.append((False, "self-test: %s: the mutation does not apply to this manifest (%s)" % (label, e)))
            continue
        failures = [m for ok, m in Validator(broken).run() if not ok and expected in m]
        results.append((bool(failures), "self-test: %s is caught%s" % (
            label, (": " + failures[0].split("\n")[0]) if failures else " (no failure mentioning %r)" % expected)))
    return results


def main(argv):
    args, ringlb, manifest = list(argv), None, None
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if arg == "--ringlb" and args:
            ringlb = args.pop(0)
        elif arg.startswith("--ringlb="):
            ringlb = arg.split("=", 1)[1]
        elif not arg.startswith("-") and manifest is None:
            manifest = arg
        else:
            print("usage: validate-kubernetes.py [--ringlb BINARY] [MANIFEST]", file=sys.stderr)
            return 2
    here = os.path.dirname(os.path.abspath(__file__))
    manifest = manifest or os.path.join(here, "kubernetes.yaml")
    if ringlb and not os.access(ringlb, os.X_OK):
        print("validate-kubernetes: %s is not an executable" % ringlb, file=sys.stderr)
        return 2
    try:
        with open(manifest) as f:
            docs = list(yaml.safe_load_all(f))
    except (OSError, yaml.YAMLError) as e:
        print("FAIL: %s parses as YAML: %s" % (manifest, e))
        print("validate-kubernetes: 0 passed, 1 failed")
        return 1
    results = [(True, "%s parses as YAML: %d documents" % (manifest, len(docs)))]
    empty = [i + 1 for i, d in enumerate(docs) if not isinstance(d, dict)]
    results.append((not empty, "every document is a mapping (not: %s)" % (empty or "none")))
    docs = [d for d in docs if isinstance(d, dict)]
    results += Validator(docs, ringlb, os.path.dirname(os.path.abspath(manifest))).run()
    if not ringlb:
        print("note: no --ringlb BINARY given: `ringlb --check` of the ConfigMap skipped")
    results += self_test(docs)
    for ok, message in results:
        print("%s: %s" % ("PASS" if ok else "FAIL", message))
    failed = sum(1 for ok, _ in results if not ok)
    print("validate-kubernetes: %d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

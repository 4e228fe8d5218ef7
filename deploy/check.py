#!/usr/bin/env python3
"""Check the operator deployment kit in deploy/ against a real souk-server binary.

    python3 deploy/check.py --server-bin target/debug/souk-server

Needs Python 3.8+ and PyYAML (`import yaml`); nothing else (helm, systemd-analyze and
promql_parser are used when present). What it checks:

  1. parse   every *.yaml, *.yml and *.json under deploy/ parses (Helm templates excepted:
             they are Go templates, not YAML; Chart.yaml and values.yaml are parsed).
  2. server  souk-server starts on a temporary data directory and free ports, /readyz becomes
             200 within the time limit, a search answers, /metrics is fetched; the Docker
             image's HEALTHCHECK command (run here with the host's bash) passes against it.
  3. metrics every souk_* metric named in a PromQL expression of deploy/grafana/*.json and
             deploy/prometheus/*.yml is exported by that server (`up` is Prometheus' own);
             if the optional module promql_parser (PyPI promql-parser) is importable, every
             expression also parses.
  4. config  every SOUK_* variable and every --flag written in deploy/ is one that
             `souk-server --help` lists; the variables and other tools' flags that are not
             the server's are ignored, and both lists are printed.
  5. helm    every {{ if/with/range/define }} in the chart's templates has its {{ end }}, and
             every .Values.x.y they use exists in values.yaml; with a `helm` binary on PATH,
             `helm lint` too.
  6. systemd with systemd-analyze on PATH: `systemd-analyze verify` on a copy of the unit whose
             ExecStart is the given binary (any message about the unit fails), and the
             `systemd-analyze security --offline=true` exposure score (for information).

It prints one line per finding and a summary, and exits 1 if anything failed, else 0.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent

# SOUK_* variables that `souk-server --help` does not list but the server reads.
IGNORED_ENV = {
    "SOUK_LOG": "the log level filter, read by the logger; the main README documents it",
}

# --flags written in deploy/ that belong to other tools, not to souk-server.
OTHER_TOOLS_FLAGS = {
    "cargo": {"--release", "--locked"},
    "docker, Dockerfile and compose": {
        "--build", "--build-arg", "--from", "--interval", "--mount", "--name", "--retries",
        "--start-period", "--timeout",
    },
    "apt-get, groupadd, useradd": {
        "--gid", "--home-dir", "--no-create-home", "--no-install-recommends", "--shell", "--system",
        "--uid",
    },
    "systemctl, systemd-analyze": {"--now", "--offline"},
    "helm, kubectl": {"--create-namespace", "--namespace", "--set"},
    "deploy/check.py": {"--server-bin"},
}

# Keys whose string values are PromQL in Grafana dashboards and Prometheus rule files.
PROMQL_KEYS = {"expr", "query", "definition"}
PROMETHEUS_OWN_METRICS = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

FLAG_RE = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*(?![\w.])")
ENV_RE = re.compile(r"\bSOUK_[A-Z0-9_]+")
METRIC_RE = re.compile(r"(?<![\w:])souk_[a-zA-Z0-9_:]*")


class Report:
    """Collects findings per section and prints them as they come."""

    def __init__(self):
        self.problems = {}

    def section(self, name):
        print(f"\n== {name}")
        self.problems.setdefault(name, 0)
        self.current = name

    def ok(self, message):
        print(f"  ok    {message}")

    def info(self, message):
        print(f"  info  {message}")

    def fail(self, message):
        print(f"  FAIL  {message}")
        self.problems[self.current] += 1

    def summary(self):
        print("\n== summary")
        for name, count in self.problems.items():
            print(f"  {name:8} {'ok' if count == 0 else f'{count} problem(s)'}")
        total = sum(self.problems.values())
        print(f"\n{'all checks passed' if total == 0 else f'{total} problem(s)'}")
        return 1 if total else 0


def rel(path):
    return path.relative_to(REPO).as_posix()


def is_helm_template(path):
    parts = path.relative_to(DEPLOY).parts
    return len(parts) >= 4 and parts[0] == "helm" and parts[2] == "templates"


def text_files():
    """Every text file of the kit except this script."""
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path != Path(__file__).resolve() and "__pycache__" not in path.parts:
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


# --- 1. parse ---------------------------------------------------------------------------------


def check_parse(report):
    report.section("parse")
    documents = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        if is_helm_template(path):
            report.info(f"{rel(path)}: Helm template, not parsed as YAML")
            continue
        try:
            with path.open(encoding="utf-8") as f:
                if path.suffix == ".json":
                    documents[path] = [json.load(f)]
                else:
                    documents[path] = list(yaml.safe_load_all(f))
            report.ok(rel(path))
        except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
            report.fail(f"{rel(path)}: {' '.join(str(e).split())}")
    return documents


# --- 2. server --------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    """Returns (status, body text); status 0 if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def server_env():
    """The caller's environment without SOUK_* variables, so only our flags count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOUK_")}
    env["NO_COLOR"] = "1"
    return env


def docker_healthcheck_command():
    """The exec-form HEALTHCHECK CMD of deploy/docker/Dockerfile, or None."""
    text = (DEPLOY / "docker" / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("HEALTHCHECK") and " CMD " in line:
            return json.loads(line.split(" CMD ", 1)[1])
    return None


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def check_server(report, server_bin, ready_timeout):
    """Runs the server; returns the /metrics text, or None."""
    report.section("server")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    metrics = None
    with tempfile.TemporaryDirectory(prefix="souk-check-") as data_dir:
        log_path = Path(data_dir) / "server.log"
        command = [
            server_bin, "--data-dir", str(Path(data_dir) / "data"),
            "--listen", f"127.0.0.1:{port}", "--grpc-addr", "127.0.0.1:0",
            "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--p2p-discover", "false",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       env=server_env())
        try:
            deadline = time.monotonic() + ready_timeout
            status = 0
            while time.monotonic() < deadline and process.poll() is None:
                status, _ = http_get(f"{base}/readyz", timeout=2)
                if status == 200:
                    break
                time.sleep(0.25)
            if status != 200:
                reason = (f"exited with {process.returncode}" if process.poll() is not None
                          else f"not ready after {ready_timeout} s (last /readyz: {status})")
                report.fail(f"souk-server {reason}; log tail:")
                for line in log_path.read_text("utf-8", "replace").splitlines()[-15:]:
                    print(f"        {line}")
                return None
            report.ok(f"/readyz 200 on {base}")

            status, body = http_get(f"{base}/healthz")
            (report.ok if status == 200 else report.fail)(f"/healthz {status} {body.strip()!r}")
            status, body = http_get(f"{base}/api/v1/listings/search?q=x")
            if status == 200 and "hits" in json.loads(body or "{}"):
                report.ok("/api/v1/listings/search?q=x 200")
            else:
                report.fail(f"/api/v1/listings/search?q=x {status}: {body[:200]}")
            status, body = http_get(f"{base}/metrics")
            if status == 200:
                metrics = body
                report.ok(f"/metrics 200 ({len(body.splitlines())} lines)")
            else:
                report.fail(f"/metrics {status}")

            healthcheck = docker_healthcheck_command()
            if healthcheck is None:
                report.fail("deploy/docker/Dockerfile: no exec-form HEALTHCHECK CMD found")
            elif not shutil.which(healthcheck[0]):
                report.info(f"Dockerfile HEALTHCHECK not run: no {healthcheck[0]} here")
            else:
                env = dict(server_env(), SOUK_LISTEN=f"0.0.0.0:{port}")
                result = subprocess.run(healthcheck, env=env, capture_output=True, text=True,
                                        timeout=10)
                if result.returncode == 0:
                    report.ok("Dockerfile HEALTHCHECK command passes against the server")
                else:
                    report.fail(f"Dockerfile HEALTHCHECK exited {result.returncode}: "
                                f"{result.stderr.strip()}")
        finally:
            stop(process)
        report.info(f"server stopped (exit {process.returncode})")
    return metrics


# --- 3. metrics -------------------------------------------------------------------------------


def promql_strings(node):
    if isinstance(node, dict):
        if node.get("type") == "datasource":
            return  # a Grafana data source variable: its query is a plugin id
        for key, value in node.items():
            if key in PROMQL_KEYS and isinstance(value, str):
                yield value
            else:
                yield from promql_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from promql_strings(item)


def exported_metrics(text):
    """Returns ({name: type} from # TYPE lines, {sample names})."""
    types, samples = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return types, samples


def metric_exists(name, types, samples):
    if name in types or name in samples:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            return True
    return False


def check_promql_syntax(report, expressions):
    """Parses the expressions if the optional `promql_parser` module (PyPI promql-parser) is
    installed. Grafana's $__rate_interval and $instance are replaced by a range and a regex."""
    try:
        import promql_parser
    except ImportError:
        report.info("PromQL syntax not checked (optional module promql_parser not installed)")
        return
    bad = parsed = 0
    for path, expression in expressions:
        if expression.startswith("label_values("):
            continue  # a Grafana variable query, not PromQL
        parsed += 1
        text = expression.replace("$__rate_interval", "5m").replace("$instance", ".*")
        try:
            promql_parser.parse(text)
        except Exception as e:  # the binding raises plain exceptions
            report.fail(f"{rel(path)}: PromQL does not parse ({e}): {expression}")
            bad += 1
    if not bad:
        report.ok(f"{parsed} PromQL expressions parse (promql_parser)")


def check_metrics(report, documents, metrics_text):
    report.section("metrics")
    referenced = {}
    sources = [p for p in documents if p.parent == DEPLOY / "grafana" and p.suffix == ".json"]
    sources += [p for p in documents if p.parent == DEPLOY / "prometheus"]
    expressions = [(path, e) for path in sources for e in promql_strings(documents[path])]
    check_promql_syntax(report, expressions)
    for path, expression in expressions:
        for name in METRIC_RE.findall(expression):
            referenced.setdefault(name, set()).add(rel(path))
        if re.search(r"(?<![\w:])up\b", expression):
            referenced.setdefault("up", set()).add(rel(path))
    if metrics_text is None:
        report.fail(f"{len(referenced)} metric names referenced, not checked: no /metrics")
        return
    types, samples = exported_metrics(metrics_text)
    for name in sorted(referenced):
        where = ", ".join(sorted(referenced[name]))
        if name in PROMETHEUS_OWN_METRICS:
            report.ok(f"{name} (Prometheus' own) in {where}")
        elif metric_exists(name, types, samples):
            report.ok(f"{name} in {where}")
        else:
            report.fail(f"{name} is not in the server's /metrics (used in {where})")
    used_bases = {re.sub(r"_(bucket|sum|count)$", "", n) for n in referenced}
    unused = sorted(n for n in types if n.startswith("souk_") and n not in used_bases)
    if unused:
        report.info(f"exported but used nowhere in deploy/: {', '.join(unused)}")


# --- 4. config --------------------------------------------------------------------------------


def check_config(report, server_bin):
    report.section("config")
    result = subprocess.run([server_bin, "--help"], capture_output=True, text=True,
                            env=server_env(), timeout=30)
    if result.returncode != 0:
        report.fail(f"`{server_bin} --help` exited {result.returncode}: {result.stderr.strip()}")
        return
    help_env = set(re.findall(r"\[env: (SOUK_[A-Z0-9_]+)=", result.stdout))
    help_flags = set(FLAG_RE.findall(result.stdout))
    report.info(f"--help lists {len(help_flags)} flags and {len(help_env)} SOUK_* variables")
    report.info("ignored variables: " + "; ".join(f"{k} ({v})" for k, v in IGNORED_ENV.items()))
    other = {flag: tool for tool, flags in OTHER_TOOLS_FLAGS.items() for flag in flags}
    report.info("other tools' flags, ignored: " + "; ".join(
        f"{tool}: {' '.join(sorted(flags))}" for tool, flags in OTHER_TOOLS_FLAGS.items()))

    env_uses, flag_uses = {}, {}
    for path, text in text_files():
        for name in ENV_RE.findall(text):
            env_uses.setdefault(name, set()).add(rel(path))
        for flag in FLAG_RE.findall(text):
            flag_uses.setdefault(flag, set()).add(rel(path))

    for name in sorted(env_uses):
        where = ", ".join(sorted(env_uses[name]))
        if name in IGNORED_ENV:
            continue
        prefix = name.endswith("_")  # "SOUK_GRPC_TLS_*" written as a family
        if name in help_env or (prefix and any(v.startswith(name) for v in help_env)):
            report.ok(f"{name}")
        else:
            report.fail(f"{name} is not a souk-server variable (in {where})")
    for flag in sorted(flag_uses):
        where = ", ".join(sorted(flag_uses[flag]))
        if flag in help_flags:
            report.ok(f"{flag}")
        elif flag not in other:
            report.fail(f"{flag} is not a souk-server flag (in {where}); if it belongs to "
                        "another tool, add it to OTHER_TOOLS_FLAGS")


# --- 5. helm ----------------------------------------------------------------------------------

ACTION_RE = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)
VALUES_RE = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
OPENERS = ("if", "with", "range", "define", "block")


def check_helm(report, documents):
    report.section("helm")
    for chart in sorted(p.parent for p in DEPLOY.glob("helm/*/Chart.yaml")):
        values_path = chart / "values.yaml"
        values = (documents.get(values_path) or [None])[0]
        if not isinstance(values, dict):
            report.fail(f"{rel(values_path)}: missing or not a mapping")
            continue
        for template in sorted((chart / "templates").glob("*")):
            text = template.read_text(encoding="utf-8")
            problems = 0
            stack = []
            for match in ACTION_RE.finditer(text):
                action = match.group(1)
                if action.startswith("/*"):
                    continue
                line = text.count("\n", 0, match.start()) + 1
                word = action.split(None, 1)[0] if action else ""
                if word in OPENERS:
                    stack.append((word, line))
                elif word == "end":
                    if not stack:
                        report.fail(f"{rel(template)}:{line}: {{{{ end }}}} without an opener")
                        problems += 1
                    else:
                        stack.pop()
                elif word == "else" and not stack:
                    report.fail(f"{rel(template)}:{line}: {{{{ else }}}} outside a block")
                    problems += 1
                for reference in VALUES_RE.findall(action):
                    node, path = values, []
                    for key in reference.strip(".").split("."):
                        path.append(key)
                        if not isinstance(node, dict):
                            break  # below a scalar or list: free-form, as values.yaml allows
                        if key not in node:
                            report.fail(f"{rel(template)}:{line}: .Values.{'.'.join(path)} "
                                        f"is not in {rel(values_path)}")
                            problems += 1
                            break
                        node = node[key]
            for word, line in stack:
                report.fail(f"{rel(template)}:{line}: {{{{ {word} }}}} has no {{{{ end }}}}")
                problems += 1
            if problems == 0:
                report.ok(f"{rel(template)}: blocks balanced, .Values references exist")
        helm = shutil.which("helm")
        if helm is None:
            report.info(f"no helm binary: `helm lint {rel(chart)}` not run")
            continue
        result = subprocess.run([helm, "lint", str(chart)], capture_output=True, text=True,
                                timeout=120)
        if result.returncode == 0:
            report.ok(f"helm lint {rel(chart)}")
        else:
            report.fail(f"helm lint {rel(chart)}:\n{result.stdout}{result.stderr}")


# --- 6. systemd -------------------------------------------------------------------------------


def check_systemd(report, server_bin):
    report.section("systemd")
    analyze = shutil.which("systemd-analyze")
    unit = DEPLOY / "systemd" / "souk-server.service"
    if analyze is None:
        report.info("no systemd-analyze here: the unit was not verified")
        return
    with tempfile.TemporaryDirectory(prefix="souk-unit-") as directory:
        copy = Path(directory) / unit.name
        text = unit.read_text(encoding="utf-8")
        text, count = re.subn(r"(?m)^(ExecStart=[-@:+!]*)\S+", lambda m: m.group(1) + server_bin,
                              text)
        if count != 1:
            report.fail(f"{rel(unit)}: expected one ExecStart= line, found {count}")
            return
        copy.write_text(text, encoding="utf-8")
        env = dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="cat")
        result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                                env=env, timeout=120)
        lines = (result.stdout + result.stderr).splitlines()
        about_unit = [l for l in lines if unit.name in l or directory in l]
        for line in lines:
            if line not in about_unit:
                report.info(f"systemd-analyze (not about this unit): {line}")
        if result.returncode != 0 or about_unit:
            report.fail(f"systemd-analyze verify exited {result.returncode}")
            for line in about_unit:
                print(f"        {line}")
        else:
            report.ok(f"systemd-analyze verify {rel(unit)} (ExecStart={server_bin})")
    result = subprocess.run([analyze, "security", "--offline=true", str(unit)],
                            capture_output=True, text=True, env=env, timeout=120)
    score = [l for l in result.stdout.splitlines() if "Overall exposure level" in l]
    if result.returncode == 0 and score:
        report.info(f"systemd-analyze security --offline=true: {score[0].lstrip('→ ').strip()}")
    else:
        report.info("systemd-analyze security --offline=true is not supported here "
                    f"(exit {result.returncode})")


# --- main -------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-bin", default=str(REPO / "target" / "debug" / "souk-server"),
                        help="the souk-server binary to check against (default: %(default)s)")
    parser.add_argument("--ready-timeout", type=float, default=60.0,
                        help="seconds to wait for /readyz (default: %(default)s)")
    args = parser.parse_args()
    server_bin = str(Path(args.server_bin).resolve())
    if not os.access(server_bin, os.X_OK):
        sys.exit(f"not an executable: {server_bin}")
    print(f"deploy kit {DEPLOY}\nserver     {server_bin}")

    report = Report()
    documents = check_parse(report)
    metrics = check_server(report, server_bin, args.ready_timeout)
    check_metrics(report, documents, metrics)
    check_config(report, server_bin)
    check_helm(report, documents)
    check_systemd(report, server_bin)
    return report.summary()


if __name__ == "__main__":
    sys.exit(main())

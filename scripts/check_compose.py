#!/usr/bin/env python3
"""Cross-check collector-config/docker-compose.yaml against the files it wires together
(Docker is not needed): required services exist; bind-mounted files exist; depends_on names
services; every host named in prometheus.yml scrape/alerting targets, the Grafana datasource
URLs, the Alertmanager webhooks and the bot's OTLP endpoint is a compose service; the ports
Prometheus scrapes are the ones the bot and the collector listen on.

Usage: check_compose.py COLLECTOR_CONFIG_DIR     check_compose.py --self-test
"""
import copy
import os
import re
import sys

import yaml

REQUIRED = ("otel-collector", "jaeger", "prometheus", "alertmanager", "grafana", "command-bot")


def load(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def check(cfg_dir, compose):
    errors = []
    services = compose.get("services") or {}
    for name in REQUIRED:
        if name not in services:
            errors.append(f"service {name!r} missing")
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else list(deps):
            if dep not in services:
                errors.append(f"{name}: depends_on unknown service {dep!r}")
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0]
            if src.startswith(".") and not os.path.exists(os.path.join(cfg_dir, src)):
                errors.append(f"{name}: bind mount source {src!r} does not exist")

    def host_ok(where, hostport):
        host = re.sub(r"^[a-z]+://", "", hostport).split("/")[0].split(":")[0]
        if host not in services and host not in ("localhost", "127.0.0.1"):
            errors.append(f"{where}: host {host!r} is not a compose service")

    prom = load(os.path.join(cfg_dir, "prometheus", "prometheus.yml"))
    targets = {}
    for job in prom.get("scrape_configs", []):
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                host_ok(f"prometheus.yml job {job['job_name']}", t)
                targets.setdefault(job["job_name"], []).append(t)
    for am in prom.get("alerting", {}).get("alertmanagers", []):
        for sc in am.get("static_configs", []):
            for t in sc.get("targets", []):
                host_ok("prometheus.yml alerting", t)
    bot_env = (services.get("command-bot") or {}).get("environment") or {}
    listen = str(bot_env.get("SPANMETRICS_PROMETHEUS_LISTEN", ""))
    for t in targets.get("spanmetrics-app", []):
        if not listen.endswith(":" + t.split(":")[-1]) or not listen.startswith("0.0.0.0"):
            errors.append(f"prometheus.yml scrapes {t} but command-bot listens on {listen!r}")
    otel = load(os.path.join(cfg_dir, "otelcol.yaml"))
    prom_exporter = str(otel.get("exporters", {}).get("prometheus", {}).get("endpoint", ""))
    for t in targets.get("otel-collector", []):
        if not prom_exporter.endswith(":" + t.split(":")[-1]):
            errors.append(f"prometheus.yml scrapes {t} but the collector's prometheus exporter is on {prom_exporter!r}")
    for key, value in bot_env.items():
        if key.startswith("OTEL_EXPORTER_OTLP") and key.endswith("ENDPOINT"):
            host_ok(f"command-bot {key}", str(value))
    ds = load(os.path.join(cfg_dir, "grafana", "provisioning", "datasources", "datasources.yml"))
    for d in ds.get("datasources", []):
        host_ok(f"grafana datasource {d.get('name')}", d.get("url", ""))
    am = load(os.path.join(cfg_dir, "alertmanager", "alertmanager.yml"))
    for r in am.get("receivers", []):
        for w in r.get("webhook_configs", []):
            host_ok(f"alertmanager receiver {r['name']}", w["url"])
    return errors


def self_test(cfg_dir):
    compose = load(os.path.join(cfg_dir, "docker-compose.yaml"))
    failures = []
    if check(cfg_dir, compose):
        failures.append(f"the real compose file is rejected: {check(cfg_dir, compose)}")
    cases = [
        ("missing service", lambda c: c["services"].pop("jaeger"), "host 'jaeger' is not a compose service"),
        ("bot port", lambda c: c["services"]["command-bot"]["environment"].update(SPANMETRICS_PROMETHEUS_LISTEN="127.0.0.1:9464"), "command-bot listens on"),
        ("bad mount", lambda c: c["services"]["grafana"]["volumes"].append("./grafana/dashbords:/x:ro"), "does not exist"),
        ("bad depends_on", lambda c: c["services"]["grafana"]["depends_on"].append("loki"), "unknown service 'loki'"),
    ]
    for name, edit, expected in cases:
        c = copy.deepcopy(compose)
        edit(c)
        errors = check(cfg_dir, c)
        if not any(expected in e for e in errors):
            failures.append(f"{name}: expected {expected!r}, got {errors}")
    for f in failures:
        print(f"check_compose self-test FAILED: {f}", file=sys.stderr)
    if not failures:
        print(f"check_compose self-test: the real file and {len(cases)} broken variants judged correctly")
    return 1 if failures else 0


def main(argv):
    if len(argv) == 2 and argv[0] == "--self-test":
        return self_test(argv[1])
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    errors = check(argv[0], load(os.path.join(argv[0], "docker-compose.yaml")))
    for e in errors:
        print(f"docker-compose.yaml: {e}", file=sys.stderr)
    if not errors:
        print("docker-compose.yaml: OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

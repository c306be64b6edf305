#!/usr/bin/env python3
"""Check the Grafana dashboard and the Prometheus rules against our metric names.

The metric names are read from src/names.rs (the `PROM_*` constants; `*_seconds` ones are
histograms with `_bucket`, `_count` and `_sum` series), so the dashboard and the rules cannot
drift from the library.

Dashboard (collector-config/grafana/dashboards/spanmetrics.json):
* the JSON parses; panel ids are unique; every panel has queries on the `prometheus` datasource;
* variables `service`, `instance` and `command` exist and are label_values() of our metrics;
* every panel and variable query uses only our metric names and our label names, and filters
  by `$service` and `$instance`; every metric family appears in some panel;
* the PromQL of every panel and variable, with variables substituted (`.*` for the template
  variables, `1m` for $__rate_interval), is written one expression per line to
  OUT/dashboard-queries.txt (evaluated later against a live Prometheus), to
  OUT/dashboard-queries.json with panel titles, and as recording rules to
  OUT/dashboard-queries.rules.yml so that `promtool check rules` parses every expression.

Rules (collector-config/prometheus/rules/*.yml): every metric an expression reads is one of
ours, `up`, or a series recorded by these rules.

Usage: check_dashboard.py DASHBOARD_JSON RULES_DIR OUT_DIR
       check_dashboard.py --self-test
"""
import glob
import json
import os
import re
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES_RS = os.path.join(REPO, "src", "names.rs")
LABELS = {"service", "instance", "job", "command", "outcome", "error_type", "mark", "metric", "le",
          "otel_metric_overflow"}
TEMPLATE_VARS = ("service", "instance", "command")
RATE_INTERVAL = "1m"
KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "inf", "nan", "atan2"}


def our_metrics(names_rs=NAMES_RS):
    """Metric names from src/names.rs, grouped by family."""
    with open(names_rs, encoding="utf-8") as fh:
        text = fh.read()
    families = {}
    for value in re.findall(r'pub const PROM_[A-Z_]+: &str = "([a-z_:]+)";', text):
        if value.endswith("_seconds"):
            families[value] = {value + s for s in ("_bucket", "_count", "_sum")}
        elif value in ("error_type", "otel_metric_overflow"):
            continue
        else:
            families[value] = {value}
    if len(families) < 6:
        raise SystemExit(f"{names_rs}: expected the six PROM_* metric names, found {sorted(families)}")
    return families


def substitute(expr):
    for var in TEMPLATE_VARS:
        expr = expr.replace("${%s}" % var, ".*").replace("$" + var, ".*")
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("${__rate_interval}", RATE_INTERVAL)


def names_in(expr):
    """(metric names, label names) an expression mentions. A small PromQL scanner, enough for
    selectors, aggregations, binary operators and function calls."""
    labels = set()
    for body in re.findall(r"\{([^{}]*)\}", expr):
        labels.update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"', body))
        names = re.findall(r'__name__\s*=\s*"([^"]*)"', body)
        if names:
            return set(names), labels
    rest = re.sub(r"\{[^{}]*\}", " ", expr)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", rest)

    def grouping(match):
        labels.update(l.strip() for l in match.group(2).split(",") if l.strip())
        return " "
    rest = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", grouping, rest)
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)
    metrics = set()
    for number, ident, call in re.findall(
            r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)|([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", rest):
        if number or not ident or call or ident.lower() in KEYWORDS:
            continue
        metrics.add(ident)
    return metrics, labels


def check_dashboard(dash, families, datasource_uids=("prometheus",)):
    """Return (errors, queries) where queries is a list of dicts {title, ref, expr, raw}."""
    errors, queries = [], []
    allowed = set().union(*families.values())
    seen_ids = set()
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    for var in TEMPLATE_VARS:
        if var not in variables:
            errors.append(f"variable ${var} missing")
    for name, var in variables.items():
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        match = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query or "")
        if not match:
            errors.append(f"variable ${name}: query is not label_values(<selector>, <label>): {query!r}")
            continue
        if match.group(2) not in LABELS:
            errors.append(f"variable ${name}: unknown label {match.group(2)!r}")
        queries.append({"title": f"variable ${name}", "ref": "", "raw": match.group(1), "expr": substitute(match.group(1))})
    panels = []
    for panel in dash.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    for panel in panels:
        title = panel.get("title", "?")
        if panel.get("id") in seen_ids:
            errors.append(f"panel {title!r}: duplicate id {panel.get('id')}")
        seen_ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            errors.append(f"panel {title!r}: no queries")
        for target in targets:
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            if uid not in datasource_uids:
                errors.append(f"panel {title!r} {target.get('refId')}: datasource uid {uid!r} is not provisioned")
            raw = target.get("expr", "")
            if not raw.strip():
                errors.append(f"panel {title!r} {target.get('refId')}: empty expression")
                continue
            for var in ("service", "instance"):
                if "$" + var not in raw:
                    errors.append(f"panel {title!r} {target.get('refId')}: does not filter by ${var}")
            queries.append({"title": title, "ref": target.get("refId", ""), "raw": raw, "expr": substitute(raw)})
    used = set()
    for q in queries:
        if "$" in q["expr"]:
            errors.append(f"{q['title']} {q['ref']}: unsubstituted variable in {q['expr']!r}")
        metrics, labels = names_in(q["expr"])
        if not metrics:
            errors.append(f"{q['title']} {q['ref']}: no metric name found in {q['expr']!r}")
        for m in sorted(metrics - allowed):
            errors.append(f"{q['title']} {q['ref']}: {m!r} is not one of our metric names")
        for l in sorted(labels - LABELS):
            errors.append(f"{q['title']} {q['ref']}: {l!r} is not one of our label names")
        used |= metrics
    for family, members in sorted(families.items()):
        if not used & members:
            errors.append(f"no panel shows {family}")
    return errors, queries


def check_rules(paths, families):
    errors = []
    allowed = set().union(*families.values()) | {"up"}
    groups = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        groups += [(path, g) for g in doc.get("groups", [])]
    recorded = {r["record"] for _, g in groups for r in g.get("rules", []) if "record" in r}
    for path, group in groups:
        for rule in group.get("rules", []):
            metrics, _ = names_in(rule.get("expr", ""))
            for m in sorted(metrics - allowed - recorded):
                errors.append(f"{path}: {rule.get('record') or rule.get('alert')}: {m!r} is not one of our metric names")
    return errors


def write_outputs(queries, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    flat = [" ".join(q["expr"].split()) for q in queries]
    with open(os.path.join(out_dir, "dashboard-queries.txt"), "w", encoding="utf-8") as fh:
        fh.write("".join(e + "\n" for e in flat))
    with open(os.path.join(out_dir, "dashboard-queries.json"), "w", encoding="utf-8") as fh:
        json.dump([{"title": q["title"], "ref": q["ref"], "expr": e} for q, e in zip(queries, flat)], fh, indent=2)
    rules = {"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(flat)]}]}
    with open(os.path.join(out_dir, "dashboard-queries.rules.yml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump(rules, fh, sort_keys=False, width=10000)


def self_test():
    families = our_metrics()
    good = {"templating": {"list": [
        {"name": v, "query": {"query": 'label_values(command_duration_seconds_count{service=~"$service"}, %s)' % v}}
        for v in TEMPLATE_VARS]}, "panels": []}
    for i, expr in enumerate([
            'sum by (command) (rate(command_duration_seconds_count{service=~"$service", instance=~"$instance"}[$__rate_interval]))',
            'histogram_quantile(0.95, sum by (le) (rate(command_duration_seconds_bucket{service=~"$service", instance=~"$instance"}[5m])))',
            'sum(rate(command_duration_seconds_sum{service=~"$service", instance=~"$instance"}[1m])) / 1e3',
            'sum(rate(command_busy_seconds_sum{service=~"$service",instance=~"$instance"}[1m]))',
            'sum(command_active{service=~"$service",instance=~"$instance"})',
            'sum by (mark, le) (rate(command_mark_seconds_bucket{service=~"$service",instance=~"$instance"}[1m]))',
            'sum(rate(spanmetrics_overflow_records_total{service=~"$service",instance=~"$instance"}[1m]))',
            'sum(rate(spanmetrics_dropped_records_total{service=~"$service",instance=~"$instance"}[1m]))']):
        good["panels"].append({"id": i, "type": "timeseries", "title": f"p{i}", "datasource": {"uid": "prometheus"},
                               "targets": [{"refId": "A", "expr": expr}]})
    failures = []
    errors, queries = check_dashboard(good, families)
    if errors:
        failures.append(f"valid dashboard rejected: {errors}")
    if not any("[1m]" in q["expr"] and ".*" in q["expr"] for q in queries):
        failures.append("variables were not substituted")
    cases = [
        ("unknown metric", lambda d: d["panels"][0]["targets"][0].update(expr='sum(rate(command_duration_total{service=~"$service",instance=~"$instance"}[1m]))'), "'command_duration_total' is not one of our metric names"),
        ("OTel spelling", lambda d: d["panels"][4]["targets"][0].update(expr='sum(command_active_total{service=~"$service",instance=~"$instance"}) or sum(command_active{service=~"$service",instance=~"$instance"})'), "'command_active_total' is not one of our"),
        ("unknown label", lambda d: d["panels"][0]["targets"][0].update(expr='sum by (error_kind) (rate(command_duration_seconds_count{service=~"$service",instance=~"$instance"}[1m]))'), "'error_kind' is not one of our label names"),
        ("no instance filter", lambda d: d["panels"][1]["targets"][0].update(expr='sum(rate(command_duration_seconds_bucket{service=~"$service"}[1m]))'), "does not filter by $instance"),
        ("missing variable", lambda d: d["templating"]["list"].pop(), "variable $command missing"),
        ("unknown datasource", lambda d: d["panels"][2].update(datasource={"uid": "loki"}), "datasource uid 'loki'"),
        ("family not shown", lambda d: d["panels"].pop(), "no panel shows spanmetrics_dropped_records_total"),
        ("duplicate panel id", lambda d: d["panels"][1].update(id=0), "duplicate id"),
        ("variable not label_values", lambda d: d["templating"]["list"][0].update(query="query_result(up)"), "is not label_values"),
    ]
    for name, edit, expected in cases:
        dash = json.loads(json.dumps(good))
        edit(dash)
        errors, _ = check_dashboard(dash, families)
        if not any(expected in e for e in errors):
            failures.append(f"{name}: expected an error containing {expected!r}, got {errors}")
    for failure in failures:
        print(f"check_dashboard self-test FAILED: {failure}", file=sys.stderr)
    if not failures:
        print(f"check_dashboard self-test: 1 valid and {len(cases)} broken dashboards judged correctly")
    return 1 if failures else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    dash_path, rules_dir, out_dir = argv
    families = our_metrics()
    try:
        with open(dash_path, encoding="utf-8") as fh:
            dash = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"{dash_path}: {exc}", file=sys.stderr)
        return 1
    errors, queries = check_dashboard(dash, families)
    errors = [f"{dash_path}: {e}" for e in errors]
    errors += check_rules(sorted(glob.glob(os.path.join(rules_dir, "*.yml"))), families)
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 1
    write_outputs(queries, out_dir)
    print(f"{dash_path}: OK, {len(queries)} queries written to {os.path.join(out_dir, 'dashboard-queries.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

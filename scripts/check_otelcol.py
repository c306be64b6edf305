#!/usr/bin/env python3
"""Static check of OpenTelemetry Collector configuration files.

The Collector binary is not available everywhere the tests run, so this checks what it would
reject (or what would silently do nothing) without it:

* the file is YAML with a `service.pipelines` mapping;
* component ids are `type` or `type/name`; pipeline ids are `traces|metrics|logs|profiles[/name]`;
* every pipeline has receivers and exporters, and names only receivers, processors, exporters
  and connectors defined in the same file (connectors may be pipeline receivers or exporters);
* every connector is used as an exporter in one pipeline and as a receiver in another;
* `service.extensions` names only defined extensions;
* no component is defined and left unused (usually a typo in a pipeline);
* no component is listed twice in one pipeline; `memory_limiter` comes first among processors.

Usage: check_otelcol.py FILE...      exit 1 and one line per problem if any file is wrong
       check_otelcol.py --self-test  checks that broken configurations are rejected
"""
import re
import sys
import tempfile
import os

import yaml

SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
COMPONENT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[^/\s]+)?$")
PIPELINE_ID = re.compile(r"^(traces|metrics|logs|profiles)(/[^/\s]+)?$")


def check_config(doc):
    """Return a list of problems found in one parsed configuration."""
    errors = []
    if not isinstance(doc, dict):
        return ["top level is not a mapping"]
    defined = {}
    for section in SECTIONS:
        value = doc.get(section)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors.append(f"`{section}` is not a mapping")
            value = {}
        for cid in value:
            if not isinstance(cid, str) or not COMPONENT_ID.match(cid):
                errors.append(f"{section}: invalid component id {cid!r}")
        defined[section] = set(k for k in value if isinstance(k, str))
    for key in doc:
        if key not in SECTIONS and key != "service":
            errors.append(f"unknown top-level key {key!r}")

    service = doc.get("service")
    if not isinstance(service, dict):
        return errors + ["`service` section missing or not a mapping"]
    pipelines = service.get("pipelines")
    if not isinstance(pipelines, dict) or not pipelines:
        return errors + ["`service.pipelines` missing or empty"]

    used = {section: set() for section in SECTIONS}
    connector_as_exporter, connector_as_receiver = set(), set()
    for pid, pipeline in pipelines.items():
        where = f"pipeline {pid!r}"
        if not isinstance(pid, str) or not PIPELINE_ID.match(pid):
            errors.append(f"{where}: id must be traces|metrics|logs|profiles[/name]")
        if not isinstance(pipeline, dict):
            errors.append(f"{where}: not a mapping")
            continue
        for key in pipeline:
            if key not in ("receivers", "processors", "exporters"):
                errors.append(f"{where}: unknown key {key!r}")
        lists = {}
        for key in ("receivers", "processors", "exporters"):
            value = pipeline.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors.append(f"{where}: `{key}` is not a list of component ids")
                value = []
            dupes = sorted(set(v for v in value if value.count(v) > 1))
            if dupes:
                errors.append(f"{where}: {key} listed twice: {', '.join(dupes)}")
            lists[key] = value
        for key in ("receivers", "exporters"):
            if not lists[key]:
                errors.append(f"{where}: no {key}")
        for rid in lists["receivers"]:
            if rid in defined["receivers"]:
                used["receivers"].add(rid)
            elif rid in defined["connectors"]:
                used["connectors"].add(rid)
                connector_as_receiver.add(rid)
            else:
                errors.append(f"{where}: receiver {rid!r} is not defined under `receivers` or `connectors`")
        for xid in lists["processors"]:
            if xid in defined["processors"]:
                used["processors"].add(xid)
            else:
                errors.append(f"{where}: processor {xid!r} is not defined under `processors`")
        procs = lists["processors"]
        limiters = [i for i, p in enumerate(procs) if p.split("/")[0] == "memory_limiter"]
        if limiters and limiters[0] != 0:
            errors.append(f"{where}: memory_limiter must be the first processor")
        for eid in lists["exporters"]:
            if eid in defined["exporters"]:
                used["exporters"].add(eid)
            elif eid in defined["connectors"]:
                used["connectors"].add(eid)
                connector_as_exporter.add(eid)
            else:
                errors.append(f"{where}: exporter {eid!r} is not defined under `exporters` or `connectors`")

    for cid in sorted(defined["connectors"]):
        if cid in used["connectors"] and (cid not in connector_as_exporter or cid not in connector_as_receiver):
            errors.append(f"connector {cid!r} must be an exporter of one pipeline and a receiver of another")

    extensions = service.get("extensions") or []
    if not isinstance(extensions, list):
        errors.append("`service.extensions` is not a list")
        extensions = []
    for ext in extensions:
        if ext in defined["extensions"]:
            used["extensions"].add(ext)
        else:
            errors.append(f"service.extensions: {ext!r} is not defined under `extensions`")

    for section in SECTIONS:
        for cid in sorted(defined[section] - used[section]):
            errors.append(f"{section}: {cid!r} is defined but not used by any pipeline")
    return errors


def check_file(path):
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        return [f"cannot read YAML: {exc}".replace("\n", " ")]
    return check_config(doc)


GOOD = """
receivers: {otlp: {protocols: {grpc: {endpoint: 0.0.0.0:4317}}}}
processors: {memory_limiter: {check_interval: 1s, limit_percentage: 80}, batch: {}}
exporters: {debug: {}, otlp/jaeger: {endpoint: jaeger:4317}}
connectors: {forward: {}}
extensions: {health_check: {}}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], processors: [memory_limiter, batch], exporters: [forward]}
    traces/out: {receivers: [forward], exporters: [otlp/jaeger, debug]}
"""

# (description, edit of GOOD, text the error must contain)
BROKEN = [
    ("undefined processor", lambda s: s.replace("processors: [memory_limiter, batch]", "processors: [memory_limiter, batch, attributes]"), "processor 'attributes' is not defined"),
    ("undefined exporter", lambda s: s.replace("exporters: [otlp/jaeger, debug]", "exporters: [otlp/jaegr, debug]"), "exporter 'otlp/jaegr' is not defined"),
    ("undefined receiver", lambda s: s.replace("receivers: [otlp]", "receivers: [otlp/http]"), "receiver 'otlp/http' is not defined"),
    ("undefined extension", lambda s: s.replace("extensions: [health_check]", "extensions: [health_check, pprof]"), "'pprof' is not defined"),
    ("unused exporter", lambda s: s.replace("exporters: [otlp/jaeger, debug]", "exporters: [otlp/jaeger]"), "'debug' is defined but not used"),
    ("connector used one way only", lambda s: s.replace("traces/out: {receivers: [forward], exporters: [otlp/jaeger, debug]}", "traces/out: {receivers: [otlp], exporters: [otlp/jaeger, debug]}"), "connector 'forward' must be"),
    ("bad pipeline type", lambda s: s.replace("traces/out:", "spans/out:"), "id must be traces"),
    ("pipeline without exporters", lambda s: s.replace("exporters: [otlp/jaeger, debug]", "exporters: []").replace("exporters: {debug: {}, otlp/jaeger: {endpoint: jaeger:4317}}", "exporters: {}"), "no exporters"),
    ("memory_limiter not first", lambda s: s.replace("[memory_limiter, batch]", "[batch, memory_limiter]"), "memory_limiter must be the first"),
    ("duplicate in list", lambda s: s.replace("[memory_limiter, batch]", "[memory_limiter, batch, batch]"), "listed twice"),
    ("no service", lambda s: s.split("service:")[0], "`service` section missing"),
    ("not YAML", lambda s: s + "\n  : [unclosed\n", "cannot read YAML"),
]


def self_test():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        def run(text):
            path = os.path.join(tmp, "otelcol.yaml")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            return check_file(path)
        errors = run(GOOD)
        if errors:
            failures.append(f"valid config rejected: {errors}")
        for name, edit, expected in BROKEN:
            text = edit(GOOD)
            if text == GOOD:
                failures.append(f"{name}: the edit did not change the config (test is broken)")
                continue
            errors = run(text)
            if not any(expected in e for e in errors):
                failures.append(f"{name}: expected an error containing {expected!r}, got {errors}")
    for failure in failures:
        print(f"check_otelcol self-test FAILED: {failure}", file=sys.stderr)
    if not failures:
        print(f"check_otelcol self-test: 1 valid and {len(BROKEN)} broken configurations judged correctly")
    return 1 if failures else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    status = 0
    for path in argv:
        errors = check_file(path)
        for error in errors:
            print(f"{path}: {error}", file=sys.stderr)
        if errors:
            status = 1
        else:
            print(f"{path}: OK")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

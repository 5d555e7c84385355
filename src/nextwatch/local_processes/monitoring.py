"""The demo's Prometheus config and Grafana provisioning, derived from the compose stack's own.

deploy/prometheus/prometheus.yml stays the one source of the scrape jobs and rule files. The
demo rewrites every target the compose stack names by its service (``api:5000``) to the address
where the demo runs that part (``127.0.0.1:5000``), drops the jobs of parts it does not run, and
makes the rule files' paths absolute (Prometheus reads them relative to the config file, and the
demo writes its copy elsewhere). Everything else (intervals, metrics paths, the alert rules) is
kept as it is.

Grafana's provisioning names Prometheus and the dashboards folder by their compose addresses
(``http://prometheus:9090``, the ``/etc/grafana/dashboards`` mount); the demo's copy names the
local ones.

The Prometheus config is rewritten on the text, line by line, because PyYAML is not among the
service's dependencies. That understands the shapes the file uses (``targets: ["host:port"]``
flow lists, a block list of rule files) and stops with a message on anything else;
tests/test_demo.py checks the result against a real YAML parse of the original.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Mapping

_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*):")
_JOB = re.compile(r"^(\s*)-\s+job_name:\s*['\"]?([^'\"\s#]+)")
_TARGETS = re.compile(r"^(\s*(?:-\s+)?targets:\s*)\[([^\]]*)\](.*)$")
_LIST_ITEM = re.compile(r"^(\s*-\s+)(['\"]?)([^'\"#\s]+)\2(.*)$")


class PrometheusConfigError(ValueError):
    """The compose config has a shape the demo cannot rewrite; the message says where."""


@dataclasses.dataclass(frozen=True)
class LocalConfig:
    text: str
    dropped: dict[str, list[str]]  # job name -> the compose targets it had, for the jobs left out


def local_config(text: str, addresses: Mapping[str, str], rules_dir: Path) -> LocalConfig:
    """``text`` with each target in ``addresses`` (compose ``host:port`` -> local ``host:port``)
    rewritten, every job without a local target dropped, and rule files under ``rules_dir``."""
    out: list[str] = []
    dropped: dict[str, list[str]] = {}
    section = None
    job: list[str] = []

    def end_job() -> None:
        if not job:
            return
        # Comments and blank lines after a job's last key introduce the next one: keep them
        # out of the job, so that dropping a job does not drop its successor's comment.
        indent = len(_JOB.match(job[0]).group(1))
        trailer = []
        while len(job) > 1 and _is_note(job[-1], indent):
            trailer.insert(0, job.pop())
        name, targets, rewritten = _rewrite_job(job, addresses)
        if rewritten is None:
            dropped[name] = targets
        else:
            out.extend(rewritten)
        out.extend(trailer)
        job.clear()

    for line in text.splitlines():
        top = _TOP_KEY.match(line)
        if top:
            end_job()
            section = top.group(1)
            if section == "rule_files" and line.split(":", 1)[1].split("#")[0].strip():
                raise PrometheusConfigError("rule_files must be a block list (one `- file` a line)")
            out.append(line)
        elif section == "scrape_configs" and (_JOB.match(line) or job):
            if _JOB.match(line):
                end_job()
            job.append(line)
        elif section == "rule_files" and _LIST_ITEM.match(line):
            lead, _quote, path, rest = _LIST_ITEM.match(line).groups()
            out.append(f"{lead}{json.dumps(str(rules_dir / path))}{rest}")
        else:
            out.append(line)
    end_job()
    return LocalConfig(text="\n".join(out) + "\n", dropped=dropped)


def _is_note(line: str, job_indent: int) -> bool:
    stripped = line.strip()
    return not stripped or (stripped.startswith("#") and len(line) - len(line.lstrip()) <= job_indent)


def _rewrite_job(lines: list[str], addresses: Mapping[str, str]) -> tuple[str, list[str], list[str] | None]:
    """(job name, its compose targets, its lines with local targets, or None to drop it)."""
    name = _JOB.match(lines[0]).group(2)
    targets: list[str] = []
    local: list[str] = []
    rewritten = []
    for line in lines:
        match = _TARGETS.match(line)
        if match is None:
            rewritten.append(line)
            continue
        lead, items, rest = match.groups()
        mine = [item.strip().strip("'\"") for item in items.split(",") if item.strip()]
        targets += mine
        kept = [addresses[target] for target in mine if target in addresses]
        local += kept
        rewritten.append(f"{lead}[{', '.join(json.dumps(address) for address in kept)}]{rest}")
    if not targets:
        raise PrometheusConfigError(f"scrape job {name}: no `targets: [\"host:port\", ...]` line to rewrite")
    return name, targets, (rewritten if local else None)


# The addresses deploy/grafana/provisioning uses in the compose stack (docker-compose.yml).
COMPOSE_PROMETHEUS_URL = "http://prometheus:9090"
COMPOSE_DASHBOARDS_DIR = "/etc/grafana/dashboards"


def grafana_provisioning(source: Path, out: Path, prometheus_url: str, dashboards_dir: Path) -> Path:
    """Copy ``source`` (deploy/grafana/provisioning) to ``out`` with local addresses."""
    for path in sorted(source.rglob("*.yml")):
        text = path.read_text()
        for compose, local in ((COMPOSE_PROMETHEUS_URL, prometheus_url), (COMPOSE_DASHBOARDS_DIR, str(dashboards_dir))):
            text = text.replace(compose, local)
        target = out / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return out

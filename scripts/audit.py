"""Audit the pinned dependencies (constraints.txt) for known vulnerabilities with pip-audit.

Exit status: 1 when a pinned version has a known vulnerability (each one is listed with its
advisory and the versions that fix it), 0 when none is known, and also 0 when no
vulnerability source could be reached: then it says plainly that the audit did not run and
why, so that a machine without network access does not fail CI for that reason alone.

Sources are tried in order: PyPI's JSON API, then OSV. A source counts as unreachable when
pip-audit cannot connect to it, or when it cannot look up a single pinned package (a mirror
that serves packages but not their vulnerability data answers 404 for every version).

Usage: python scripts/audit.py [REQUIREMENTS_FILE]   (default: constraints.txt)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

SERVICES = ("pypi", "osv")
TIMEOUT_SECONDS = 15  # per request; a source that does not answer fails fast


def audit(requirements: Path, service: str) -> tuple[dict | None, str]:
    """pip-audit's JSON report for ``requirements`` from ``service``, or None and why not."""
    with tempfile.TemporaryDirectory(prefix="nextwatch-audit-") as scratch:
        report = Path(scratch) / "report.json"
        # Every line of constraints.txt is pinned: no resolving, no pip, no package downloads.
        command = [sys.executable, "-m", "pip_audit", "--requirement", str(requirements), "--no-deps",
                   "--disable-pip", "--vulnerability-service", service, "--timeout", str(TIMEOUT_SECONDS),
                   "--progress-spinner", "off", "--format", "json", "--output", str(report)]
        result = subprocess.run(command, capture_output=True, text=True)
        if report.exists() and report.stat().st_size:
            return json.loads(report.read_text()), ""
        lines = [line for line in (result.stderr + result.stdout).splitlines()
                 if line.strip() and "encouraged to fully hash" not in line and "pip-compile" not in line]
        return None, (lines[-1] if lines else f"pip-audit exited with status {result.returncode}")


def main(argv: list[str]) -> int:
    requirements = Path(argv[1] if len(argv) > 1 else "constraints.txt")
    if not requirements.is_file():
        print(f"audit: {requirements} does not exist", file=sys.stderr)
        return 2
    problems = []
    for service in SERVICES:
        report, problem = audit(requirements, service)
        if report is None:
            problems.append(f"{service}: {problem}")
            continue
        dependencies = report.get("dependencies", [])
        audited = [d for d in dependencies if "skip_reason" not in d]
        skipped = [d for d in dependencies if "skip_reason" in d]
        if not audited:
            reason = skipped[0]["skip_reason"] if skipped else "no dependencies in the report"
            problems.append(f"{service}: could not look up any of the {len(skipped)} pinned packages "
                            f"(first answer: {reason})")
            continue
        vulnerable = [d for d in audited if d.get("vulns")]
        for dependency in vulnerable:
            for vulnerability in dependency["vulns"]:
                fixes = ", ".join(vulnerability.get("fix_versions") or []) or "no fixed version yet"
                aliases = ", ".join(vulnerability.get("aliases") or [])
                print(f"VULNERABLE {dependency['name']}=={dependency['version']}: {vulnerability['id']}"
                      f"{f' ({aliases})' if aliases else ''}; fixed in: {fixes}")
        if skipped:
            names = ", ".join(f"{d['name']} ({d['skip_reason']})" for d in skipped)
            print(f"audit: {len(skipped)} pinned packages could not be looked up on {service}: {names}")
        if vulnerable:
            count = sum(len(d["vulns"]) for d in vulnerable)
            print(f"audit FAILED: {count} known vulnerabilities in {len(vulnerable)} of the {len(audited)} "
                  f"pinned packages audited against {service}; raise the pins in {requirements}")
            return 1
        print(f"audit: no known vulnerabilities in the {len(audited)} pinned packages of {requirements} "
              f"(source: {service})")
        return 0
    print(f"audit DID NOT RUN: no vulnerability source could be reached, so {requirements} was not "
          "audited. " + "; ".join(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

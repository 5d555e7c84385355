"""What `nextwatch demo` prints once everything answers: the URLs, the processes, what it skipped.

The lines have fixed shapes (``  <label>  <URL>  <what to look at>``, ``  <name>  pid <N>  ...``)
so that a reader, and tests/test_demo.py, can pick them out.
"""

from __future__ import annotations

from .parts import Part, Skipped
from .redis_server import RedisServer

CURL_EXAMPLES = """\
nextwatch is serving on http://localhost:{port}  (Redis: {redis_url}, model version {version})
Try, in another terminal:
  curl -X POST http://localhost:{port}/watched -H "Content-Type: application/json" \\
       -d '{{"user_id": "U999", "content_id": "C1010"}}'
  curl http://localhost:{port}/recommend/U999
  curl http://localhost:{port}/recommend/U1234
  curl http://localhost:{port}/metrics
Press Ctrl-C to stop everything.
"""

# The order of the URL lines: what a visitor opens first comes first.
_URL_ORDER = ["API", "page", "metrics", "Prometheus UI", "Grafana", "JupyterLab", "Spark master UI",
              "Spark worker UI", "redis_exporter"]

KEY_HINT = """\
API keys are configured in this Redis: add -H "Authorization: Bearer <key>" to the POST
(`nextwatch keys list` names them; `nextwatch keys add NAME --role write` makes a new one).
"""


def print_summary(port: int, running: list[Part], skipped: list[Skipped],
                  dropped: dict[str, list[str]], pids: dict[str, int], redis, version: int,
                  keys_configured: bool) -> None:
    lines = ["", "URLs (every part listens on 127.0.0.1 only):"]
    urls = sorted((url for part in running for url in part.urls),
                  key=lambda url: _URL_ORDER.index(url[0]) if url[0] in _URL_ORDER else len(_URL_ORDER))
    width = max(len(label) for label, _url, _what in urls)
    url_width = max((len(url) for _label, url, _what in urls if len(url) < 60), default=0)  # not Jupyter's
    lines += [f"  {label:<{width}}  {url:<{url_width}}  {what}" for label, url, what in urls]

    lines += ["", "processes (Ctrl-C stops them all):", *_redis_lines(redis)]
    for part in running:
        output = f"log {part.log}" if part.log else "output here"
        lines.append(f"  {part.name:<14}  pid {pids[part.name]:<7}  {_program(part.command)}; {output}")

    if skipped or dropped:
        lines += ["", "not running here:"]
        lines += [f"  {part.name:<14}  {part.reason}" for part in skipped]
        for job, targets in dropped.items():
            lines.append(f"  {'prometheus':<14}  job {job} ({', '.join(targets)}) dropped: nothing serves it here")
    print("\n".join(lines) + "\n", flush=True)

    examples = CURL_EXAMPLES.format(port=port, redis_url=redis.url, version=version)
    if keys_configured:
        examples = examples.replace("Press Ctrl-C", KEY_HINT + "Press Ctrl-C")
    print(examples, flush=True)


def _redis_lines(redis) -> list[str]:
    if isinstance(redis, RedisServer):
        return [f"  {'redis-server':<14}  pid {redis.process.pid:<7}  {redis.url}, data in {redis.data_dir} (AOF on)"]
    return [f"  {'redis-cluster':<14}  {len(redis.nodes())} nodes  {redis.url}, data in {redis.base_dir} (AOF on)"]


def _program(command: list[str]) -> str:
    """`nextwatch train --every 15m ...`, `spark-class ...Master`, `prometheus`: what the process is."""
    if command[1:3] == ["-m", "nextwatch.cli"]:
        return " ".join(["nextwatch", *command[3:]])
    name = command[0].rsplit("/", 1)[-1]
    return f"{name} {command[1]}" if len(command) > 1 and not command[1].startswith("-") else name

"""What the demo prints every few minutes: how often the API's answers showed a title out for at
most a day, read from its /metrics."""

from __future__ import annotations

import time
import urllib.request


class NewTitleReport:
    """Prints, when the API has answered since the last time, how many answers showed a title
    out for at most a day (the API's counters recommendation_answers and
    new_title_recommendations, summed over its workers)."""

    def __init__(self, port: int, every_seconds: float):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every_seconds = every_seconds
        self.next_at = time.monotonic() + every_seconds
        self.answers = 0.0

    def maybe_print(self) -> None:
        if time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + self.every_seconds
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return
        answers, new = _counter(text, "recommendation_answers_total"), _counter(text, "new_title_recommendations_total")
        if answers > self.answers:
            self.answers = answers
            print(f"new titles (out for at most a day) were in {new:.0f} of {answers:.0f} answers "
                  f"({new / answers:.1%}) since the API started", flush=True)


def _counter(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0

"""Reading text data files line by line while keeping account of the bad rows."""

from __future__ import annotations

from typing import Iterator


class Problems:
    """Bad rows: all counted, the first ``limit`` kept as (line number, rule broken)."""

    def __init__(self, limit: int):
        self.limit, self.kept, self.count = limit, [], 0

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.kept) < self.limit:
            self.kept.append((line, reason))


class NumberedLines:
    """Lines of a text file that remember the number of the last one handed out (for the csv
    module, whose records may span lines)."""

    def __init__(self, f):
        self.f, self.number = f, 0

    def __iter__(self) -> Iterator[str]:
        for self.number, line in enumerate(self.f, 1):
            yield line

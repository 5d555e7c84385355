"""Readers for MovieLens title files: u.item (``movielens-100k``), movies.dat
(``movielens-1m``) and movies.csv (``movielens-csv``), the names and genres that the catalog
shows. Bad rows are counted and kept with their line numbers, as for event files."""

from __future__ import annotations

import csv
import dataclasses
import os
import re

from .lines import NumberedLines, Problems
from .readers import MAX_PROBLEMS

__all__ = ["TITLE_FORMATS", "TitlesResult", "read_titles"]

TITLE_FORMATS = ("movielens-100k", "movielens-1m", "movielens-csv")
# The genre flags of ml-100k's u.item, in column order (u.genre); "unknown" means none.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                 "Thriller", "War", "Western")
_TITLE_RULES = {"movielens-100k": "expected 24 '|'-separated fields: a content id, ..., 19 genre flags of 0 or 1",
                "movielens-1m": "expected 3 '::'-separated fields: a content id, the title, the genres",
                "movielens-csv": "expected 3 fields: a content id, the title, the genres"}
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


@dataclasses.dataclass(frozen=True)
class TitlesResult:
    titles: list[dict]  # {"content_id": str, "name": str, "genres": [str], "year": int | None}
    problems: list[tuple[int, str]]
    problem_count: int


def read_titles(path: str | os.PathLike, fmt: str, max_problems: int = MAX_PROBLEMS) -> TitlesResult:
    """Read a MovieLens title file: u.item (``movielens-100k``), movies.dat (``movielens-1m``)
    or movies.csv (``movielens-csv``). The year is taken off the end of the name."""
    if fmt not in TITLE_FORMATS:
        raise ValueError(f"title format must be one of {', '.join(TITLE_FORMATS)}, got {fmt!r}")
    problems = Problems(max_problems)
    titles = []
    encoding = "utf-8" if fmt == "movielens-csv" else "latin-1"
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        lines = NumberedLines(f)
        if fmt == "movielens-csv":
            rows = csv.reader(lines)
            header = next(rows, None)
            if header is None or header[:3] != ["movieId", "title", "genres"]:
                raise ValueError(f"{path}: movies.csv must start with the header movieId,title,genres")
        else:
            rows = (line.rstrip("\r\n").split("|" if fmt == "movielens-100k" else "::") for line in lines)
        for fields in rows:
            if fields in ([], [""]):
                continue
            if fmt == "movielens-100k":
                ok = len(fields) == 5 + len(ML100K_GENRES) and all(x in ("0", "1") for x in fields[5:])
                genres = [g for g, flag in zip(ML100K_GENRES[1:], fields[6:]) if flag == "1"] if ok else []
            else:
                ok = len(fields) == 3
                genres = [g for g in fields[2].split("|") if g and g != "(no genres listed)"] if ok else []
            if not ok or not fields[0]:
                problems.add(lines.number, _TITLE_RULES[fmt])
                continue
            name, year = _name_and_year(fields[1])
            if year is None and fmt == "movielens-100k" and fields[2][-4:].isdigit():
                year = int(fields[2][-4:])  # the release date, e.g. 01-Jan-1995
            titles.append({"content_id": fields[0], "name": name, "genres": genres, "year": year})
    return TitlesResult(titles, problems.kept, problems.count)


def _name_and_year(title: str) -> tuple[str, int | None]:
    match = _TITLE_YEAR.match(title)
    return (match.group(1), int(match.group(2))) if match else (title.strip(), None)

"""The demo catalog: made-up films and series, with ids ``C000``, ``C001`` ... in catalog order.

A series is a run of consecutive ids, its episodes in watching order, so "the next episode" of
``C0123`` is simply ``C0124`` when both belong to the same series. ``demo_viewers`` relies on
that, and on catalog order being popularity order (lower id, more popular).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .demo_dataset import DemoConfig

# Genre and how common it is among titles; viewers' tastes average to the same shares.
GENRE_SHARES = {
    "Drama": 0.17, "Comedy": 0.14, "Thriller": 0.10, "Crime": 0.09, "Action": 0.09,
    "Sci-Fi": 0.07, "Romance": 0.07, "Documentary": 0.06, "Animation": 0.05, "Family": 0.05,
    "Fantasy": 0.05, "Horror": 0.06,
}
GENRES = list(GENRE_SHARES)

_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Hidden", "Last", "Crimson", "Quiet", "Wild", "Distant",
    "Burning", "Frozen", "Lost", "Midnight", "Hollow", "Bright", "Secret", "Restless", "Iron",
    "Velvet", "Paper", "Electric", "Lonely", "Northern", "Sunken", "Glass", "Fading",
)
_NOUNS = (
    "Harbor", "Shift", "Garden", "Signal", "River", "Empire", "Witness", "Orchard", "Frontier",
    "Letter", "Station", "Kingdom", "Mirror", "Horizon", "Promise", "Island", "Engine", "Archive",
    "Summer", "Lantern", "Compass", "Circus", "Valley", "Tide", "Crown", "Echo",
)
_PLACES = (
    "Avalon", "Brooklyn", "the North", "Marseille", "the Deep", "Kyoto", "Lagos", "the Dunes",
    "Oslo", "the Valley", "Havana", "the Moon",
)

# About 8% of catalog runs are series; with 3-12 episodes each that makes ~40% of titles episodes.
SERIES_START_PROBABILITY = 0.08
EPISODES_PER_SERIES = (3, 12)
FIRST_YEAR, LAST_YEAR = 1970, 2026


def generate_catalog(config: DemoConfig) -> list[dict]:
    """Titles ``C000`` .. in catalog order, each a JSON-serialisable dict.

    Keys: ``content_id``, ``name``, ``kind`` ("film" or "episode"), ``genres`` (1-3 names from
    ``GENRES``), ``year``, ``maturity`` (the youngest age it is for, see
    ``datasets/title_metadata.py``); episodes also carry ``series`` (a name unique in the
    catalog), ``season`` and ``episode``; some titles carry ``regions`` (where they may be
    shown) or an availability window (``available_from``/``available_until``, unix seconds):
    a few expired, a few not yet out. ``C000`` is always a film, shown everywhere, always.
    """
    rng = np.random.Generator(np.random.PCG64([config.seed, 0]))
    titles: list[dict] = []
    series_names: set[str] = set()
    while len(titles) < config.titles:
        remaining = config.titles - len(titles)
        # C000 is the flagship film; a series too short to fit at the end becomes films.
        if titles and remaining >= EPISODES_PER_SERIES[0] and rng.random() < SERIES_START_PROBABILITY:
            length = min(int(rng.integers(EPISODES_PER_SERIES[0], EPISODES_PER_SERIES[1] + 1)), remaining)
            titles.extend(_series(rng, len(titles), length, series_names))
        else:
            titles.append(_film(rng, len(titles)))
    _add_rights(titles, config.seed)
    return titles


MATURITY_BY_GENRE = {"Animation": (0, 7), "Family": (0, 7), "Documentary": (0, 13), "Horror": (16, 18),
                     "Thriller": (13, 16, 18), "Crime": (13, 16, 18)}
REGIONS = ("US", "GB", "FR", "DE", "JP", "BR")
# Windows in unix seconds: some titles left the catalog at the end of 2025, some arrive mid-2027.
EXPIRED_AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ARRIVES_AT = 1_811_808_000.0  # 2027-06-01T00:00:00Z


def _add_rights(titles: list[dict], seed: int) -> None:
    """Maturity, regions and availability, drawn from a stream of their own so that the rest of
    the catalog (and the viewers generated from it) is what it was before these fields existed.
    A series shares its maturity, regions and window across its episodes."""
    rng = np.random.Generator(np.random.PCG64([seed, 1]))
    decided: dict[str, dict] = {}
    for index, title in enumerate(titles):
        key = title.get("series") or title["content_id"]
        if key not in decided:
            choices = [age for genre in title["genres"] for age in MATURITY_BY_GENRE.get(genre, ())]
            rights: dict = {"maturity": int(rng.choice(choices or (0, 7, 13, 16)))}
            draw = rng.random()
            if index and draw < 0.04:
                rights["available_until"] = EXPIRED_AT
            elif index and draw < 0.08:
                rights["available_from"] = ARRIVES_AT
            if index and rng.random() < 0.15:
                count = int(rng.integers(1, 4))
                rights["regions"] = sorted(str(r) for r in rng.choice(REGIONS, size=count, replace=False))
            decided[key] = rights
        title.update(decided[key])


def content_id(index: int) -> str:
    """The id of the title at ``index`` in catalog order: C000 .. C999, C1000, ..."""
    return f"C{index:03d}"


def _film(rng: np.random.Generator, index: int) -> dict:
    adjective, noun, place = _pick(rng, _ADJECTIVES), _pick(rng, _NOUNS), _pick(rng, _PLACES)
    name = (f"The {adjective} {noun}", f"{noun} of {place}", f"{adjective} {noun}s")[int(rng.integers(3))]
    return {
        "content_id": content_id(index),
        "name": name,
        "kind": "film",
        "genres": _genres(rng),
        "year": _release_year(rng),
    }


def _series(rng: np.random.Generator, start: int, length: int, taken: set[str]) -> list[dict]:
    series = f"{_pick(rng, _ADJECTIVES)} {_pick(rng, _NOUNS)}"
    if series in taken:
        # A reboot keeps the name readable and the series name unique.
        series = next(f"{series} {n}" for n in range(2, 10_000) if f"{series} {n}" not in taken)
    taken.add(series)
    genres = _genres(rng)
    per_season = int(rng.integers(3, 9))
    seasons = (length - 1) // per_season + 1
    first_year = min(_release_year(rng), LAST_YEAR - seasons + 1)
    episodes = []
    for k in range(length):
        season, episode = k // per_season + 1, k % per_season + 1
        episodes.append({
            "content_id": content_id(start + k),
            "name": f"{series} S{season}E{episode}",
            "kind": "episode",
            "genres": list(genres),
            "year": first_year + season - 1,
            "series": series,
            "season": season,
            "episode": episode,
        })
    return episodes


def _genres(rng: np.random.Generator) -> list[str]:
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    picked = rng.choice(len(GENRES), size=count, replace=False, p=list(GENRE_SHARES.values()))
    return [GENRES[g] for g in sorted(picked)]


def _release_year(rng: np.random.Generator) -> int:
    # Catalogs lean recent: most titles from the last decade or two, a long tail back to 1970.
    return max(FIRST_YEAR, LAST_YEAR - int(rng.exponential(12.0)))


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


ARRIVALS_PER_BATCH = 4


def new_arrivals(catalog: list[dict], batch: int, released_at: int) -> list[dict]:
    """Films out today, that nobody has watched yet: ``N<batch><i>``, film i alike the i-th
    most popular film of ``catalog`` (the same genres and maturity), so that the viewers of
    those films are the ones a new title can reach through its metadata (``service/ranking``)."""
    films = [title for title in catalog if title.get("kind") == "film"][:ARRIVALS_PER_BATCH]
    return [{"content_id": f"N{batch:03d}{i}", "name": f"New: {film['name']} II", "kind": "film",
             "genres": list(film["genres"]), "year": LAST_YEAR, "maturity": film.get("maturity", 0),
             "available_from": released_at}
            for i, film in enumerate(films)]

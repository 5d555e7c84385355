"""The demo catalog: made-up films and series, with ids ``C000``, ``C001`` ... in catalog order.

A series is a run of consecutive ids, its episodes in watching order, so "the next episode" of
``C0123`` is simply ``C0124`` when both belong to the same series. ``demo_viewers`` relies on
that, and on catalog order being popularity order (lower id, more popular).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .demo import DemoConfig

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
    ``GENRES``), ``year``; episodes also carry ``series`` (a name unique in the catalog),
    ``season`` and ``episode``. ``C000`` is always a film.
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
    return titles


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

"""Synthetic viewers ``V00000`` .. and their watch histories over the demo catalog.

Each viewer has genre tastes that drift slowly over their history. After a non-final episode
they usually go on to the next one (a binge); otherwise they sometimes rewatch something and
mostly pick a title they have not seen, by popularity x taste. So what a model should learn
is really in the data: "after an episode comes the next episode", "popular titles first",
"viewers stay in their genres".

Viewers are simulated in blocks, all viewers of a block one step at a time, so the Python work
is per step and block rather than per event: ten million events take seconds, not hours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .demo_catalog import GENRE_SHARES, GENRES

if TYPE_CHECKING:
    from .demo_dataset import DemoConfig

BINGE_PROBABILITY = 0.8
REWATCH_PROBABILITY = 0.03
# Zipf-like popularity by catalog position; C000, the flagship, gets a clear lead on top.
POPULARITY_EXPONENT = 1.0
POPULARITY_OFFSET = 10
FLAGSHIP_BOOST = 3.0
# Share of picks that follow popularity alone, whatever the viewer's genres (what is trending).
POPULARITY_ONLY = 0.25
# Viewers mostly start a series at its first episode.
MID_SERIES_ENTRY = 0.15
# Lower means tastes concentrated on fewer genres.
TASTE_CONCENTRATION = 3.0
NEW_TITLE_ATTEMPTS = 4
# Timestamps start here (2026-01-01T00:00:00Z) and nowhere depends on the clock.
EPOCH_BASE = 1_767_225_600.0
FIRST_WATCH_WINDOW = 60 * 86_400.0
# Several viewers' state for every title: keep a block's "watched" matrix near 16 MB.
BLOCK_CELLS = 1 << 24


def viewer_id(index: int) -> str:
    """The id of the ``index``-th viewer. Never ``U...``: those are users with no demo history."""
    return f"V{index:05d}"


def simulate_viewers(config: DemoConfig, catalog: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Watch events as (viewer index int32, catalog index int32, timestamp float64) arrays,
    sorted by timestamp and then by viewer id."""
    titles = _TitleTable(catalog)
    block = max(64, min(16_384, BLOCK_CELLS // max(1, len(catalog))))
    parts = [
        _simulate_block(np.random.Generator(np.random.PCG64([config.seed, 1, start])), titles, config,
                        start, min(start + block, config.viewers))
        for start in range(0, config.viewers, block)
    ]
    viewers, watched, timestamps = (np.concatenate([p[k] for p in parts]) for k in range(3))
    if config.viewers > 100_000:
        # Ids grow a digit ("V100000" sorts before "V20000"): put the events in id order first.
        id_rank = np.empty(config.viewers, dtype=np.int64)
        id_rank[np.argsort(np.array([viewer_id(j) for j in range(config.viewers)]))] = np.arange(config.viewers)
        by_id = np.argsort(id_rank[viewers], kind="stable")
        viewers, watched, timestamps = viewers[by_id], watched[by_id], timestamps[by_id]
    # Events are in viewer id order here, so a stable sort by time breaks ties by viewer id.
    order = np.argsort(timestamps, kind="stable")
    return viewers[order], watched[order], timestamps[order]


class _TitleTable:
    """What the simulation needs from the catalog, as arrays over catalog position."""

    def __init__(self, catalog: list[dict]):
        n = len(catalog)
        self.count = n
        genre_index = {g: k for k, g in enumerate(GENRES)}
        membership = np.zeros((n, len(GENRES)))
        for i, title in enumerate(catalog):
            membership[i, [genre_index[g] for g in title["genres"]]] = 1.0
        # An episode's successor is the next id, when that id is in the same series.
        self.next_episode = np.full(n + 1, -1, dtype=np.int32)  # the extra slot stands for "none"
        for i in range(n - 1):
            if catalog[i]["kind"] == "episode" and catalog[i + 1].get("series") == catalog[i]["series"]:
                self.next_episode[i] = i + 1
        self.is_episode = np.array([t["kind"] == "episode" for t in catalog])
        continues_series = np.zeros(n, dtype=bool)
        continues_series[1:] = self.next_episode[: n - 1] >= 0
        popularity = 1.0 / (np.arange(n) + POPULARITY_OFFSET) ** POPULARITY_EXPONENT
        popularity[continues_series] *= MID_SERIES_ENTRY
        popularity[0] *= FLAGSHIP_BOOST
        # A pick is popularity x (mean taste over the title's genres). That is a mixture over
        # genres, so it is sampled as: a genre by taste x genre_mass, then a title in that genre.
        # The last column is "any genre": picks that follow popularity alone.
        per_genre = popularity[:, None] * membership / membership.sum(axis=1, keepdims=True)
        per_genre = np.column_stack([per_genre, popularity])
        self.genre_mass = per_genre.sum(axis=0)
        cdf = np.cumsum(per_genre, axis=0) / np.where(self.genre_mass > 0, self.genre_mass, 1.0)
        cdf[:, self.genre_mass == 0] = 1.0
        # Column g's distribution lives in [g, g + 1) of one flat increasing array.
        self.flat_cdf = (cdf + np.arange(cdf.shape[1])).T.ravel()

    def sample(self, rng: np.random.Generator, tastes: np.ndarray) -> np.ndarray:
        """One title per row of ``tastes`` (viewers x genres)."""
        by_taste = tastes * self.genre_mass[:-1]
        # The floor only matters in a tiny catalog missing every genre a viewer likes.
        by_taste *= (1 - POPULARITY_ONLY) / np.maximum(by_taste.sum(axis=1, keepdims=True), 1e-300)
        weights = np.cumsum(np.column_stack([by_taste, np.full(len(tastes), POPULARITY_ONLY)]), axis=1)
        u = rng.random(len(tastes)) * weights[:, -1]
        column = np.minimum((weights <= u[:, None]).sum(axis=1), len(GENRES))
        flat = np.searchsorted(self.flat_cdf, column + rng.random(len(tastes)), side="right")
        return np.minimum(flat - column * self.count, self.count - 1).astype(np.int32)


def _simulate_block(rng: np.random.Generator, titles: _TitleTable, config: DemoConfig, first: int, end: int):
    m = end - first
    lengths = _history_lengths(rng, m, config.mean_watches)
    alpha = TASTE_CONCENTRATION * np.array(list(GENRE_SHARES.values()))
    taste_start, taste_end = rng.dirichlet(alpha, size=m), rng.dirichlet(alpha, size=m)
    steps = int(lengths.max())
    history = np.zeros((m, steps), dtype=np.int32)
    gaps = np.zeros((m, steps))
    gaps[:, 0] = rng.random(m) * FIRST_WATCH_WINDOW
    watched = np.zeros((m, titles.count), dtype=bool)
    last = np.full(m, titles.count, dtype=np.int32)  # titles.count: nothing watched yet

    for t in range(steps):
        active = np.flatnonzero(lengths > t)
        previous = last[active]
        successor = titles.next_episode[previous]
        u = rng.random(len(active))
        binge = (successor >= 0) & (u < BINGE_PROBABILITY)
        binge[binge] = ~watched[active[binge], successor[binge]]
        rewatch = ~binge & (rng.random(len(active)) < REWATCH_PROBABILITY) & (t > 0)
        pick = ~binge & ~rewatch
        choice = successor.copy()
        choice[rewatch] = history[active[rewatch], (rng.random(int(rewatch.sum())) * t).astype(np.int64)]
        drift = (t / lengths[active[pick]])[:, None]
        tastes = taste_start[active[pick]] * (1 - drift) + taste_end[active[pick]] * drift
        choice[pick] = _new_titles(rng, titles, tastes, watched, active[pick])

        history[active, t] = choice
        watched[active, choice] = True
        last[active] = choice
        if t > 0:
            gaps[active, t] = _gaps(rng, binge, titles.is_episode[previous])

    in_history = np.arange(steps) < lengths[:, None]
    viewers = np.repeat(np.arange(first, end, dtype=np.int32), lengths)
    timestamps = np.round(EPOCH_BASE + np.cumsum(gaps, axis=1)[in_history], 3)
    return viewers, history[in_history], timestamps


def _new_titles(rng: np.random.Generator, titles: _TitleTable, tastes: np.ndarray, watched: np.ndarray,
                rows: np.ndarray) -> np.ndarray:
    """A title for each of ``rows`` (of ``watched``), redrawn a few times while it was seen."""
    choice = titles.sample(rng, tastes)
    retry = np.flatnonzero(watched[rows, choice])
    for _ in range(NEW_TITLE_ATTEMPTS - 1):
        if not len(retry):
            break
        choice[retry] = titles.sample(rng, tastes[retry])
        retry = retry[watched[rows[retry], choice[retry]]]
    return choice


def _history_lengths(rng: np.random.Generator, viewers: int, mean: int) -> np.ndarray:
    # A floor plus a geometric tail: most viewers are casual, a few watch a lot.
    floor = max(1, mean // 4)
    extra = rng.geometric(1.0 / (mean - floor + 1), size=viewers) - 1
    return np.minimum(floor + extra, 5 * mean).astype(np.int64)


def _gaps(rng: np.random.Generator, binge: np.ndarray, after_episode: np.ndarray) -> np.ndarray:
    """Seconds since the previous watch: an episode's length during a binge, else hours to days."""
    runtime = np.where(after_episode, rng.uniform(22, 65, len(binge)), rng.uniform(85, 150, len(binge))) * 60
    pause = np.clip(rng.lognormal(np.log(8 * 3_600), 1.3, len(binge)), 600, 21 * 86_400)
    return np.where(binge, runtime + rng.uniform(60, 900, len(binge)), runtime + pause)

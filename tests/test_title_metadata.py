"""Title metadata (`nextwatch import --titles FILE`, CSV or JSON Lines): every field's rule,
bad rows reported by line, a file with a bad row refused whole, and the demo catalog valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ON_BOTH_TOPOLOGIES
from nextwatch.datasets.demo_dataset import DemoConfig
from nextwatch.datasets.demo_catalog import generate_catalog
from nextwatch.datasets.title_metadata import BadTitle, normalised_title, read_title_metadata

GOOD = {"content_id": "S1E2", "name": " Pilot 2 ", "genres": ["Drama", "Drama", "Crime"], "year": 2024,
        "maturity": 16, "available_from": "2026-12-01", "available_until": "2027-01-01T12:00:00Z",
        "regions": ["us", "FR"], "series": "Sea", "season": 1, "episode": 2, "kind": "episode"}


def test_a_good_title_is_stored_normalised():
    title = normalised_title(GOOD)
    assert title == {"content_id": "S1E2", "name": "Pilot 2", "genres": ["Drama", "Crime"], "year": 2024,
                     "maturity": 16, "available_from": 1796083200.0, "available_until": 1798804800.0,
                     "regions": ["FR", "US"], "series": "Sea", "season": 1, "episode": 2, "kind": "episode"}
    assert normalised_title({"content_id": "C1", "available_from": 1700000000}) == {
        "content_id": "C1", "available_from": 1700000000.0}


@pytest.mark.parametrize("change, rule", [
    ({"content_id": "bad id"}, "content_id must be"),
    ({"maturity": 22}, "maturity must be a whole number from 0 to 21"),
    ({"maturity": "PG"}, "maturity must be"),
    ({"year": 3000}, "year must be"),
    ({"regions": ["USA"]}, "ISO 3166"),
    ({"regions": []}, "non-empty list"),
    ({"available_from": "tomorrow"}, "ISO 8601"),
    ({"available_until": "2026-11-01"}, "must come after available_from"),
    ({"season": None}, "season must be"),
    ({"kind": "short"}, "kind must be film or episode"),
    ({"colour": "blue"}, "unknown field 'colour'"),
    ({"genres": "Drama"}, "genres must be a list"),
])
def test_each_rule_is_named(change, rule):
    with pytest.raises(BadTitle, match=rule):
        normalised_title({**GOOD, **change})
    episode_without_season = {k: v for k, v in GOOD.items() if k != "season"}
    with pytest.raises(BadTitle, match="series, season and episode together"):
        normalised_title(episode_without_season)


def test_csv_and_jsonl_report_bad_rows_by_line(tmp_path):
    csv_file = tmp_path / "titles.csv"
    csv_file.write_text("content_id,name,genres,maturity,regions\nA,First,Drama|Crime,13,US|GB\n"
                        "B,Second,,99,\nA,Again,,,\nC,Third,Comedy,,FR\n")
    result = read_title_metadata(csv_file, "csv")
    assert [t["content_id"] for t in result.titles] == ["A", "C"]
    assert result.titles[0] == {"content_id": "A", "name": "First", "genres": ["Drama", "Crime"], "maturity": 13,
                                "regions": ["GB", "US"]}
    assert result.problems == [(3, "maturity must be a whole number from 0 to 21"),
                               (4, "content_id 'A' was already given on line 2")]
    jsonl = tmp_path / "titles.jsonl"
    jsonl.write_text(json.dumps(GOOD) + "\n\n[1]\n{nope\n" + json.dumps({"content_id": "X"}) + "\n")
    result = read_title_metadata(jsonl, "jsonl")
    assert [t["content_id"] for t in result.titles] == ["S1E2", "X"]
    assert [line for line, _rule in result.problems] == [3, 4]


def test_the_demo_catalog_is_valid_metadata_with_every_kind_of_field():
    titles = generate_catalog(DemoConfig(titles=1000, viewers=10))
    assert [normalised_title(t) for t in titles] == titles  # already in the stored form
    fields = {field for t in titles for field in t}
    assert {"maturity", "regions", "available_from", "available_until", "series"} <= fields
    assert "regions" not in titles[0] and "available_until" not in titles[0]  # C000 always, everywhere


def run_import(settings, *args):
    env = {**os.environ, "NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix}
    return subprocess.run([sys.executable, "-m", "nextwatch.cli", "import", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@ON_BOTH_TOPOLOGIES
def test_import_titles_alone_all_or_nothing(tmp_path, settings, store):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n" + json.dumps({"content_id": "Y", "maturity": -1}) + "\n")
    refused = run_import(settings, "--titles", str(bad))
    assert refused.returncode == 2
    assert "1 bad title rows: no title was stored" in refused.stderr and "line 2: maturity" in refused.stderr
    assert store.catalog.info("S1E2") is None and store.catalog.all_ids() == []
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n" + json.dumps({"content_id": "Y", "maturity": 0}) + "\n")
    stored = run_import(settings, "--titles", str(good))
    assert stored.returncode == 0, stored.stderr
    assert "2 titles stored" in stored.stdout
    assert store.catalog.info("S1E2") == normalised_title(GOOD)
    assert sorted(store.catalog.all_ids()) == ["S1E2", "Y"]

"""`nextwatch import`: events into a Parquet file that training reads, titles into the catalog,
bad rows reported with their line numbers."""

import os
import subprocess
import sys

import pyarrow.parquet as pq

from conftest import ON_BOTH_TOPOLOGIES

pytestmark = ON_BOTH_TOPOLOGIES  # import and training on one Redis and on a Redis Cluster


def run_import(settings, *args):
    env = {**os.environ, "NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix}
    return subprocess.run([sys.executable, "-m", "nextwatch.cli", "import", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_movielens_import_with_titles_and_bad_rows(tmp_path, settings, store):
    ratings = tmp_path / "u.data"
    ratings.write_text("1\t10\t5\t881250949\n1\t20\t3\t881250950\nbroken line\n2\t10\t4\t881250951\n"
                       "2\t30\t4\tnot-a-time\n")
    items = tmp_path / "u.item"
    flags = "|".join(["0"] * 19)
    items.write_text(f"10|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n"
                     f"20|GoldenEye (1995)|01-Jan-1995||http://x|0|1|{'|'.join(['0'] * 17)}\n"
                     "oops\n")
    out = tmp_path / "out" / "events.parquet"
    result = run_import(settings, str(ratings), "--format", "movielens-100k", "--titles", str(items),
                        "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "3 events" in result.stdout and "2 titles stored" in result.stdout
    assert "2 bad rows" in result.stderr
    assert "line 3:" in result.stderr and "line 5:" in result.stderr
    assert "reading u.data [" in result.stderr  # the progress bar
    table = pq.read_table(out).to_pydict()
    assert table["user_id"] == ["1", "1", "2"] and table["content_id"] == ["10", "20", "10"]
    assert table["timestamp"] == [881250949.0, 881250950.0, 881250951.0]
    assert store.catalog.info("20") == {"content_id": "20", "name": "GoldenEye", "genres": ["Action"],
                                        "year": 1995}


def test_imported_events_train_a_model(tmp_path, settings, store, spark):
    from nextwatch.training.job import train

    sequences = tmp_path / "seq.txt"
    sequences.write_text("u1 a b c\nu2 a b d\nu3 a b c\n")
    out = tmp_path / "seq.parquet"
    assert run_import(settings, str(sequences), "--format", "sequences", "--out", str(out)).returncode == 0
    result = train(settings, store, spark, sources=[str(out)], include_event_log=False)
    assert result.events == 9
    model = store.models.load(result.version)
    codes = dict(zip(store.catalog.all_ids(), range(1000)))
    assert model.recommend([codes["a"], codes["b"]], 1) == [codes["c"]]


def test_a_missing_file_is_a_clear_error(tmp_path, settings):
    result = run_import(settings, str(tmp_path / "nope.csv"), "--format", "csv")
    assert result.returncode == 2 and "nope.csv" in result.stderr

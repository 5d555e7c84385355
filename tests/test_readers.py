"""The data set readers on small files with known contents: every format, bad rows reported
with their line numbers and counted past the cap, titles with names, genres and years."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextwatch.datasets.readers import Events, read_events
from nextwatch.datasets.title_readers import read_titles


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def rows(events: Events) -> list[tuple]:
    return list(zip(events.user_id().tolist(), events.content_id().tolist(), events.timestamp.tolist(),
                    events.sequence.tolist()))


def test_movielens_100k_reports_bad_rows_with_line_numbers(tmp_path):
    path = write(tmp_path, "u.data", "196\t242\t3\t881250949\n"
                                     "186\t302\t3\n"  # line 2: a field short
                                     "\n"  # blank: no row
                                     "22\t377\t1\tyesterday\n"  # line 4: timestamp not a number
                                     "\t377\t1\t881250950\n"  # line 5: no user
                                     "22\t377\t1\tnan\n"  # line 6: not finite
                                     "196\t302\t5\t881250949\n")
    result = read_events(path, "movielens-100k")
    assert rows(result.events) == [("196", "242", 881250949.0, 0), ("196", "302", 881250949.0, 1)]
    assert [line for line, _ in result.problems] == [2, 4, 5, 6]
    assert result.problem_count == 4
    assert "timestamp must be a finite number" in result.problems[1][1]
    assert "4 bad rows" in result.summary() and "line 2" in result.summary()


def test_ids_are_coded_once(tmp_path):
    path = write(tmp_path, "u.data", "".join(f"{u}\t{i}\t3\t{t}\n" for t, (u, i) in
                                             enumerate([(1, 10), (2, 10), (1, 11), (1, 10)])))
    events = read_events(path, "movielens-100k").events
    assert events.user_ids.tolist() == ["1", "2"] and events.content_ids.tolist() == ["10", "11"]
    assert events.user_codes.tolist() == [0, 1, 0, 0] and events.content_codes.tolist() == [0, 0, 1, 0]


def test_movielens_1m_and_csv(tmp_path):
    dat = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::3::x\n")
    result = read_events(dat, "movielens-1m")
    assert rows(result.events) == [("1", "1193", 978300760.0, 0), ("1", "661", 978302109.0, 1)]
    assert result.problems == [(3, "expected 4 '::'-separated fields, got 3")]

    ratings = write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,96498x\n")
    result = read_events(ratings, "movielens-csv")
    assert rows(result.events) == [("1", "1", 964982703.0, 0)]
    assert [line for line, _ in result.problems] == [3]


def test_movielens_csv_needs_its_header(tmp_path):
    path = write(tmp_path, "ratings.csv", "1,1,4.0,964982703\n")
    with pytest.raises(ValueError, match="userId, movieId, timestamp"):
        read_events(path, "movielens-csv")


def test_generic_csv_with_optional_columns_and_quotes(tmp_path):
    path = write(tmp_path, "events.csv", 'timestamp,content_id,user_id,event_type,progress\n'
                                         '10,"film, the",u1,watch,0.5\n'
                                         '11,c2,u1,,\n'
                                         '12,c3,u2,watch\n'  # line 4: a field short
                                         '13,c3,u2,watch,half\n'  # line 5: progress not a number
                                         '14,"multi\nline",u2,watch,1\n')  # lines 6-7
    result = read_events(path, "csv")
    assert rows(result.events) == [("u1", "film, the", 10.0, 0), ("u1", "c2", 11.0, 1),
                                   ("u2", "multi\nline", 14.0, 2)]
    assert result.events.event_type.tolist() == ["watch", "", "watch"]
    np.testing.assert_array_equal(result.events.progress, [0.5, np.nan, 1.0])
    assert [line for line, _ in result.problems] == [4, 5]


def test_generic_csv_without_required_columns_is_refused(tmp_path):
    path = write(tmp_path, "events.csv", "user,content_id,timestamp\nu1,c1,1\n")
    with pytest.raises(ValueError, match="missing user_id"):
        read_events(path, "csv")


def test_jsonl_keeps_numeric_ids_as_text(tmp_path):
    lines = [json.dumps({"user_id": "u1", "content_id": 42, "timestamp": 5}), "{not json",
             json.dumps({"user_id": "u1", "content_id": "c1", "timestamp": "5"}), json.dumps([1, 2]), "",
             json.dumps({"user_id": "u2", "content_id": "c1", "timestamp": 6.5, "event_type": "watch"})]
    result = read_events(write(tmp_path, "e.jsonl", "\n".join(lines) + "\n"), "jsonl")
    assert rows(result.events) == [("u1", "42", 5.0, 0), ("u2", "c1", 6.5, 1)]
    assert result.events.event_type.tolist() == ["", "watch"]
    assert [line for line, _ in result.problems] == [2, 3, 4]


def test_parquet_rows_and_timestamp_columns(tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({
        "user_id": ["u1", None, "u2", "u3"],
        "content_id": [1, 2, 3, 4],
        "timestamp": pa.array([1_000_000, 2_000_000, 3_000_000, None], pa.timestamp("ms")),
    }), path)
    result = read_events(path, "parquet")
    assert rows(result.events) == [("u1", "1", 1000.0, 0), ("u2", "3", 3000.0, 2)]
    assert [line for line, _ in result.problems] == [2, 4]


def test_sequences_use_positions_as_timestamps(tmp_path):
    path = write(tmp_path, "seq.txt", "1 5 6 5\n2\n3 7\n")
    result = read_events(path, "sequences")
    assert rows(result.events) == [("1", "5", 0.0, 0), ("1", "6", 1.0, 1), ("1", "5", 2.0, 2), ("3", "7", 0.0, 3)]
    assert result.problems == [(2, "a sequence line needs a user id and at least one item")]


def test_undecodable_lines_are_reported(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_bytes(b"1 5 6\n2 \xff\xfe\n")
    result = read_events(path, "sequences")
    assert len(result.events) == 2 and result.problems == [(2, "not valid UTF-8")]


def test_problems_are_capped_but_all_counted(tmp_path):
    path = write(tmp_path, "u.data", "bad\n" * 7 + "1\t2\t3\t4\n")
    result = read_events(path, "movielens-100k", max_problems=3)
    assert [line for line, _ in result.problems] == [1, 2, 3]
    assert result.problem_count == 7 and len(result.events) == 1


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="event format must be one of"):
        read_events(write(tmp_path, "x", ""), "excel")


def test_from_columns_codes_in_first_seen_order():
    events = Events.from_columns(["b", "a", "b"], [3, 1, 3], [1.0, 2.0, 3.0])
    assert events.user_ids.tolist() == ["b", "a"] and events.user_codes.tolist() == [0, 1, 0]
    assert events.content_id().tolist() == ["3", "1", "3"] and events.sequence.tolist() == [0, 1, 2]


def test_u_item_titles(tmp_path):
    flags = ["0"] * 19
    comedy = flags.copy()
    comedy[5] = comedy[3] = "1"
    path = write(tmp_path, "u.item",
                 "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(comedy) + "\n"
                 "267|unknown||||" + "|".join(["1"] + flags[1:]) + "\n"
                 "300|Caf\xe9 (no year)|05-May-1997||http://x|" + "|".join(flags) + "\n"
                 "301|short|row\n", encoding="latin-1")
    result = read_titles(path, "movielens-100k")
    assert result.titles == [
        {"content_id": "1", "name": "Toy Story", "genres": ["Animation", "Comedy"], "year": 1995},
        {"content_id": "267", "name": "unknown", "genres": [], "year": None},
        {"content_id": "300", "name": "Caf\xe9 (no year)", "genres": [], "year": 1997},
    ]
    assert [line for line, _ in result.problems] == [4]


def test_movies_dat_and_movies_csv(tmp_path):
    dat = write(tmp_path, "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n2::broken\n",
                encoding="latin-1")
    result = read_titles(dat, "movielens-1m")
    assert result.titles == [{"content_id": "1", "name": "Toy Story", "genres": ["Animation", "Children's", "Comedy"],
                              "year": 1995}]
    assert [line for line, _ in result.problems] == [2]

    csv_path = write(tmp_path, "movies.csv", 'movieId,title,genres\n'
                                             '11,"American President, The (1995)",Comedy|Drama|Romance\n'
                                             '40697,Babylon 5,Sci-Fi\n'
                                             '143410,Hyena Road,(no genres listed)\n')
    result = read_titles(csv_path, "movielens-csv")
    assert result.titles == [
        {"content_id": "11", "name": "American President, The", "genres": ["Comedy", "Drama", "Romance"],
         "year": 1995},
        {"content_id": "40697", "name": "Babylon 5", "genres": ["Sci-Fi"], "year": None},
        {"content_id": "143410", "name": "Hyena Road", "genres": [], "year": None},
    ]

"""The ClickHouse engine computes exactly what `observe` and the DuckDB engine compute, on the
real ClickHouse engine (chdb, in process): over a Parquet export and over the documented
`outcomes` table, on the same shuffled synthetic traffic as tests/stores/test_engine.py
(retries, fail-overs, forced sessions, shadows, canaries, labels with and without counts).
The server path (clickhouse-connect) is checked against what can run here: a closed port,
a bad URL and, where Debian's clickhouse-server is installed, a real server too old for it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.analysis.engine_port import AnalysisWindow
from gateway.analysis.model import AnalysisOptions, ExperimentInfo
from gateway.analysis.observations import observe
from gateway.analysis.report import analyze
from gateway.errors import ConfigError, EngineUnreadable, StoreUnavailable
from gateway.stores.clickhouse_engine import ChdbConnection, ClickHouseEngine, ServerConnection
from gateway.stores.clickhouse_load import ClickHouseLoader
from gateway.stores.engine import DuckDbEngine, LakeReader
from gateway.stores.lake import append_outcomes, lake_sources, replace_labels
from tests.redis_servers import free_port
from tests.stores.test_engine import COUNTS, START, assert_same, traffic


def _lake(root: Path, seed: int) -> tuple[Path, list[Any], dict[str, Any]]:
    records, labels = traffic(seed)
    lake = root / "lake"
    append_outcomes(lake, records)
    replace_labels(lake, "e", labels.values())
    return lake, records, labels


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_engine_on_parquet_observes_what_the_records_show(tmp_path: Path, seed: int) -> None:
    lake, records, labels = _lake(tmp_path, seed)
    files = lake_sources(lake, "e").outcomes
    found = ClickHouseEngine.parquet(files).observations(AnalysisWindow("e"), labels)
    assert_same(observe([r for r in records if r.experiment == "e"], labels), found)
    assert_same(DuckDbEngine.parquet(files).observations(AnalysisWindow("e"), labels), found)
    variants = [v for p in found.values() for v in p.variants.values()]
    for count in COUNTS:
        assert any(getattr(v, count) for v in variants), count
    assert any(p.shadow_pairs for p in found.values())


def test_a_window_selects_the_same_records(tmp_path: Path) -> None:
    lake, _, labels = _lake(tmp_path, 4)
    since, until = START + timedelta(seconds=900), START + timedelta(seconds=4600)
    window = AnalysisWindow("e", since, until)
    files = lake_sources(lake, "e").outcomes
    found = ClickHouseEngine.parquet(files).observations(window, labels)
    assert_same(DuckDbEngine.parquet(files).observations(window, labels), found)
    assert found.keys() == {"p1", "p2"}


def test_the_report_on_clickhouse_is_the_record_paths(tmp_path: Path) -> None:
    lake, _, _ = _lake(tmp_path, 5)
    reader = LakeReader(lake)
    info = ExperimentInfo(control="base", phase="p2", shares={"base": 0.5, "custom": 0.5})
    options = AnalysisOptions(resamples=200, error_labelled=30)  # the error analysis samples
    files = lake_sources(lake, "e").outcomes

    def report(engine: Any) -> dict[str, Any]:
        found = asyncio.run(analyze(reader, "e", info=info, options=options, engine=engine))
        found.pop("generated_at")
        return found

    ours = report(ClickHouseEngine.parquet(files))
    assert ours == report(None)
    assert ours == report(reader.engine("e"))  # DuckDB over the export, labels included
    assert ours["errors"]["sample"]["labelled_in_window"] > 30
    assert ours["phases"][0]["comparisons"]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A chdb database folder (tables persist across sessions, as on a server)."""
    return tmp_path / "clickhouse"


def test_the_outcomes_table_gives_the_same_report(tmp_path: Path, database: Path) -> None:
    """Loaded twice (the second load adds nothing) and once more by hand, duplicating every
    row: the table's reads still count each record once."""
    lake, records, labels = _lake(tmp_path, 6)
    con = ChdbConnection(database)
    try:
        loader = ClickHouseLoader(con)
        first = loader.append(records)
        again = loader.append(records)
        # The documented INSERT ... SELECT FROM file(), which does not look for duplicates.
        files = lake_sources(lake, "e").outcomes
        con.run(f"INSERT INTO outcomes SELECT * FROM file('{files[0]}', Parquet)")
        rows = con.rows("SELECT count(), uniqExact(record_id) FROM outcomes")
    finally:
        con.close()
    assert (first.added, first.present) == (len({r.record_id for r in records}), 0)
    assert (again.added, again.present) == (0, first.added)
    assert rows[0][0] > rows[0][1] == first.added  # duplicates stored, not counted
    engine = ClickHouseEngine.chdb_table(database)
    found = engine.observations(AnalysisWindow("e"), labels)
    assert_same(observe([r for r in records if r.experiment == "e"], labels), found)
    theirs = DuckDbEngine.parquet(files).records(AnalysisWindow("e"), None)
    assert engine.records(AnalysisWindow("e"), None) == theirs


def test_a_record_outside_the_format_is_named(tmp_path: Path, database: Path) -> None:
    _, records, labels = _lake(tmp_path, 9)
    con = ChdbConnection(database)
    try:
        ClickHouseLoader(con).append(records)
        con.run(
            "INSERT INTO outcomes SELECT * REPLACE (repeat('e', 32) AS record_id, 2.0 AS "
            "confidence) FROM outcomes WHERE experiment = 'e' LIMIT 1"
        )
    finally:
        con.close()
    with pytest.raises(EngineUnreadable, match="1 records outside the documented format"):
        ClickHouseEngine.chdb_table(database).observations(AnalysisWindow("e"), labels)


def test_a_missing_table_is_one_line(database: Path) -> None:
    with pytest.raises(StoreUnavailable, match=r"UNKNOWN_TABLE|does not exist"):
        ClickHouseEngine.chdb_table(database).observations(AnalysisWindow("e"), {})


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    port = free_port()
    url = f"http://analyst:s3cret@127.0.0.1:{port}/experiments"
    with pytest.raises(StoreUnavailable) as caught:
        ClickHouseEngine.server(url).observations(AnalysisWindow("e"), {})
    message = str(caught.value)
    assert f"ClickHouse at 127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "\n" not in message


@pytest.mark.parametrize("url", ["ftp://host:1/x", "127.0.0.1:8123", "http:///db"])
def test_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="--clickhouse-url"):
        ServerConnection(url)


def test_a_bad_table_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--clickhouse-table"):
        ClickHouseEngine.server("http://127.0.0.1:8123", table="a.b.c")


@pytest.fixture
def old_server(tmp_path: Path) -> Iterator[str]:
    """Debian's clickhouse-server (18.16, the one the distribution ships) on a free port."""
    binary = shutil.which("clickhouse-server")
    if binary is None:
        pytest.skip("no clickhouse-server binary (Debian package clickhouse-server)")
    port = free_port()
    config = tmp_path / "config.xml"
    config.write_text(
        f"""<?xml version="1.0"?>
<yandex>
  <logger><level>error</level><console>1</console></logger>
  <http_port>{port}</http_port>
  <tcp_port>{free_port()}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{tmp_path}/data/</path>
  <tmp_path>{tmp_path}/tmp/</tmp_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
</yandex>
""",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [binary, f"--config-file={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("clickhouse-server did not start")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_server_that_cannot_serve_the_client_is_one_line(old_server: str) -> None:
    """A real server, over HTTP: one too old for clickhouse-connect is refused with the
    server's own reason, on one line naming where."""
    with pytest.raises(StoreUnavailable) as caught:
        ClickHouseEngine.server(old_server).observations(AnalysisWindow("e"), {})
    message = str(caught.value)
    assert message.startswith(f"ClickHouse at {old_server.removeprefix('http://')}: ")
    assert "\n" not in message

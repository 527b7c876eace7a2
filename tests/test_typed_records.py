"""The typed records the core reads: a method's checked ``describe()`` and a leaderboard row's
``published`` field (never parsed back from its method name)."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from unifybench.errors import BenchError
from unifybench.leaderboard.render_csv import as_csv
from unifybench.leaderboard.rows import LeaderboardRow, is_published, published_rows
from unifybench.run_record import MethodDetails, is_random_init


def test_describe_is_checked_into_method_details():
    details = MethodDetails.from_describe({"random_init": True, "model": "tiny"}, "m")
    assert details.random_init is True and details.recorded == {"random_init": True, "model": "tiny"}
    assert MethodDetails.from_describe({}, "m").random_init is False
    for bad, text in (([1], "not a dict"), ({"random_init": "yes"}, "'yes'")):
        with pytest.raises(BenchError) as refused:
            MethodDetails.from_describe(bad, "my-method")
        line = refused.value.one_line()
        assert text in line and "my-method" in line and "\n" not in line
    assert is_random_init({"random_init": True}) and not is_random_init(None) and not is_random_init({})


def _run_row(method: str) -> LeaderboardRow:
    return LeaderboardRow(benchmark="b", protocol="p", backbones="tiny", judge="", limit="", fingerprint="f",
                          method=method, metrics={"rec.accuracy": 0.5}, source="run x", confidence="this harness",
                          counts={"concepts": 2, "items": 4})


def test_a_run_whose_name_ends_like_a_published_one_is_still_a_run():
    published = published_rows()
    assert published and all(is_published(r) for r in published)
    run = _run_row("m (tag=[published])")  # a method argument can end a run's name so
    assert not is_published(run)
    frame = pd.read_csv(io.StringIO(as_csv([run, published[0]])), keep_default_na=False)
    assert list(frame["seeds"].astype(str)) == ["1", ""]


def test_a_random_init_method_is_a_field_of_the_key_not_part_of_the_backbones_label():
    """Two runs alike but for the method model's weights: two tables, the random one titled so; the
    CSV keeps the backbones as scored and says random-init in its own column."""
    from unifybench.groups import GroupKey
    from unifybench.leaderboard.tables import build_tables

    real = _run_row("m")
    random = _run_row("m-tiny")
    random.random_method = True
    assert random.key == real.key._replace(random_method=True) and random.key.random_init
    tables = build_tables([real, random])
    assert len(tables) == 2
    by_method = {t.rows[0].method: t for t in tables}
    assert "random-init method model, scorer backbones tiny" in by_method["m-tiny"].title
    assert "random-init method model" not in by_method["m"].title
    frame = pd.read_csv(io.StringIO(as_csv([real, random])), keep_default_na=False)
    assert list(frame["backbones"]) == ["tiny", "tiny"]
    assert list(frame["random_init_method"].astype(str)) == ["False", "True"]
    # A metric that uses no scorer backbone drops the backbones from the key, never the method's weights.
    understanding = GroupKey("b", "p", "not used", "", "", "f", True)
    assert random.key.without_backbones() == understanding != real.key.without_backbones()

"""biasbench/formats.py: strict JSON and spreadsheet-safe CSV, the rules every written file follows.
The same rules through the console script: test_openai_backend (responses.csv, manifest and summary),
test_leaderboard (a hand-edited board rewritten)."""

import csv
import io
import json
import math
import random

import numpy as np
import pandas as pd
import pytest

from biasbench.formats import dumps, restore_cell, restore_frame, safe_frame, safe_row, spreadsheet_safe, strict_loads


def test_json_is_strict_nan_and_infinity_become_null():
    value = {"nan": float("nan"), "inf": float("inf"), "ninf": -math.inf, "np": np.float32("nan"),
             "array": np.array([1.5, np.nan]), "int": np.int64(3), "bool": np.bool_(True), "tuple": (1, 2),
             "nested": [{"x": float("nan")}], 7: "key made text"}
    text = dumps(value, indent=2)
    assert "NaN" not in text and "Infinity" not in text
    assert strict_loads(text) == {"nan": None, "inf": None, "ninf": None, "np": None, "array": [1.5, None],
                                  "int": 3, "bool": True, "tuple": [1, 2], "nested": [{"x": None}],
                                  "7": "key made text"}
    with pytest.raises(ValueError, match="not JSON"):
        strict_loads('{"x": NaN}')
    assert dumps({"path": pytest}).startswith('{"path": "<module')  # other objects: str


@pytest.mark.parametrize("cell, written", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-1+2", "'-1+2"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tTAB", "'\tTAB"),
    ("\rCR", "'\rCR"),
    ("\uff1dfull width", "'\uff1dfull width"),
    ("'=already guarded", "'=already guarded"),  # never a second apostrophe
    ("-2", "-2"), ("-0.05", "-0.05"), ("+3", "+3"), ("-1e-5", "-1e-5"),  # numbers are not formulas
    ("-", "-"), ("plain", "plain"), ("a=b", "a=b"), ("", ""), (None, None), (-0.5, -0.5), (3, 3),
])
def test_formula_cells_get_an_apostrophe_and_numbers_stay_numbers(cell, written):
    assert spreadsheet_safe(cell) == written
    assert spreadsheet_safe(spreadsheet_safe(cell)) == written  # idempotent


def test_restore_undoes_the_guard_for_every_text():
    rng = random.Random(0)
    alphabet = "=+-@'\t\rab1.e "
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        guarded = spreadsheet_safe(text)
        if not text.startswith("'"):  # a text the guard made, read back, is what was written
            assert restore_cell(guarded) == text, repr(text)
        assert spreadsheet_safe(restore_cell(guarded)) == guarded  # a rewrite changes nothing


def test_frames_keep_numeric_columns_numeric():
    table = pd.DataFrame({"answer": ["=1+1", "-2", "ok", None], "gap": [-0.5, 0.25, float("nan"), -3.0],
                          "n": [1, -2, 3, 4], "flag": [True, False, True, False]})
    text = safe_frame(table).to_csv(index=False)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["answer"] for r in rows] == ["'=1+1", "-2", "ok", ""]
    assert [r["gap"] for r in rows] == ["-0.5", "0.25", "", "-3.0"] and [r["n"] for r in rows] == ["1", "-2", "3", "4"]
    back = restore_frame(pd.read_csv(io.StringIO(text)))
    assert back["answer"].tolist()[:3] == ["=1+1", "-2", "ok"]
    assert back["gap"].dtype.kind == "f" and table["answer"].tolist()[0] == "=1+1"  # the input is not changed
    assert safe_row({"a": "@x", "b": 1}) == {"a": "'@x", "b": 1} and safe_row(["-x", "-1"]) == ["'-x", "-1"]


def test_json_dumps_matches_the_standard_library_on_finite_data():
    value = {"a": [1, 2.5, "x"], "b": {"c": None, "d": True}}
    assert dumps(value, indent=2, sort_keys=True) == json.dumps(value, indent=2, sort_keys=True)

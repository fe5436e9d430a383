"""The shape checks for JSON read back from files (schema.py)."""

from __future__ import annotations

import json

import pytest

from reveal_release.errors import RRError
from reveal_release.schema import NUMBER, OPTIONAL_NUMBER, Each, problem, read_json

SCHEMA = {
    "name": str,
    "rate": NUMBER,
    "loss?": OPTIONAL_NUMBER,
    "rows?": [{"step": int}],
    "by_name?": Each({"ok": bool}),
}


@pytest.mark.parametrize(
    "value, found",
    [
        ({"name": "a", "rate": 1}, None),
        ({"name": "a", "rate": 0.5, "loss": None, "rows": [], "extra": 1}, None),
        ([1], "the file must be an object, not list"),
        ({"rate": 1}, "the file has no 'name'"),
        ({"name": "a", "rate": True}, "rate must be a number, not bool"),
        ({"name": "a", "rate": "1"}, "rate must be a number, not str"),
        ({"name": "a", "rate": 1, "loss": "x"}, "loss must be a number or null, not str"),
        ({"name": "a", "rate": 1, "rows": [{"step": 1}, {"step": 1.5}]},
         "rows[1].step must be an integer, not float"),
        ({"name": "a", "rate": 1, "rows": {"step": 1}}, "rows must be a list, not dict"),
        ({"name": "a", "rate": 1, "by_name": {"x": {"ok": 1}}},
         "by_name.x.ok must be true or false, not int"),
    ],
)  # fmt: skip
def test_problem_names_the_key_path(value, found):
    assert problem(value, SCHEMA) == found


def test_read_json_names_the_file_and_says_what_to_do(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"name": "a", "rate": 2}))
    assert read_json(path, SCHEMA, "fix it")["rate"] == 2
    cases = {
        b"{}": f"{path} has no 'name': fix it",
        b'{"name": 1}': f"{path}: name must be a string, not int: fix it",
        b"{oops": f"{path} is not valid JSON (Expecting property name enclosed in double "
        "quotes, line 1): fix it",
        b"\xff\x00": f"{path} is not UTF-8 text: fix it",
    }
    for data, message in cases.items():
        path.write_bytes(data)
        with pytest.raises(RRError) as err:
            read_json(path, SCHEMA, "fix it")
        assert str(err.value) == message
    with pytest.raises(RRError, match="is missing: fix it"):
        read_json(tmp_path / "absent.json", SCHEMA, "fix it")

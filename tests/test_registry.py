"""Status write-back keeps everything but `status` and `result` byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from gitexec.registry import write_status
from gitexec.tickets import TicketState

RESULT = {
    "run": "R1",
    "commit": "0a1b",
    "attempts": 2,
    "duration": 1.5,
    "finished_at": "2026-01-01T00:00:00Z",
}


def load(text: str) -> dict[str, object]:
    data = YAML(typ="safe").load(text)
    assert isinstance(data, dict)
    return data


def test_replaces_in_place_keeping_comments_and_layout() -> None:
    text = (
        "# head comment\n"
        "id: A   # trailing\n"
        "title: 'Quoted'\n"
        "depends_on:\n"
        "    - B\n"
        "status: pending  # engine\n"
        "result:\n"
        "  run: old\n"
        "\n"
        "# about paths\n"
        "paths: [src/**]\n"
    )
    out = write_status("A.yaml", text, TicketState.COMPLETED, RESULT)
    assert out.startswith(
        "# head comment\nid: A   # trailing\ntitle: 'Quoted'\ndepends_on:\n    - B\n"
    )
    assert "status: completed  # engine\n" in out
    assert out.endswith("\n\n# about paths\npaths: [src/**]\n")
    data = load(out)
    assert data["status"] == "completed"
    assert data["result"] == RESULT


def test_appends_when_absent_and_handles_no_trailing_newline() -> None:
    out = write_status(
        "A.yaml", "id: A\ntitle: x", TicketState.FAILED, {"reason": "it broke: badly"}
    )
    assert out == 'id: A\ntitle: x\nstatus: failed\nresult:\n  reason: "it broke: badly"\n'


def test_markdown_front_matter_only() -> None:
    text = "---\nid: A\ntitle: x\nstatus: pending\n---\n# Body\n\nstatus: pending stays here\n"
    out = write_status("A.md", text, TicketState.COMPLETED, {"run": "R"})
    assert (
        out
        == "---\nid: A\ntitle: x\nstatus: completed\nresult:\n  run: R\n---\n# Body\n\nstatus: pending stays here\n"
    )


@pytest.mark.parametrize(
    "value",
    ["a: b", "- dash", "#hash", "yes", "123", 'quote"s', "multi\nline", "tab\tx", "ünïcode"],
)
def test_awkward_values_round_trip(value: str) -> None:
    out = write_status("A.yaml", "id: A\ntitle: x\n", TicketState.BLOCKED, {"reason": value})
    assert load(out)["result"] == {"reason": value}


def test_flow_style_result_is_replaced() -> None:
    out = write_status(
        "A.yaml",
        "id: A\nresult: {run: x}\nstatus: failed\ntitle: t\n",
        TicketState.COMPLETED,
        {"run": "y"},
    )
    assert (
        out == 'id: A\nresult:\n  run: "y"\nstatus: completed\ntitle: t\n'
    )  # y is a YAML 1.1 boolean


def test_a_key_line_inside_a_quoted_value_is_not_taken_for_the_key() -> None:
    # The line scan finds `status:` on the quoted title's second line; the result would
    # change the title, so the key is found by a parse instead.
    text = 'id: A\nstatus: pending\ntitle: "x\nstatus: y"\n'
    out = write_status("A.yaml", text, TicketState.COMPLETED, {"run": "R"})
    assert out == 'id: A\nstatus: completed\nresult:\n  run: R\ntitle: "x\nstatus: y"\n'
    assert load(out)["title"] == "x status: y"


@pytest.mark.parametrize(
    "text",
    [
        "id: A\nstatus : pending\nresult:   \n  run: old\n",  # spaces before the colon
        "id: A\nstatus:\tpending\n",  # a tab after it
        "id: A\nstatus: pending\nstatuses: [a]\nresult_kept: 1\n",  # keys sharing a prefix
        "id: A\nnotes: |\n  status: not a key\n  result: nor this\nstatus: pending\n",
        "id: A\ndepends_on:\n- B\nstatus: pending\n# a comment\nresult: {run: x}\n",
    ],
)
def test_everything_but_status_and_result_is_kept(text: str) -> None:
    before = load(text)
    out = write_status("A.yaml", text, TicketState.COMPLETED, RESULT)
    after = load(out)
    assert after.pop("status") == "completed"
    assert after.pop("result") == RESULT
    before.pop("status", None)
    before.pop("result", None)
    assert after == before


@pytest.mark.parametrize("value", ["line\u2028break", "nel\x85x", "del\x7fx", "bom\ufeffx"])
def test_values_with_characters_yaml_reads_as_line_breaks_or_refuses_survive(value: str) -> None:
    text = "id: A\ntitle: x\nstatus: pending\n"
    out = write_status("A.yaml", text, TicketState.BLOCKED, {"reason": value, "paths": [value]})
    assert load(out)["result"] == {"reason": value, "paths": [value]}
    assert out.startswith(text.replace("pending", "blocked"))  # edited, not dumped again


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*sorted(RESULT), "note", "tokens"]), VALUES))
def test_any_result_reads_back_as_it_was_written(result: dict[str, object]) -> None:
    text = "# head\nid: A   # trailing\nstatus: pending  # engine\nresult:\n  run: old\npaths: []\n"
    out = write_status("A.yaml", text, TicketState.COMPLETED, result)
    assert load(out)["result"] == result
    assert out.startswith("# head\nid: A   # trailing\nstatus: completed  # engine\n")

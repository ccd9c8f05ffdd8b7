"""The pre-test that decides which captured values are walked for secrets.

The default patterns each run behind the fragments written in them. That is only right if every
text a pattern matches holds one of its fragments, and if the gated test answers as the one
regex of all patterns did: a text it wrongly passes over would leave the process unredacted.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipelens
from pipelens._core import capture
from pipelens._core.settings import SECRET_FRAGMENTS
from pipelens.testing import CapturedEvents

quick = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _whole_hint(text: str) -> bool:
    """The test as it was: any fragment, then one case-insensitive regex of every pattern."""
    lowered = text.lower()
    if not any(fragment in lowered for fragment in SECRET_FRAGMENTS):
        return False
    return "\\" in text or capture._secret_hint().search(text.encode()) is not None


@pytest.mark.parametrize(
    ("gates", "hint"),
    [
        pytest.param(h.gates, h.folded, id=h.folded.pattern.decode()[:40])
        for h in capture._DEFAULT_HINTS
        if h.gates
    ],
)
def test_every_text_a_default_pattern_matches_holds_one_of_its_fragments(
    gates: frozenset[str], hint: re.Pattern[bytes]
) -> None:
    @quick
    @given(st.from_regex(hint))
    def check(data: bytes) -> None:
        assert hint.search(data) is not None
        lowered = data.decode("utf-8", "replace").lower()
        assert any(g in lowered for g in gates), (data, sorted(gates))

    check()


#: Pieces that make texts near and inside the patterns' matches.
_pieces = st.one_of(
    st.sampled_from(SECRET_FRAGMENTS),
    st.sampled_from(['"', ":", "=", " ", "_", "-", "@", "/", "token", "Bearer ", "sk-", "AKIA"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-.", max_size=24),
    *(
        st.from_regex(h.folded).map(lambda b: b.decode("utf-8", "replace"))
        for h in capture._DEFAULT_HINTS
    ),
)


@quick
@given(st.lists(_pieces, max_size=8).map("".join))
def test_the_gated_test_answers_as_the_whole_regex_did(text: str) -> None:
    assert capture._may_hold_secret(text) == _whole_hint(text)


def test_an_llm_calls_record_with_token_counts_is_not_walked_and_a_key_in_it_is() -> None:
    """``"input_tokens"`` passes the fragment test (``token``) but no pattern: the record is
    left as it is; an ``api_key`` beside it is still found."""
    record = '{"usage":{"input_tokens":5,"output_tokens":4,"total_tokens":9},"stream":true}'
    assert not capture._may_hold_secret(record)
    assert capture._may_hold_secret(record.replace('"stream"', '"api_key"'))
    assert capture._may_hold_secret(record.replace("true", '"Bearer abcdefgh12345678"'))


@pytest.mark.parametrize(
    "text",
    [
        '{"clé": "x", "api_key": 1}',  # not ASCII: searched case-folded, not lower-cased
        '{"\u212aey": "x", "Api_Key": 1}',
        '{"note": "Authorization: BEARER abcdefgh12345678"}',
        "AKIAABCDEFGHIJKLMNOP",
    ],
)
def test_secret_looking_texts_pass_in_any_case_and_script(text: str) -> None:
    assert capture._may_hold_secret(text)
    assert capture._may_hold_secret(text.upper())


def test_an_llm_steps_secret_is_redacted_and_its_token_counts_kept(
    events: CapturedEvents,
) -> None:
    with pipelens.llm_call(provider="openai", model="gpt-4o", params={"api_key": "hidden"}) as call:
        call.set_usage(input_tokens=5, output_tokens=4)
        call.set_output("sk-" + "a" * 20)
    llm = capture.decode(capture.scrub(events.steps()[-1].llm))
    assert llm["params"]["api_key"] == capture.REDACTED
    assert llm["output"]["text"] == capture.REDACTED
    assert llm["usage"]["input_tokens"] == 5

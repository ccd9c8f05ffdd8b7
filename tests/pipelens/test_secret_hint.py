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
from pipelens import _secrets
from pipelens._core import capture
from pipelens._core.settings import DEFAULT_REDACT_KEYS, SECRET_FRAGMENTS, SECRET_VALUES
from pipelens.testing import CapturedEvents

quick = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _whole_hint(text: str) -> bool:
    """The test as it was: any fragment, then one case-insensitive regex of every pattern."""
    lowered = text.lower()
    if not any(fragment in lowered for fragment in SECRET_FRAGMENTS):
        return False
    return "\\" in text or capture._secret_hint().search(text.encode()) is not None


#: Every default pattern as the hint searches it: key patterns made to run over JSON text.
_PATTERNS = (*map(capture._loosen, DEFAULT_REDACT_KEYS), *SECRET_VALUES)


@pytest.mark.parametrize("pattern", [pytest.param(p, id=p[:40]) for p in _PATTERNS])
def test_every_text_a_default_pattern_matches_is_found_by_a_form_with_its_fragment(
    pattern: str,
) -> None:
    """Each default pattern is searched as one or more forms (``_SEARCH_FORMS``): wherever it
    matches, one of them matches too, and the text holds one of that form's fragments."""
    forms = _secrets.forms(pattern)

    @quick
    @given(st.from_regex(re.compile(pattern, re.IGNORECASE)))
    def check(text: str) -> None:
        lowered = _secrets.folded(text)
        found = [f for f in forms if f.pattern.search(lowered) is not None]
        assert found, (text, pattern)
        assert any(g in lowered for f in found for g in f.gates), (text, pattern)

    check()


def test_every_search_form_holds_a_fragment_and_every_rewritten_pattern_is_a_default() -> None:
    assert all(hint.gates for p in _PATTERNS for hint in _secrets.forms(p))
    assert set(_secrets._SEARCH_FORMS) <= set(_PATTERNS)


#: Pieces that make texts near and inside the patterns' matches.
_pieces = st.one_of(
    st.sampled_from(SECRET_FRAGMENTS),
    st.sampled_from(['"', ":", "=", " ", "_", "-", "@", "/", "token", "Bearer ", "sk-", "AKIA"]),
    # Not ASCII: letters ``re`` takes for ASCII ones ignoring case, a space, a letter.
    st.sampled_from(["\u017fecret=", "to\u212aen:", "cred\u0130ntial", "\u00a0", "\u00e9"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-.", max_size=24),
    *(st.from_regex(re.compile(p, re.IGNORECASE)) for p in _PATTERNS),
)
#: Words with no fragment in them: a long text is tested another way (its rarest letters first).
_FILLER = "the of and to in a is that for it as was with be by on not he this are or his " * 4
_texts = st.builds(
    lambda head, tail, long: "".join(head) + (_FILLER if long else "") + "".join(tail),
    st.lists(_pieces, max_size=4),
    st.lists(_pieces, max_size=4),
    st.booleans(),
)


@quick
@given(_texts)
def test_the_gated_test_answers_as_the_whole_regex_did(text: str) -> None:
    """The same answer for ASCII text. Not ASCII, the one regex over UTF-8 bytes passed over
    what ``re`` matches ignoring case in the text (a long s for an s, a no-break space); the
    gated test also passes what the regex passed."""
    assert len(_FILLER) >= _secrets._LONG_TEXT
    suspect = capture._suspect(text) is not None
    if text.isascii():
        assert suspect == _whole_hint(text)
    else:
        assert suspect or not _whole_hint(text)


def _walk_all(value: object) -> object:
    """Redaction as it was: every key tested, every string searched with the one regex."""
    if isinstance(value, str):
        return _secrets.VALUE_RE.sub(capture.REDACTED, value)
    if isinstance(value, list):
        return [_walk_all(v) for v in value]
    if isinstance(value, dict):
        key_re = capture.settings.redact_key_re
        return {k: capture.REDACTED if key_re.search(k) else _walk_all(v) for k, v in value.items()}
    return value


_values = st.recursive(
    _texts | st.integers(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=6,
)


@quick
@given(_values)
def test_scrub_redacts_what_searching_every_string_and_key_redacts(value: object) -> None:
    text = capture.capture(value)
    assert capture.decode(capture.scrub(text)) == _walk_all(capture.decode(text))


def test_an_llm_calls_record_with_token_counts_is_not_walked_and_a_key_in_it_is() -> None:
    """``"input_tokens"`` passes the fragment test (``token``) but no pattern: the record is
    left as it is; an ``api_key`` beside it is still found."""
    record = '{"usage":{"input_tokens":5,"output_tokens":4,"total_tokens":9},"stream":true}'
    assert capture._suspect(record) is None
    assert capture._suspect(record.replace('"stream"', '"api_key"')) is not None
    assert capture._suspect(record.replace("true", '"Bearer abcdefgh12345678"')) is not None


@pytest.mark.parametrize(
    "text",
    [
        '{"clé": "x", "api_key": 1}',  # not ASCII: searched case-folded, not lower-cased
        '{"\u212aey": "x", "Api_Key": 1}',
        '{"note": "Authorization: BEARER abcdefgh12345678"}',
        "AKIAABCDEFGHIJKLMNOP",
        '{"note": "\u017fecret=hunter2"}',  # re takes the long s for an s ignoring case
        '{"note": "token\u00a0= hunter2"}',  # and a no-break space for a space
    ],
)
def test_secret_looking_texts_pass_in_any_case_and_script(text: str) -> None:
    assert capture._suspect(text) is not None
    assert capture._suspect(text.upper()) is not None


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


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ({"note": "\u017fecret=hunter2, as said"}, ", as said"),
        ({"note": "the token\u00a0= hunter2 here"}, " here"),
        ({"\u017fession": "hunter2", "n": 1}, '"n":1'),
        (["caf\u00e9 " * 40 + "api_key=hunter2"], "caf\u00e9"),
    ],
)
def test_a_secret_in_text_that_is_not_ascii_is_redacted(value: object, kept: str) -> None:
    clean = capture.scrub(capture.capture(value))
    assert clean is not None
    assert "hunter2" not in clean
    assert capture.REDACTED in clean
    assert kept in clean


@quick
@given(_texts)
def test_values_are_replaced_where_and_as_the_one_regex_replaces_them(text: str) -> None:
    """The one regex tried only where a value pattern's form matches: the same text out."""
    assert _secrets.redact_values(text) == _secrets.VALUE_RE.sub(capture.REDACTED, text)

"""What is redacted, and how it is found fast: one matcher for the client and the server (a leaf).

``secrets.json`` beside this module holds the patterns (its ``description`` says the format):
``keys`` (searched ignoring case in mapping and record keys), ``values`` (searched in every
string) and ``fragments``, lower-case substrings one of which every match of a pattern holds.

The client's ``pipelens._core.capture`` and the server's ``pipelens_server._ingest._scrub`` both
redact with what is here, so they find the same secrets at the same cost:

* :func:`folded` lower-cases a text as ``re`` compares it with ASCII letters when it ignores
  case, and :func:`fragments_in` names the fragments it holds: most texts hold none, and no
  pattern can match them;
* each pattern is searched as one or more *forms* (:func:`hints`): lower-cased, and where the
  pattern as written would have ``re`` try it at every position of a text (a leading ``\\b`` or
  lookbehind, an alternation of words), rewritten to begin with letters ``re`` skips to; each
  form is searched only in a text holding one of its fragments;
* :func:`redact_values` replaces the matches of the value patterns as their one regex would,
  trying that regex only where a form matched: the regex itself costs 0.2 ms a KB of text.

This module imports nothing of PipeLens, so the server may import it beside ``events``.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import NamedTuple

REDACTED = "[REDACTED]"

_DATA = json.loads(resources.files("pipelens").joinpath("secrets.json").read_bytes())
#: Key patterns; ``token`` matches only as a suffix so that ``max_tokens`` or ``total_tokens``
#: stay visible.
KEYS: tuple[str, ...] = tuple(_DATA["keys"])
#: Patterns of values that look like credentials wherever they appear (API keys of OpenAI,
#: Google, AWS, GitHub, Slack; bearer tokens, JWTs, URL passwords, ``api_key=...`` in text).
VALUES: tuple[str, ...] = tuple(_DATA["values"])
#: Lower-case substrings one of which every match of a key or value pattern holds.
FRAGMENTS: tuple[str, ...] = tuple(_DATA["fragments"])
#: The value patterns as one regex: what a match is, and what replacing them means.
VALUE_RE = re.compile("|".join(VALUES))

# --- the fragments a text holds --------------------------------------------------------------

#: Below this length one regex of every fragment tells that a text holds none faster than a
#: test of each in turn (0.7 against 1.4 µs at 8 characters, measured).
_SHORT_TEXT = 48
#: From this length each fragment's rarest character is looked for first: finding one character
#: is ``memchr`` (0.1 µs over 10 KB), so in most prose, which has no ``_``, ``-``, ``:``, ``j``
#: or ``z``, nine of the 23 fragments cost next to nothing. The rest are searched from their
#: rarest character on (``ken(?<=token)``), those sharing it at once: ``re`` skips to a
#: literal's first character faster than a substring test of a short fragment runs (3.4
#: against 6.5 µs for ``token`` over 10 KB), and 12 searches cover the 23 (1.5x faster).
_LONG_TEXT = 256
#: Letters from the most to the least common in English text.
_LETTERS_BY_USE = "etaoinshrdlcumwfgypbvkjxqz"
_ANY_FRAGMENT = re.compile("|".join(map(re.escape, FRAGMENTS)))
_NONE: frozenset[str] = frozenset()


def _rarest(fragment: str) -> int:
    def rank(i: int) -> int:  # not a letter (``_``, ``-``, ``:``): rarer than any
        c = fragment[i]
        return _LETTERS_BY_USE.index(c) if c in _LETTERS_BY_USE else len(_LETTERS_BY_USE)

    return max(range(len(fragment)), key=rank)


def _from_rarest(fragments: Iterable[str]) -> tuple[_ByRarest, ...]:
    """The fragments grouped by their rarest character, each written from it on."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for fragment in fragments:
        at = _rarest(fragment)
        behind = f"(?<={re.escape(fragment)})" if at else ""
        groups.setdefault(fragment[at], []).append(
            (fragment, re.escape(fragment[at + 1 :]) + behind)
        )
    return tuple(
        _ByRarest(
            rare,
            re.compile(re.escape(rare) + "(?:" + "|".join(rest for _, rest in members) + ")"),
            tuple((f, re.compile(re.escape(rare) + rest)) for f, rest in members),
        )
        for rare, members in groups.items()
    )


class _ByRarest(NamedTuple):
    """The fragments whose rarest character is ``rare``: one regex of them all (``k(?:ey|
    en(?<=token)|…)``), then one each, searched only in a text one of them is in."""

    rare: str
    together: re.Pattern[str]
    each: tuple[tuple[str, re.Pattern[str]], ...]


_BY_RAREST = _from_rarest(FRAGMENTS)

#: The characters besides ASCII letters that ``re`` takes for one when it ignores case (the
#: dotted and the dotless i, the long s, the Kelvin sign), and that letter.
_TO_ASCII = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"), ("\u212a", "k"))


def folded(text: str) -> str:
    """``text`` lower-cased as ``re`` compares it with ASCII letters when it ignores case: a
    pattern's match there holds the pattern's fragments. Every character keeps its place (the
    dotted capital I, the one whose lower case is two, becomes an ``i`` first)."""
    if not text.isascii():
        for char, letter in _TO_ASCII:
            if char in text:
                text = text.replace(char, letter)
    return text.lower()


def fragments_in(lowered: str) -> frozenset[str]:
    """The fragments in a :func:`folded` text."""
    if len(lowered) >= _LONG_TEXT:
        found: list[str] = []
        for rare, together, each in _BY_RAREST:
            if rare in lowered and together.search(lowered):
                found += (
                    [each[0][0]] if len(each) == 1 else [f for f, r in each if r.search(lowered)]
                )
        return frozenset(found)
    if len(lowered) < _SHORT_TEXT:
        if _ANY_FRAGMENT.search(lowered) is None:  # most captured values: '{"i":57}', '58'
            return _NONE
    else:
        for fragment in FRAGMENTS:  # a plain loop is the fastest way through them
            if fragment in lowered:
                break
        else:
            return _NONE
    return frozenset(f for f in FRAGMENTS if f in lowered)


# --- the patterns' forms ---------------------------------------------------------------------

#: The URL password pattern's form, which matches the ``://`` its lookbehind reads too.
_URL_USER_FORM = "://[^/\\s:@\"'<>]+:[^/\\s@\"'<>]+(?=@)"
_LEADS = {_URL_USER_FORM: len("://")}

#: Patterns that ``re`` would try at every position of a text (a leading ``\b`` or lookbehind,
#: an alternation of words), and the forms searched for them instead: each begins with letters
#: ``re`` skips to, holds a fragment, and together they match wherever the pattern does (as
#: tested). 150-190 µs over 10 KB each, as written; 7-12 µs so. A form made of a lookbehind
#: matches its text too: :data:`_LEADS` says how many characters it begins earlier.
_SEARCH_FORMS: dict[str, tuple[str, ...]] = {
    r"\bjwt\b": (r"jwt\b(?<=\bjwt)",),
    r"gh[pousr]_[A-Za-z0-9]{20,}": tuple(f"gh{c}_[A-Za-z0-9]{{20,}}" for c in "pousr"),
    r"[Bb]earer\s+[A-Za-z0-9._~+/=-]{8,}": (r"bearer\s+[A-Za-z0-9._~+/=-]{8,}",),
    "(?<=://)[^/\\s:@\"'<>]+:[^/\\s@\"'<>]+(?=@)": (_URL_USER_FORM,),
    VALUES[-1]: tuple(
        f"(?i:{word}\\s*[=:]\\s*['\"]?[^\\s'\"&,;)]+)"
        for word in (
            "api[_-]?key",
            "passw(?:or)?d",
            "passphrase",
            "pwd",
            "secret",
            "token",
            "access[_-]?key",
        )
    ),
}


class Hint(NamedTuple):
    """One search form of a pattern: the fragments written in it (every match holds one of
    them, as tested), the form lower-cased, searched case-sensitively in a text
    :func:`folded`, and how many characters before the pattern's own match it begins. It
    matches there wherever the form matches the text ignoring case, and ``re`` skips to its
    first letters, which it cannot do ignoring case (7-12x faster)."""

    gates: frozenset[str]
    pattern: re.Pattern[str]
    lead: int


def _hint(form: str) -> Hint:
    lowered = form.lower()
    gates = frozenset(f for f in FRAGMENTS if f in lowered)
    lead = _LEADS.get(form, 0)
    if re.search(r"\\[A-Z]", form):  # \S, \W, \D, \B mean something else lower-cased
        return Hint(gates, re.compile(form, re.IGNORECASE), lead)
    return Hint(gates, re.compile(lowered.replace("(?i:", "(?:")), lead)


def forms(pattern: str) -> tuple[Hint, ...]:
    """The forms ``pattern`` is searched as."""
    return tuple(map(_hint, _SEARCH_FORMS.get(pattern, (pattern,))))


def hints(patterns: Iterable[str]) -> dict[str, tuple[Hint, ...]]:
    """The forms of ``patterns``, by the fragments that gate them: a text's fragments name the
    few forms to search in it."""
    every = [hint for pattern in patterns for hint in forms(pattern)]
    return {f: tuple(h for h in every if f in h.gates) for f in FRAGMENTS}


def hinted(by_fragment: dict[str, tuple[Hint, ...]], lowered: str, present: Iterable[str]) -> bool:
    """Whether a form of the fragments ``present`` in the :func:`folded` text matches it."""
    for fragment in present:
        for hint in by_fragment[fragment]:
            if hint.pattern.search(lowered) is not None:
                return True
    return False


VALUE_HINTS = hints(VALUES)


# --- replacing the values ----------------------------------------------------------------------


def _starts(hint: Hint, lowered: str) -> Iterator[int]:
    """Where in ``lowered``, in order, a match of the pattern of ``hint`` may begin."""
    match = hint.pattern.search(lowered)
    while match is not None:
        yield match.start() + hint.lead
        match = hint.pattern.search(lowered, match.start() + 1)


def redact_values(text: str, present: Iterable[str] | None = None) -> str:
    """``text`` with every match of a value pattern replaced by ``[REDACTED]``, as
    ``VALUE_RE.sub`` replaces them, the regex tried only where a form matched (a match of it
    begins only there), in order. ``present``: fragments that may be in ``text`` (those of a
    whole document it is part of), when they are known; others are not looked for."""
    lowered = folded(text)
    if len(lowered) != len(text):  # pragma: no cover - folded() keeps every character's place
        return VALUE_RE.sub(REDACTED, text)
    here = fragments_in(lowered) if present is None else [f for f in present if f in lowered]
    searched = {hint for fragment in here for hint in VALUE_HINTS[fragment]}
    if not searched:
        return text
    parts: list[str] = []
    end = 0
    for start in heapq.merge(*[_starts(hint, lowered) for hint in searched]):
        match = VALUE_RE.match(text, start) if start >= end else None
        if match is not None:
            parts += (text[end:start], REDACTED)
            end = match.end()
    return "".join((*parts, text[end:])) if parts else text

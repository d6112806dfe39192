"""The log processor that keeps secrets out of the logs (:class:`Redactor`), and the
secrets it looks for (:class:`Secrets`).

Any configured secret that appears anywhere in a string field of an event, however deep
in a dict or a list, is replaced by :data:`REDACTED`; values under key-like names
(``api_key``, ``Authorization``, ...) are masked whatever they hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

REDACTED = "[REDACTED]"
SHORT_SECRET = 12  # characters; shorter secrets are matched as whole words only

_SENSITIVE_KEYS = frozenset({"authorization", "api_key", "apikey", "key", "password", "token"})
# Field values that are never cleaned (unless under a key-like name), by exact type.
_PLAIN = frozenset({int, float, bool, type(None)})
# The redactor remembers this many names and cleaned strings, of at most _REMEMBERED_CHARS.
_REMEMBERED = 4096
_REMEMBERED_CHARS = 256
# Up to this many short secrets, a string is looked for each of them (``in``) before the
# whole-word pattern runs: most strings hold none, and ``in`` is far cheaper than a search.
_FEW_SHORT = 8
# Up to this many long secrets per window of SHORT_SECRET characters in a string, each is
# looked for in turn; past it, the windows are looked up (see Secrets.long_in).
_PER_WINDOW = 12


def _sensitive(name: Any) -> bool:
    """Whether values under the field ``name`` are masked whatever they hold."""
    return isinstance(name, str) and name.lower() in _SENSITIVE_KEYS


class Secrets:
    """The secret values the configs of this process named, and whether a string holds one.

    A secret of :data:`SHORT_SECRET` characters or more is found anywhere; a shorter one
    ("adm") also is part of ordinary words ("readmitted"), so it is found only where it
    stands alone, not inside a word. :meth:`add` (a reload's, its one writer) only adds: a
    key a reload removed may still come in, and is still a secret.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._all: frozenset[str] = frozenset()
        self.long: list[str] = []  # the long ones, longest first
        # The long ones by their first SHORT_SECRET characters: with many secrets, a string
        # is looked up window by window instead of looked for each secret in turn.
        self._starts: dict[str, list[str]] = {}
        self.short: re.Pattern[str] | None = None  # the short ones, as whole words
        self.short_words: list[str] | None = None  # the short ones, if few
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Add ``secrets`` (empty strings are none)."""
        known = self._all | {s for s in secrets if s}
        if known == self._all:
            return
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(known, key=len, reverse=True)
        short = [s for s in ordered if len(s) < SHORT_SECRET]
        pattern = (
            re.compile(
                rf"(?<![A-Za-z0-9_\-])(?:{'|'.join(map(re.escape, short))})(?![A-Za-z0-9_\-])"
            )
            if short
            else None
        )
        self.long = [s for s in ordered if len(s) >= SHORT_SECRET]
        starts: dict[str, list[str]] = {}
        for secret in self.long:  # each list longest first, as self.long
            starts.setdefault(secret[:SHORT_SECRET], []).append(secret)
        self._starts = starts
        self.short = pattern
        self.short_words = short if len(short) <= _FEW_SHORT else None
        self._all = known

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def long_in(self, value: str) -> list[str]:
        """The long secrets ``value`` holds, longest first.

        Each is looked for in turn (``in``, about 17 ns) unless :meth:`_by_windows`: then
        each window of :data:`SHORT_SECRET` characters is looked up among the secrets'
        beginnings (about 200 ns a window), so that the cost follows the string's length,
        not the number of keys.
        """
        if not self._by_windows(value):
            return [secret for secret in self.long if secret in value]
        starts = self._starts
        found: list[str] = []
        for i in range(len(value) - SHORT_SECRET + 1):
            candidates = starts.get(value[i : i + SHORT_SECRET])
            if candidates is not None:
                found.extend(s for s in candidates if s not in found and s in value)
        if len(found) > 1:
            found.sort(key=len, reverse=True)
        return found

    def found_in(self, value: str) -> bool:
        """Whether ``value`` holds one of the secrets (as :class:`Redactor` finds them)."""
        if self._by_windows(value):
            if self.long_in(value):
                return True
        else:
            for secret in self.long:  # long_in's first way, without its list: most hold none
                if secret in value:
                    return True
        short = self.short
        return short is not None and self._short_maybe_in(value) and bool(short.search(value))

    def scrub(self, value: str) -> str:
        """``value`` with every secret in it replaced by :data:`REDACTED` (``value`` itself
        if it holds none)."""
        if self._by_windows(value):
            for secret in self.long_in(value):
                value = value.replace(secret, REDACTED)
        else:
            for secret in self.long:  # long_in's first way, without its list: most hold none
                if secret in value:
                    value = value.replace(secret, REDACTED)
        short = self.short
        if short is not None and self._short_maybe_in(value):
            return short.sub(REDACTED, value)
        return value

    def _by_windows(self, value: str) -> bool:
        """Whether the long secrets are over :data:`_PER_WINDOW` per window of ``value``:
        then ``value`` is looked up by its windows rather than searched for each."""
        return len(self.long) > _PER_WINDOW * (len(value) - SHORT_SECRET + 1)

    def _short_maybe_in(self, value: str) -> bool:
        """Whether a short secret may stand in ``value`` (few: one of them is in it, by
        ``in``; many: always asked of the whole-word pattern)."""
        words = self.short_words
        if words is None:
            return True
        for word in words:  # noqa: SIM110 - a generator costs more than the few words
            if word in value:
                return True
        return False


class Redactor:
    """A processor that removes secrets from log events.

    Most fields of most lines repeat (the access line's method, path, key, model, level,
    event name): what it made of a name, or of a short string seen twice, is remembered,
    so that each is looked at once, not on every line. A string seen once (a request id)
    is cleaned each time and only noted as seen: one-off strings neither fill nor churn
    what is remembered.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Those of now: a later Secrets.add (a reload) configures a new Redactor.
        # A short secret is replaced where it stands alone, not inside a word (which would
        # both mangle the log and show which words hold it).
        found = Secrets(secrets)
        self.secrets = found.long
        self._scrub = found.scrub  # a string with every secret in it replaced
        self._names: dict[Any, bool] = {}  # name: whether its values are masked
        self._strings: dict[str, str] = {}  # string seen twice: it cleaned
        self._once: set[str] = set()  # strings seen once lately

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        names, strings = self._names, self._strings
        for name, value in event.items():
            masked = names.get(name)
            if masked is None:
                masked = self._masked(name)
            if masked:
                if value is not None:
                    event[name] = REDACTED
            elif type(value) is str:
                cleaned = strings.get(value)
                if cleaned is None:
                    cleaned = self._fresh(value)
                if cleaned is not value:
                    event[name] = cleaned
            elif type(value) not in _PLAIN:
                event[name] = self._clean(name, value)
        return event

    def _masked(self, name: Any) -> bool:
        """Whether values under ``name`` are masked whatever they hold (remembered)."""
        masked = _sensitive(name)
        if len(self._names) >= _REMEMBERED:
            self._names.clear()
        self._names[name] = masked
        return masked

    def _fresh(self, value: str) -> str:
        """:meth:`_scrub` of a string not remembered; remembered if it is short and was
        seen once already (a second chance: a one-off string is never remembered)."""
        cleaned = self._scrub(value)
        if len(value) <= _REMEMBERED_CHARS:
            once = self._once
            if value in once:
                if len(self._strings) >= _REMEMBERED:
                    self._strings.clear()
                self._strings[value] = cleaned
            else:
                if len(once) >= _REMEMBERED:
                    once.clear()
                once.add(value)
        return cleaned

    def _clean(self, name: Any, value: Any) -> Any:
        if _sensitive(name) and value is not None:
            return REDACTED
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(None, v) for v in value]
        return value

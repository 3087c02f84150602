"""Redaction of secrets and personal data in text that leaves the process (spans, logs, trace files).

``Redactor()`` is a callable on ``str``: every match of its patterns is replaced by ``[REDACTED:<name>]``.
The built-in patterns cover provider API keys (OpenAI, Anthropic, AWS, GitHub, Google, Slack), bearer
tokens, JSON Web Tokens, private-key blocks and e-mail addresses. A built-in pattern runs only when one of
its literal markers (``sk-``, ``AKIA``, ``@``, ...) occurs in the text, so text without secrets costs a few
substring tests.

    from looplet.telemetry.redact import Redactor, redact, redact_json
    redact("key sk-proj-abc...")                        # the default redactor
    r = Redactor(extra=[("ticket", r"TCK-\\d{6}")])     # defaults plus your own
    r.redact_json({"messages": [...]})                  # every string in a JSON-like value

Stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Union

__all__ = ["Redactor", "DEFAULT_PATTERNS", "redact", "redact_json"]

#: (name, regular expression). Order matters where patterns overlap: the first alternative that matches
#: at a position wins (``sk-ant-`` before ``sk-``).
DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{16,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    ("aws_secret_key", r"(?i)(?<=aws_secret_access_key)(?:\"?\s*[:=]\s*\"?)[A-Za-z0-9/+=]{40}"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("bearer_token", r"(?i)(?<=\bbearer )[A-Za-z0-9\-._~+/]{8,}=*"),
    ("email", r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"),
)

_AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")
_TRIGGERS: dict[tuple[str, str], tuple[str, ...]] = {
    pair: {
        "private_key": ("-----BEGIN ",),
        "anthropic_key": ("sk-ant-",),
        "openai_key": ("sk-",),
        "aws_access_key": _AWS_PREFIXES,
        "aws_secret_key": ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "Aws_Secret_Access_Key"),
        "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        "google_api_key": ("AIza",),
        "slack_token": ("xox",),
        "jwt": ("eyJ",),
        "bearer_token": ("earer ", "EARER "),
        "email": ("@",),
    }[pair[0]]
    for pair in DEFAULT_PATTERNS
}

PatternSpec = Union[str, "re.Pattern[str]", tuple[str, Union[str, "re.Pattern[str]"]]]

_NUMBERS = frozenset({int, float, bool})
_SECRET_KEYS = re.compile(
    r"(?i)^(?:.*[_\-.])?(?:api[_\-]?key|apikey|password|passwd|secret|authorization|"
    r"access[_\-]?token|refresh[_\-]?token|auth[_\-]?token|client[_\-]?secret|"
    r"private[_\-]?key|cookie|x[_\-]api[_\-]key)$"
)


class Redactor:
    """Replace secrets in text with ``[REDACTED:<name>]``.

    patterns: (name, regex) pairs; ``DEFAULT_PATTERNS`` unless given (``()`` for none).
    extra: more patterns, added after ``patterns``: (name, regex) pairs, regex strings or compiled
        patterns (those are named ``custom``).
    """

    __slots__ = ("_always", "_gated", "_patterns", "_any_trigger")

    def __init__(
        self,
        patterns: Iterable[tuple[str, str]] = DEFAULT_PATTERNS,
        extra: Iterable[PatternSpec] | None = None,
    ) -> None:
        specs: list[tuple[str, str]] = []
        for name, pattern in patterns:
            specs.append((str(name), _source(pattern)))
        for item in extra or ():
            if isinstance(item, tuple):
                name, pattern = item
                specs.append((str(name), _source(pattern)))
            else:
                specs.append(("custom", _source(item)))
        always: list[tuple[re.Pattern[str], str]] = []
        gated: list[tuple[tuple[str, ...], re.Pattern[str], str]] = []
        for name, pattern in specs:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"redaction pattern {name!r} is not a valid regular expression: {exc}"
                ) from None
            # A built-in pattern only runs when one of its literal markers is in the text, so clean text
            # costs a few substring tests instead of a regex scan per pattern.
            triggers = _TRIGGERS.get((name, pattern))
            if triggers:
                gated.append((triggers, regex, f"[REDACTED:{name}]"))
            else:
                always.append((regex, f"[REDACTED:{name}]"))
        self._patterns = tuple(specs)
        self._gated = tuple(gated)
        self._always = tuple(always)
        # one scan for any marker at all: most text has none, and then no pattern runs
        markers = {t for triggers, _regex, _repl in gated for t in triggers}
        self._any_trigger = re.compile(_trie(markers)) if markers else None

    @property
    def patterns(self) -> tuple[tuple[str, str], ...]:
        return self._patterns

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._any_trigger is not None and self._any_trigger.search(text) is not None:
            for triggers, regex, repl in self._gated:
                for t in triggers:
                    if t in text:
                        text = regex.sub(repl, text)
                        break
        for regex, repl in self._always:
            text = regex.sub(repl, text)
        return text

    def redact_json(self, obj: Any, _depth: int = 0) -> Any:
        """A copy of a JSON-like value with every string redacted, dict keys included (two keys redacted
        to the same text become ``key`` and ``key#2``). Values under keys that name a secret (``api_key``,
        ``password``, ``authorization``, ...) are replaced whole."""
        if isinstance(obj, str):
            return self(obj)
        if obj is None or isinstance(obj, (bool, int, float)):
            return obj
        if _depth > 64:
            return "…"
        if isinstance(obj, dict):
            out: dict[str, Any] = {}
            for k, v in obj.items():
                key = k if isinstance(k, str) else str(k)
                if isinstance(v, (str, int, float)) and not isinstance(v, bool) and _SECRET_KEYS.match(key):
                    value: Any = "[REDACTED:secret_field]"
                elif v is None or type(v) in _NUMBERS:  # most values: kept without a call
                    value = v
                else:
                    value = self.redact_json(v, _depth + 1)
                key = self(
                    key
                )  # keys too: a result keyed by e-mail address, an argument name the model made up
                if key in out:  # two keys redacted alike: keep both
                    n = 2
                    while f"{key}#{n}" in out:
                        n += 1
                    key = f"{key}#{n}"
                out[key] = value
            return out
        if isinstance(obj, (list, tuple)):
            return [self.redact_json(v, _depth + 1) for v in obj]
        return self(repr(obj))

    def __repr__(self) -> str:
        return f"Redactor(patterns={[name for name, _ in self._patterns]!r})"


def _trie(words: Iterable[str]) -> str:
    """A regular expression matching any of ``words``, shared prefixes factored out (``sk-ant-|sk-`` becomes
    ``sk\\-(?:ant\\-)?``), which the regex engine scans much faster than a flat alternation."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + pattern(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word ends here; longer ones go on
            return body + "?" if len(branches) == 1 and len(body) == 1 else f"(?:{body})?"
        return body

    return pattern(root)


def _source(pattern: Any) -> str:
    if isinstance(pattern, re.Pattern):
        src = pattern.pattern
        if pattern.flags & re.IGNORECASE and not src.startswith("(?i)"):
            src = "(?i)" + src
        return src
    if not isinstance(pattern, str):
        raise TypeError(f"a redaction pattern must be a str or re.Pattern, got {type(pattern).__name__}")
    return pattern


#: The default redactor (built-in patterns).
redact: Callable[[str], str] = Redactor()


def redact_json(obj: Any) -> Any:
    """``redact.redact_json(obj)`` with the default redactor."""
    return redact.redact_json(obj)  # type: ignore[attr-defined]

"""Redaction of secrets and personal data in text that leaves the process (spans, logs, trace files, metrics).

``Redactor()`` is a callable on ``str``: every match of its patterns is replaced by ``[REDACTED:<name>]``.
Two things are redacted:

* **known secret values**, wherever they occur: the values of the process's environment variables whose
  name looks secret (``*_API_KEY``, ``*_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``, ...; read each time
  a ``Redactor`` is made) and any value given to :func:`add_secret` (the backends register their API key).
  Values shorter than ``MIN_SECRET_CHARS`` are ignored. A value is replaced by ``[REDACTED:<env var>]``, or by
  the pattern's name when a built-in pattern matches the whole value.
* **patterns**: provider API keys (OpenAI, Anthropic, AWS, GitHub, Google, Slack), bearer tokens, JSON Web
  Tokens, private-key blocks and e-mail addresses. Patterns match anywhere in a string: a key glued to a word
  (``mail_sk-proj-...``) is caught. A built-in pattern runs only when one of its literal markers (``sk-``,
  ``AKIA``, ``@``, ...) occurs in the text, so text without secrets costs one scan.

Redact before cutting: :func:`redact_then_truncate` does both in that order (a key cut in half no longer
matches its pattern).

    from looplet.telemetry.redact import Redactor, add_secret, redact, redact_json
    redact("key sk-proj-abc...")                        # the default redactor
    add_secret("s3cr3t-value-from-a-vault")             # every redactor replaces it from now on
    r = Redactor(extra=[("ticket", r"TCK-\\d{6}")])     # defaults plus your own
    r.redact_json({"messages": [...]})                  # every string in a JSON-like value

Stdlib only.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, Union

__all__ = [
    "Redactor",
    "DEFAULT_PATTERNS",
    "MIN_SECRET_CHARS",
    "add_secret",
    "redact",
    "redact_json",
    "redact_then_truncate",
    "redact_event_dict",
    "secret_env_names",
    "secrets_version",
]

#: (name, regular expression). No ``\b`` anchors: a secret glued to a word character is still found.
#: Order matters where patterns overlap: ``sk-ant-`` before ``sk-``.
DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"),
    ("anthropic_key", r"sk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openai_key", r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{16,}"),
    ("aws_access_key", r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}"),
    ("aws_secret_key", r"(?<=(?i:aws_secret_access_key))\"?\s*[:=]\s*\"?[A-Za-z0-9/+=]{40}"),
    ("github_token", r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
    ("google_api_key", r"AIza[0-9A-Za-z_\-]{35}"),
    ("slack_token", r"xox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("jwt", r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("bearer_token", r"(?<=(?i:bearer) )[A-Za-z0-9\-._~+/]{8,}=*"),
    # the local part is taken whole (it starts where local-part characters start), so a prefix glued to
    # the address is redacted with it, and a long run of letters without '@' is scanned once, not per letter
    ("email", r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
)

_AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")
_MARKERS = {
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
}
_TRIGGERS: dict[tuple[str, str], tuple[str, ...]] = {pair: _MARKERS[pair[0]] for pair in DEFAULT_PATTERNS}

PatternSpec = Union[str, "re.Pattern[str]", tuple[str, Union[str, "re.Pattern[str]"]]]

#: Known secret values shorter than this are not redacted by value (``DEBUG_TOKEN=1`` would blank every 1).
MIN_SECRET_CHARS = 8

#: Environment variable names whose values are secrets.
_SECRET_ENV = re.compile(r"(?i)(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIALS?)$")

_NUMBERS = frozenset({int, float, bool})
_SECRET_KEYS = re.compile(
    r"(?i)^(?:.*[_\-.])?(?:api[_\-]?key|apikey|password|passwd|secret|authorization|"
    r"access[_\-]?token|refresh[_\-]?token|auth[_\-]?token|client[_\-]?secret|"
    r"private[_\-]?key|cookie|x[_\-]api[_\-]key)$"
)


class _Secrets:
    """The process-wide set of known secret values (value -> label), shared by every ``Redactor``.
    Values are only ever added; ``version`` tells redactors to rebuild their scan."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.version = 0
        self._lock = threading.Lock()
        self._env_seen: dict[str, str] = {}

    def add(self, value: str, label: str) -> bool:
        if not isinstance(value, str):
            return False
        value = value.strip()
        if len(value) < MIN_SECRET_CHARS or value in self.values:
            return False
        with self._lock:
            self.values = {**self.values, value: label}  # copy on write: readers never see a dict change
            self.version += 1
        return True

    def snapshot_env(self) -> None:
        for name in secret_env_names():
            value = os.environ.get(name, "")
            if self._env_seen.get(name) != value:
                self._env_seen[name] = value
                self.add(value, name)


_SECRETS = _Secrets()


def secret_env_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The names of the environment variables whose values ``Redactor`` treats as secrets."""
    env = os.environ if environ is None else environ
    return sorted(name for name in env if _SECRET_ENV.search(name))


def add_secret(value: str | None, label: str = "secret") -> None:
    """Redact ``value`` (at least ``MIN_SECRET_CHARS`` long) wherever any redactor meets it from now on.
    Backends call this with their API key. ``label`` names it in ``[REDACTED:<label>]`` unless a built-in
    pattern names it better."""
    if value:
        _SECRETS.add(value, _label_for(value.strip(), label))


def secrets_version() -> int:
    """A number that changes whenever a known secret value is added: text redacted before it changed may
    hold the new secret (a cache of redacted text is stale once it changes)."""
    return _SECRETS.version


def _label_for(value: str, fallback: str) -> str:
    for name, pattern in DEFAULT_PATTERNS:
        if re.fullmatch(pattern, value):
            return name
    return fallback


class Redactor:
    """Replace secrets in text with ``[REDACTED:<name>]``.

    patterns: (name, regex) pairs; ``DEFAULT_PATTERNS`` unless given (``()`` for none).
    extra: more patterns, added after ``patterns``: (name, regex) pairs, regex strings or compiled
        patterns (those are named ``custom``).
    secrets: also replace the known secret values (the environment's secret-looking variables, read now,
        and everything given to :func:`add_secret`). Default True.
    """

    __slots__ = (
        "_always",
        "_gated",
        "_patterns",
        "_markers",
        "_scan",
        "_values",
        "_version",
        "_secrets",
        "_memo",
    )

    def __init__(
        self,
        patterns: Iterable[tuple[str, str]] = DEFAULT_PATTERNS,
        extra: Iterable[PatternSpec] | None = None,
        *,
        secrets: bool = True,
    ) -> None:
        specs = [(str(name), _source(pattern)) for name, pattern in patterns]
        for item in extra or ():
            if isinstance(item, tuple):
                specs.append((str(item[0]), _source(item[1])))
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
            # costs one scan instead of a regex scan per pattern.
            triggers = _TRIGGERS.get((name, pattern))
            if triggers:
                gated.append((triggers, regex, f"[REDACTED:{name}]"))
            else:
                always.append((regex, f"[REDACTED:{name}]"))
        self._patterns = tuple(specs)
        self._gated = tuple(gated)
        self._always = tuple(always)
        self._markers = frozenset(t for triggers, _regex, _repl in gated for t in triggers)
        self._secrets = secrets
        self._values: tuple[tuple[str, str], ...] = ()
        self._version = -1
        self._memo: dict[str, str] = {}
        if secrets:
            _SECRETS.snapshot_env()
        self._rebuild()

    def _rebuild(self) -> None:
        """One scan for any marker or known secret value: most text has none, and then nothing else runs."""
        values = _SECRETS.values if self._secrets else {}
        self._version = _SECRETS.version
        # longest first: a secret that contains another is replaced whole
        self._values = tuple(
            (v, f"[REDACTED:{label}]") for v, label in sorted(values.items(), key=lambda kv: -len(kv[0]))
        )
        words = set(self._markers) | {v for v, _ in self._values}
        self._scan = re.compile(_trie(words)) if words else None
        self._memo = {}

    def cached(self, text: str) -> str:
        """``self(text)``, remembered for short strings (field names, tool and model names, span names: the
        same few come back on every span and log line). Up to 4,096 strings are kept; adding a secret
        empties the memory."""
        if len(text) > 128:
            return self(text)
        if self._secrets and self._version != _SECRETS.version:
            self._rebuild()
        memo = self._memo
        out = memo.get(text)
        if out is None:
            out = self(text)
            if len(memo) >= 4096:
                memo.clear()
            memo[text] = out
        return out

    @property
    def patterns(self) -> tuple[tuple[str, str], ...]:
        return self._patterns

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._secrets and self._version != _SECRETS.version:
            self._rebuild()
        scan = self._scan
        if scan is not None and scan.search(text) is not None:
            for value, repl in self._values:
                if value in text:
                    text = text.replace(value, repl)
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
            return self._redact_dict(obj, _depth)
        if isinstance(obj, (list, tuple)):
            return [self.redact_json(v, _depth + 1) for v in obj]
        return self(repr(obj))

    def _redact_dict(self, obj: dict[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            key = k if isinstance(k, str) else str(k)
            if isinstance(v, (str, int, float)) and not isinstance(v, bool) and _SECRET_KEYS.match(key):
                value: Any = "[REDACTED:secret_field]"
            elif v is None or type(v) in _NUMBERS:  # most values: kept without a call
                value = v
            else:
                value = self.redact_json(v, depth + 1)
            key = self(key)  # keys too: a result keyed by e-mail address, an argument name the model made up
            if key in out:  # two keys redacted alike: keep both
                n = 2
                while f"{key}#{n}" in out:
                    n += 1
                key = f"{key}#{n}"
            out[key] = value
        return out

    def __repr__(self) -> str:
        return f"Redactor(patterns={[name for name, _ in self._patterns]!r}, secrets={self._secrets})"


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
        src: str = pattern.pattern
        if pattern.flags & re.IGNORECASE and not src.startswith("(?i)"):
            src = "(?i)" + src
        return src
    if not isinstance(pattern, str):
        raise TypeError(f"a redaction pattern must be a str or re.Pattern, got {type(pattern).__name__}")
    return pattern


_DEFAULT = Redactor()
#: The default redactor (built-in patterns and the known secret values).
redact: Callable[[str], str] = _DEFAULT


def redact_json(obj: Any) -> Any:
    """``redact.redact_json(obj)`` with the default redactor."""
    return _DEFAULT.redact_json(obj)


def redact_then_truncate(
    text: str, limit: int, redactor: Callable[[str], str] | None = None, suffix: str = "…"
) -> str:
    """``text`` redacted, then cut to ``limit`` characters (plus ``suffix`` when cut). In this order: a
    secret cut in half would no longer match its pattern, and its first half would leave the process."""
    text = (redactor or redact)(text)
    return text if len(text) <= limit else text[:limit] + suffix


#: Log fields looplet generates itself (hex ids, the time, the level): nothing to redact in them.
_GENERATED_FIELDS = frozenset({"timestamp", "level", "trace_id", "span_id", "run_id", "parent_span_id"})


def redact_event_dict(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """A structlog processor: every string of the event (message, field names and values, formatted
    exception) through the default redactor. Place it last before the renderer; ``configure_logging()``
    does, for structlog lines and for the stdlib ``looplet`` logger's records alike."""
    r = _DEFAULT
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key in _GENERATED_FIELDS or value is None or type(value) in _NUMBERS:
            pass
        elif isinstance(value, str):
            value = r.cached(value)
        else:
            value = r.redact_json(value)
        out[r.cached(key) if isinstance(key, str) else key] = value
    return out

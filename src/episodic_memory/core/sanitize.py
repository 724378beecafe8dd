"""Secret redaction: nothing that looks like a credential is ever stored.

Every text field of an episode goes through ``redact`` before the storage actor sees it, so it
must be fast on clean text (it runs on every step) and must not mangle ordinary tool output
(ids, hashes, paths, code). Clean text costs about twenty C-speed scans: token shapes are
regexes that start with a literal (``sk``, ``gh``, ``eyJ``), which the regex engine skips to as
fast as ``str.find``; ``key=value`` pairs are located from ``str.find`` hits of a few words
(``pass``, ``token``, ...) and parsed only where a separator follows.

A secret becomes ``[REDACTED:<kind>]`` and its surroundings stay (``postgres://app:`` and
``@db:5432`` around a URL password; ``Authorization: Bearer`` before a token). No rule matches
a marker, so ``redact(redact(x)) == redact(x)``. The kinds are listed in ``KINDS``.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pydantic import JsonValue

from episodic_memory.config import DEFAULT_LIMITS as L
from episodic_memory.core.base import Record, check_json_object
from episodic_memory.core.models import Episode, ExecutionStep, TaskContext, TaskOutcome
from episodic_memory.errors import ValidationError

__all__ = [
    "KINDS",
    "redact",
    "redact_json",
    "sanitize_context",
    "sanitize_episode",
    "sanitize_outcome",
    "sanitize_step",
    "secret_kinds",
]

# fmt: off
KINDS = frozenset({
    "private_key", "jwt", "anthropic_api_key", "openai_api_key", "stripe_key", "github_token",
    "gitlab_token", "huggingface_token", "slack_token", "slack_webhook", "google_api_key",
    "aws_access_key_id", "aws_secret_access_key", "url_password", "authorization", "bearer_token",
    "basic_auth", "password", "secret", "api_key", "token", "high_entropy",
})
"""Every ``<kind>`` a marker can carry."""

_MARK = "[REDACTED:"
_MARKER = re.compile(r"\[REDACTED:([a-z_]+)\]")
_I = re.ASCII | re.IGNORECASE
_A = re.ASCII
_R = TypeVar("_R", bound=Record)
_MAX_KEY = 64  # characters of a key looked at: bounds the work on adversarial input
_Span = tuple[int, int, int, str]  # start, rule rank (earlier rules win ties), end, kind

# -- which keys name secrets, and which values are no secret anyway -----------------------------
_PASSWORD_WORDS = frozenset({"password", "passwd", "pwd", "pass", "passphrase"})
_NOT_SECRET_TOKENS = frozenset({"page", "next", "continuation", "cursor", "sync", "pagination"})
_ENTROPY_WORDS = frozenset({"salt", "cookie", "session", "sessionid", "hmac", "auth"})
_SECRETISH = frozenset({
    "private", "signing", "encryption", "encrypt", "secret", "access", "session", "master", "auth",
    "hmac", "shared", "client", "app", "consumer", "webhook", "deploy", "license", "account",
    "service", "storage", "sas", "subscription", "ssh", "jwt", "crypto", "cipher",
})
_PLACEHOLDERS = frozenset({
    "none", "null", "nil", "true", "false", "undefined", "str", "string", "bytes", "int",
    "optional", "secretstr", "required", "redacted", "hidden", "masked", "empty", "unset", "n/a",
    "password", "passwd", "pwd", "secret", "token", "apikey", "api_key",
})
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "cred", "auth")
_NEVER_IN_TOKENS = frozenset(" \t[]<>{}|\\*'\"")
_MASK = frozenset("*xX•#.-_ ")
_WORDS, _CAMEL = re.compile(r"[^a-z0-9]+"), re.compile(r"([a-z0-9])([A-Z])")
_STAND_IN = re.compile(  # ${X}, {token}, {{ x }}, %(x)s, <token>; $ENV_VAR; self.password
    r"\$\{\w+\}|\{\{?\s*[\w.]*\s*\}?\}|%\(\w+\)s|<[\w\s.\-]+>"
    r"|^(?:\$[A-Z_][A-Z0-9_]*|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)$", _A)
_NAME = re.compile(r"[A-Za-z_]\w*", _A)
_CONST = re.compile(r"_*[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+", _A)
_WORDY = re.compile(r"[a-z]+(?:[_\-./: ][a-z]+)*|[A-Z]+(?:_[A-Z]+)*", _A)
_CAMEL_WORDS = re.compile(r"(?:[a-z]{2,}|[A-Z][a-z]{2,})(?:[A-Z][a-z]{2,}|[0-9]+)*", _A)
_HE_CHARS = re.compile(r"[A-Za-z0-9+/=_\-.~]+", _A)
_HEX = re.compile(r"[0-9a-fA-F]+", _A)
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", _A)
# fmt: on


def _key_words(key: str) -> list[str]:
    if not (key.islower() or key.isupper()):  # camelCase → camel_case, only when it may be
        key = _CAMEL.sub(lambda m: f"{m[1]}_{m[2]}", key)
    return [w for w in _WORDS.split(key.lower()) if w]


@functools.lru_cache(maxsize=4096)  # keys repeat across steps: DB_PASSWORD, max_tokens, ...
def _key_kind(key: str) -> tuple[str, bool] | None:
    """The kind a key's value is redacted as, and whether the value must also look random.

    Decided by the key's last words (callers pass at most ``_MAX_KEY`` characters), so
    ``DB_PASSWORD`` and ``clientSecret`` count; ``max_tokens`` and ``cache_key`` do not.
    """
    words = _key_words(key)
    if not words or "public" in words:  # publicKeyToken, public_key: published on purpose
        return None
    last, prev = words[-1], (words[-2] if len(words) > 1 else "")
    if last.endswith(("password", "passwd")) or (last in _PASSWORD_WORDS and prev + last != "pass"):
        return ("password", False)  # but a bare "pass" is a verb
    if words[-3:] == ["secret", "access", "key"]:
        return ("aws_secret_access_key", False)  # aws_secret_access_key, SecretAccessKey
    if last.endswith("token"):
        return (
            None if prev in _NOT_SECRET_TOKENS or last.endswith("pagetoken") else ("token", False)
        )
    if (last == "key" and prev == "api") or last.endswith("apikey"):
        return ("api_key", False)
    if last.endswith("secret") or last in ("secrets", "credential", "credentials", "secretkey"):
        return ("secret", False)
    if (last == "key" and prev == "private") or last == "privatekey":
        return ("private_key", False)
    if last == "key" and prev == "secret":
        return ("secret", False)
    if last in _ENTROPY_WORDS or (last.endswith("key") and (last[:-3] or prev) in _SECRETISH):
        return ("high_entropy", True)
    return None


def _is_example_value(value: str, key: str) -> bool:
    """Values that stand for a secret without being one: null, masks, templates, names, paths.

    ``password=password``, ``"client_secret": "clientSecret"``, ``token={token}``,
    ``api_key="sk-..."``, ``password=self.password``, ``PWD=/home/agent``, ``key: ~/id.pem``.
    """
    v = value.strip()
    if not v or v.startswith(_MARK) or v.lower() in _PLACEHOLDERS or set(v) <= _MASK:
        return True
    if any(s in v for s in ("***", "...", "…", "://")) or _STAND_IN.search(v):
        return True  # sk-..., hf_***; a URL's password has its own rule
    if (words := _key_words(v)) and words == _key_words(key)[-len(words) :]:
        return True
    if v[0] in "/~." and _key_words(key)[-1:] == ["pwd"]:
        return True  # PWD=/home/agent is the working directory
    is_path = v.startswith(("/", "~/", "./", "../")) and not any(c.isspace() for c in v)
    return is_path and _key_kind(key) != ("password", False)


def _looks_high_entropy(value: str) -> bool:
    """Random-looking: ≥16 token characters, mixed case with digits (or long hex), ≥3.5 bits.

    CamelCase words with numbers (``Sam2VideoSession``) are names, not keys.
    """
    if len(value) < 16 or not _HE_CHARS.fullmatch(value) or _UUID.fullmatch(value):
        return False
    n = len(value)
    bits = -sum(c / n * math.log2(c / n) for c in Counter(value).values())  # Shannon, per char
    if _HEX.fullmatch(value):
        return n >= 32 and bits >= 3.0
    kinds = sum(any(test(c) for c in value) for test in (str.islower, str.isupper, str.isdigit))
    return kinds == 3 and not _CAMEL_WORDS.fullmatch(value) and bits >= 3.5


_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class _Rule:
    """A pattern, run only if a ``gate`` literal (if any) occurs in the lowercased text.

    The first participating group of ``groups`` is replaced (else the whole match); ``kind_of``
    refines the kind or returns None to keep the match.
    """

    kind: str
    pattern: re.Pattern[str]
    gate: tuple[str, ...] = ()
    kind_of: Callable[[re.Match[str]], str | None] | None = None
    groups: tuple[str, ...] = ()

    def find(self, text: str, lowered: str, rank: int) -> Iterator[_Span]:
        """Every secret; after a match that is none, look again from its next character."""
        if self.gate and not any(g in lowered for g in self.gate):
            return
        pos = 0
        while (match := self.pattern.search(text, pos)) is not None:
            if (found := self.span(match, rank)) is not None:
                yield found
                pos = max(match.end(), match.start() + 1)
            else:
                pos = match.start() + 1

    def span(self, match: re.Match[str] | None, rank: int) -> _Span | None:
        """Where the secret is in ``match.string`` and its kind, or None if it is no secret."""
        kind = None if match is None else self.kind_of(match) if self.kind_of else self.kind
        if match is None or kind is None:
            return None
        group = next((g for g in self.groups if match.group(g) is not None), 0)
        return match.start(group), rank, match.end(group), kind


def _key(match: re.Match[str]) -> tuple[int, str]:
    """Where the key starts and the key: the matched word plus the key characters before it."""
    text, i = match.string, match.start()
    while i and text[i - 1] in _KEY_CHARS and match.start() - i < _MAX_KEY:
        i -= 1
    return i, text[i : match.end("key")]


def _kv_kind(match: re.Match[str]) -> str | None:
    value = next(v for v in match.group("dq", "sq", "eq", "v") if v is not None)
    key = _key(match)[1]
    if (found := _key_kind(key)) is None or _is_example_value(value, key):
        return None
    if found[1] and not _looks_high_entropy(value):
        return None
    if match.group("v") is not None and _code_or_prose(match, value):
        return None
    quoted_key = match.string[match.end("key") : match.end("key") + 1] in "\"'"
    if match.group("v") and value.isdigit() and (len(value) <= 3 or quoted_key):
        return None  # last_pass = 3; {"password": 20786} is a vocabulary, not a credential
    return None if found[0] != "password" and _not_a_token(value) else found[0]


def _not_a_token(value: str) -> bool:
    """Values a token, key or secret never takes: words, names, numbers, patterns, examples."""
    core = value.strip("[]<>|{}()#*-_ ")
    if len(core) < 8 or any(c in value for c in _NEVER_IN_TOKENS) or core.isdigit():
        return True  # token=5, "--token": "Use a User Access Token", token = r"[^\W\d]\w*"
    if _WORDY.fullmatch(core) or core.rstrip("0123456789").lower() in _PLACEHOLDERS:
        return True  # TOKEN = "send_message", token="token123"
    name = _NAME.fullmatch(value) and not any(c.isdigit() for c in value)
    return bool(name) and any(w in value.lower() for w in _SECRET_WORDS)


def _code_or_prose(match: re.Match[str], value: str) -> bool:
    """An unquoted value that is a call, an index, a variable, a word, or the next key."""
    text, end, sep = match.string, match.end(), match.start("sep")
    if text[end : end + 1] in ("(", "[") or value.endswith(":"):
        return True  # password = unquote(password), q_pass = q[..., :dim], "password= key: v"
    if _NAME.fullmatch(value):
        if value[0] == "_" or _CONST.fullmatch(value):
            return True  # token = _SEND_MESSAGE_TOKEN
        if any(w in value.lower() for w in _SECRET_WORDS):
            return True  # password=passphrase, credentials=new_credentials
        if not any(c.isdigit() for c in value) and ("_" in value or text[sep - 1 : sep] == " "):
            return True  # username, password = auth; key=id_crypto_modules
    return match.group("sep") in (":", "=>") and value.isalpha() and len(value) <= 12


def _header_kind(match: re.Match[str]) -> str | None:
    value, scheme = match.group("v"), (match.group("scheme") or "").strip().lower()
    if _is_example_value(value, "authorization") or value.endswith(":"):
        return None  # ...or the next header
    if not scheme and (value.isalpha() or len(value) < 8):
        return None  # "Authorization: failed", "authorization: see docs"
    return {"bearer": "bearer_token", "basic": "basic_auth"}.get(scheme, "authorization")


def _cli_kind(match: re.Match[str]) -> str | None:
    value, (begin, flag) = match.group("v"), _key(match)
    if not flag.startswith("-") or (begin and not match.string[begin - 1].isspace()):
        return None  # not a command-line flag
    if value.endswith(":"):
        return None  # the next key, not a value
    found = _key_kind(flag)
    if found is None or _is_example_value(value, flag) or (value.isalpha() and value.islower()):
        return None  # "use the --password option", "--token $TOKEN"
    if _CONST.fullmatch(value):
        return None  # --secrets HF_TOKEN names an environment variable
    return found[0]


def _lead(literal: str) -> str:
    """``literal`` not glued to a token character before it, checked after the literal so the
    regex keeps its fast literal prefix and a long run of repeats is tried once, not each time."""
    return rf"{literal}(?<![A-Za-z0-9_\-]{literal})"


# fmt: off
_T, _END = r"[A-Za-z0-9_\-]", r"(?![A-Za-z0-9_\-])"
_Q = r"(?:\\?[\"'])?"  # an optional quote, maybe escaped (JSON inside a JSON string)
_WORD = r"(?P<key>(?:pass|pwd|secret|token|key|auth|credential|salt|hmac|cookie|session)\w{0,64})"
_KV = re.compile(
    rf"{_WORD}{_Q}[ \t]*(?P<sep>:=|=>|[:=](?!=))[ \t]*(?:[bBrRuUfF]{{1,2}}(?=[\"']))?"
    r"(?:\"(?P<dq>(?:\\.|[^\"\\\r\n]){0,4096})\"|'(?P<sq>(?:\\.|[^'\\\r\n]){0,4096})'"
    r"|\\\"(?P<eq>[^\"\\\r\n]{0,4096})\\\""
    r"|(?P<v>\$\{\w*\}|[^\s\"'`\\,;&()\[\]{}<>=][^\s\"'`\\,;&()\[\]{}<>]{0,4096}))", _I)
_CLI = re.compile(rf"{_WORD}[ \t]+(?P<v>(?![\-\[])[^\s\"'\\]+)", _I)
_AFTER_KEY = re.compile(r"[a-z0-9_]{0,64}(?:\\?[\"'])?[ \t]*[:=]")
_AFTER_FLAG = re.compile(r"[a-z0-9_]{0,64}[ \t]+[^\s\-]")
# Words that locate a key in free text (_key_kind decides); keys named just session, cookie,
# salt or hmac are caught in JSON only: four more scans of every text would cost too much.
_KV_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")
_PEM_BODY = r"(?:[A-Za-z0-9+/=:,.\-\s]|\\[nr])"  # base64 lines, headers; \n when JSON-escaped

# Most specific first: where two match at the same place, the earlier rule names the kind.
_RULES: tuple[_Rule, ...] = (
    _Rule("private_key", re.compile(  # a truncated block is redacted to the end of its body
        rf"-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----{_PEM_BODY}{{0,300}}?"
        rf"[A-Za-z0-9+/]{{16}}{_PEM_BODY}*?"
        rf"(?:-----END (?P=label)-----|(?!{_PEM_BODY}))")),
    _Rule("jwt", re.compile(rf"{_lead('eyJ')}{_T}{{8,}}\.eyJ{_T}{{8,}}\.{_T}*{_END}")),
    _Rule("api_key", re.compile(  # one literal prefix for three vendors; groups name the kind
        rf"{_lead('sk')}(?:-ant-(?P<anthropic_api_key>{_T}{{20,}})|-(?P<openai_api_key>(?:proj|svcacct|"
        rf"admin)-{_T}{{20,}}|(?!ant-)(?={_T}*[0-9]){_T}{{20,}})|_(?:live|test)_(?P<stripe_key>"
        rf"[A-Za-z0-9]{{16,}})){_END}"), kind_of=operator.attrgetter("lastgroup")),
    _Rule("github_token", re.compile(
        rf"{_lead('g')}(?:(?P<github_token>h[pousr]_[A-Za-z0-9]{{30,}}|ithub_pat_\w{{30,}})|(?P<gitlab_token>"
        rf"lpat-{_T}{{20,}})){_END}"), kind_of=operator.attrgetter("lastgroup")),
    _Rule("huggingface_token", re.compile(rf"{_lead('hf_')}[A-Za-z0-9]{{30,}}{_END}")),
    _Rule("slack_token", re.compile(
        rf"{_lead('x')}(?:ox[abposre]|app-[0-9])-[A-Za-z0-9\-]{{10,}}{_END}")),
    _Rule("slack_webhook", re.compile(r"https?://hooks\.slack\.com/(?P<v>(?:services|workflows|"
          r"triggers)/[A-Za-z0-9_/\-]{10,})"), groups=("v",)),
    _Rule("stripe_key", re.compile(rf"{_lead('rk_')}(?:live|test)_[A-Za-z0-9]{{16,}}{_END}")),
    _Rule("api_key", re.compile(
        rf"{_lead('A')}(?:(?P<google_api_key>Iza{_T}{{35}})|(?P<aws_access_key_id>(?:KIA|SIA|BIA|CCA|3T"
        rf"[A-Z0-9])[A-Z0-9]{{16}})){_END}"), kind_of=operator.attrgetter("lastgroup")),
    _Rule("url_password", re.compile(  # scheme://user:PASSWORD@host, from the literal "://"
        r"://[^\s:/?#@\[\]\"'<>]*:(?!\[REDACTED:)(?P<v>[^\s@/?#\"'<>]+)@(?=[A-Za-z0-9\[])"),
          groups=("v",)),
    _Rule("authorization", re.compile(
        rf"(?<![A-Za-z0-9_\-])(?:proxy-)?authorization{_Q}[ \t]*[:=][ \t]*{_Q}(?P<scheme>(?:bearer"
        r"|basic|token|digest|negotiate|ntlm|apikey|aws4-hmac-sha256|sso-key)[ \t]+)?"
        r"(?P<v>[^\s\"'`\\,;()\[\]]{1,4096})", _I), ("authorization",), _header_kind, ("v",)),
    _Rule("bearer_token", re.compile(
        r"(?<![A-Za-z0-9_\-])bearer[ \t]+(?!\[REDACTED:)(?P<v>(?=[A-Za-z0-9\-._~+/]*[0-9])"
        r"[A-Za-z0-9\-._~+/]{12,}=*)", _I), ("bearer",), groups=("v",)),
)
_CLI_RULE = _Rule("password", _CLI, kind_of=_cli_kind, groups=("v",))
_KV_RULE = _Rule("password", _KV, kind_of=_kv_kind, groups=("dq", "sq", "eq", "v"))
# fmt: on


def _pairs(text: str, lowered: str) -> Iterator[_Span]:
    """``key=value`` and ``--flag value`` secrets, located from ``str.find`` hits of key words.

    The regexes run anchored, only where a word is followed by a separator (or, for a flag, a
    value), so prose full of "key" and "token" stays cheap; hits inside a secret already found
    are skipped, so a long run of repeated pairs costs linear time.
    """
    hits: list[tuple[int, bool]] = []
    for word in _KV_WORDS:
        i = lowered.find(word)
        while i >= 0:
            end = i + len(word)
            if _AFTER_KEY.match(lowered, end):
                hits.append((i, True))
            elif _AFTER_FLAG.match(lowered, end) and "-" in lowered[max(0, i - 40) : i]:
                hits.append((i, False))
            i = lowered.find(word, end)
    claimed = 0
    for i, pair in sorted(hits):
        if i >= claimed:
            if pair:
                found = _KV_RULE.span(_KV.match(text, i), len(_RULES))
            else:
                found = _CLI_RULE.span(_CLI.match(text, i), len(_RULES))
            if found is not None:
                claimed = found[2]
                yield found


def redact(text: str) -> str:
    """Replace every secret in ``text`` by ``[REDACTED:<kind>]``; idempotent, fast when clean.

    Where secrets overlap, the one starting first wins (the earlier rule on a tie: a JWT in
    a bearer header is a ``jwt``) and covers the other, so no part of either survives. A
    marker can expose a secret that was glued to the one it replaced (``AKIA…-----BEGIN``),
    so redaction repeats until nothing changes: each round leaves fewer unredacted
    characters, and clean text takes one round.
    """
    while len(text) >= 8 and (again := _redact_once(text)) != text:
        text = again
    return text


def _redact_once(text: str) -> str:
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters (İ) grow: keep indices aligned
        lowered = text.translate(_ASCII_LOWER)
    spans = [s for rank, rule in enumerate(_RULES) for s in rule.find(text, lowered, rank)]
    spans.extend(_pairs(text, lowered))
    if not spans:
        return text
    parts, last = [], 0
    for start, _, end, kind in sorted(spans):
        if start >= last:
            parts += [text[last:start], f"{_MARK}{kind}]"]
        last = max(last, end)
    parts.append(text[last:])
    return "".join(parts)


def secret_kinds(text: str) -> Counter[str]:
    """How many secrets of each kind ``redact`` removes from ``text`` (for metrics and tests)."""
    return Counter(_MARKER.findall(redact(text))) - Counter(_MARKER.findall(text))


def redact_json(value: JsonValue) -> JsonValue:
    """Redact every string in a JSON value, keys included; a secret-named key loses its value.

    Returns the very same object when nothing changed, so callers skip needless copies.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        items = [redact_json(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        out = {redact(k): _redact_keyed(k, v) for k, v in value.items()}
        same = len(out) == len(value) and all(k in value and out[k] is value[k] for k in out)
        return value if same else out
    return value


def _redact_keyed(key: str, item: JsonValue) -> JsonValue:
    key = key[-_MAX_KEY:]
    if (found := _key_kind(key)) is not None:
        kind, needs_entropy = found
        if isinstance(item, str) and not _is_example_value(item, key):
            plausible = kind == "password" or not _not_a_token(item)
            if plausible and (not needs_entropy or _looks_high_entropy(item)):
                return f"{_MARK}{kind}]"
        elif kind == "password" and isinstance(item, int) and not isinstance(item, bool):
            return f"{_MARK}{kind}]"  # numeric PINs and passwords
    return redact_json(item)


def _redact_fields(model: _R, texts: dict[str, int], lists: dict[str, int], *jsons: str) -> _R:
    """A copy with the named fields redacted (the model itself when nothing changed).

    Markers can be longer than what they replace, so text is cut back to its field's bound;
    a cut marker reveals nothing.
    """
    changed: dict[str, object] = {}
    for name, limit in texts.items():
        if (old := getattr(model, name)) is not None and (new := redact(old)[:limit]) != old:
            changed[name] = new
    for name, limit in lists.items():
        if (items := [redact(s)[:limit] for s in getattr(model, name)]) != getattr(model, name):
            changed[name] = items
    for name in jsons:
        if (data := redact_json(getattr(model, name))) is not getattr(model, name):
            assert isinstance(data, dict)  # redact_json maps a dict to a dict
            try:
                changed[name] = check_json_object(data)
            except ValueError as exc:
                where = f"{type(model).__name__}.{name}"
                raise ValidationError(where, f"after redaction {exc}", "send less data") from None
    return model.model_copy(update=changed) if changed else model


def sanitize_step(step: ExecutionStep) -> ExecutionStep:
    """The step with action, parameters, observation, error and metadata redacted."""
    texts = {"action": L.max_action_chars, "error": L.max_error_chars}
    texts["observation"] = L.max_observation_chars
    return _redact_fields(step, texts, {}, "parameters", "metadata")


def sanitize_outcome(outcome: TaskOutcome) -> TaskOutcome:
    """The outcome with summary, reason, completed/failed items and artifacts redacted."""
    n = L.max_action_chars
    return _redact_fields(outcome, {"summary": n, "reason": n}, dict.fromkeys(_OUTCOME_LISTS, n))


def sanitize_context(context: TaskContext) -> TaskContext:
    """The context with its labels and tags redacted (agents do put tokens in tags)."""
    texts = dict.fromkeys(("language", "domain", "framework", "task_type"), L.max_label_chars)
    return _redact_fields(context, texts, {"tags": L.max_tag_chars})


def sanitize_episode(episode: Episode) -> Episode:
    """The episode with every free-text and free-form field redacted, steps included."""
    steps = [sanitize_step(step) for step in episode.steps]
    parts: dict[str, object] = {
        "context": sanitize_context(episode.context),
        "steps": episode.steps if all(map(operator.is_, steps, episode.steps)) else steps,
        "outcome": episode.outcome and sanitize_outcome(episode.outcome),
        "reflection": episode.reflection  # bounded by core.reflection, not by a field limit
        and _redact_fields(episode.reflection, {}, dict.fromkeys(_REFLECTION_LISTS, 1 << 30)),
    }
    changed = {k: v for k, v in parts.items() if v is not getattr(episode, k)}
    if changed:
        episode = episode.model_copy(update=changed)
    n = L.max_label_chars
    texts = {"task_description": L.max_description_chars, "task_type": n, "agent_id": n}
    return _redact_fields(episode, texts, {}, "metadata")


_OUTCOME_LISTS = ("completed", "failed", "artifacts")
_REFLECTION_LISTS = ("successes", "improvements", "insights")

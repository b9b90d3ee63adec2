"""Credentials out of recorded text: every part of a URL that can carry one becomes
`<redacted>` before the URL reaches a manifest, a log line, a message or a report.

What a URL keeps: its scheme, host, port and ordinary path segments (`/v1`, `/openai/deployments/
gpt-4o-audio-preview`), so a record still says where requests went. What it loses:

* the user information, user name and password alike (`http://TOKEN@host/v1` is the form
  several proxies use for a key);
* the value of every query parameter, whatever its name (`?k=`, `?api-version=`, `?sig=` ...:
  no list of "secret" names can be complete), and the fragment;
* path segments that look like a credential: a known key prefix (`sk-`, `hf_`, `ghp_`, `AKIA`,
  a JWT's `eyJ` ...), a UUID, a long run of letters and digits (16+ characters mixing both, or
  24+ of anything, between separators), or the segment after one named key/token/secret.

The API key itself never enters biasbench's records (it is read from the environment only);
this covers the ones users put inside URLs.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

REDACTED = "<redacted>"

#: A URL inside free text (a command line, an error message): scheme://, then up to a space or quote.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
#: Prefixes of well-known credentials (OpenAI, Hugging Face, GitHub, GitLab, Slack, AWS, Google, Stripe, JWT).
_KEY_PREFIX = re.compile(r"^(sk|pk|rk)[-_]|^hf_|^gh[pousr]_|^github_pat_|^glpat-|^xox[a-z]-|^(AKIA|ASIA)[0-9A-Z]{8}"
                         r"|^AIza|^eyJ|^(key|token|secret|bearer)[-_:=]", re.IGNORECASE)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_PIECES = re.compile(r"[-_.~+:=,]")
#: A segment named like one of these is followed by the credential itself: /key/<redacted>.
_NAMES_A_SECRET = {"key", "keys", "apikey", "api-key", "api_key", "token", "tokens", "secret", "password", "auth",
                   "access_token", "access-token", "bearer", "sig", "signature"}


def redact_credentials(text: str) -> str:
    """`text` with every URL in it redacted (see the module doc); the rest of the text is kept."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def redact_strings(value):
    """Every string inside a JSON-like value (dicts, lists) through `redact_credentials`: for
    records written whole, such as a run's manifest, whatever a backend put in them."""
    if isinstance(value, str):
        return redact_credentials(value)
    if isinstance(value, dict):
        return {key: redact_strings(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_strings(inner) for inner in value]
    return value


def redact_url(url: str) -> str:
    """One URL, redacted. A value given as a URL without a scheme (`host/v1/sk-...`) is read as
    `//host/...` so its user information and path are still found."""
    text = str(url)
    has_scheme = "://" in text
    try:
        parts = urlsplit(text if has_scheme else "//" + text)
        host = _host_and_port(parts)
    except ValueError:  # not parseable as a URL (a bad port, brackets): keep nothing after the scheme
        head, sep, _ = text.partition("://")
        return f"{head}{sep}{REDACTED}" if sep else REDACTED
    netloc = f"{REDACTED}@{host}" if "@" in parts.netloc else host
    redacted = SplitResult(parts.scheme, netloc, _redact_path(parts.path), _redact_query(parts.query),
                           REDACTED if parts.fragment else "")
    out = urlunsplit(redacted)
    if parts.query == "" and text.rstrip("#").endswith("?"):
        out += "?"  # an empty query is kept as written
    return out if has_scheme else out.removeprefix("//")


def _host_and_port(parts: SplitResult) -> str:
    """The netloc without its user information (host and port exactly as written)."""
    return parts.netloc.rpartition("@")[2]


def _redact_query(query: str) -> str:
    if not query:
        return ""
    fields = []
    for field in query.split("&"):
        name, equals, _ = field.partition("=")
        # a bare `?TOKEN` is a value with no name
        fields.append(f"{name}={REDACTED}" if equals else (REDACTED if field else ""))
    return "&".join(fields)


def _redact_path(path: str) -> str:
    segments = path.split("/")
    out, previous = [], ""
    for segment in segments:
        secret = segment and (looks_like_credential(segment) or previous.lower() in _NAMES_A_SECRET)
        out.append(REDACTED if secret else segment)
        previous = segment
    return "/".join(out)


def looks_like_credential(segment: str) -> bool:
    """True for a path segment that looks like a key or token rather than a word, version or name."""
    if _KEY_PREFIX.search(segment) or _UUID.match(segment):
        return True
    for piece in _PIECES.split(segment):
        mixed = any(c.isdigit() for c in piece) and any(c.isalpha() for c in piece)
        if (len(piece) >= 16 and mixed) or len(piece) >= 24:
            return True
    return False

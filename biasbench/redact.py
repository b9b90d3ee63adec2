"""Credentials out of recorded text: a URL's password (`http://user:SECRET@host/v1`) and
secret-looking query parameters (`?api_key=...`) become `<redacted>` before a URL reaches a
manifest, a log line or a message. The API key itself never enters biasbench's records (it is
read from the environment only); this covers the ones users put inside URLs."""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# scheme://user:password@ -> scheme://user:<redacted>@ (a user name alone is kept: not a secret)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
_SECRET_PARAM = re.compile(r"(?P<head>[?&](?:api[_-]?key|key|token|access[_-]?token|password|secret|sig)=)[^&#\s]+",
                           re.IGNORECASE)


def redact_credentials(text: str) -> str:
    """`text` with every URL password and secret query value replaced by <redacted>."""
    text = _USERINFO.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['head']}{REDACTED}", text)

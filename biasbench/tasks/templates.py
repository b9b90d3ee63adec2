"""Rendering task templates in a sandboxed Jinja environment.

Task YAMLs are user input: the sandbox stops a template from calling into Python, and
StrictUndefined turns a reference to a missing field into an error instead of an empty
string that would silently change what the voice says.
"""

from __future__ import annotations

import functools

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from biasbench.errors import ConfigError


@functools.lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals["letters"] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return env


@functools.lru_cache(maxsize=256)
def _compile(source: str):
    return _environment().from_string(source)


def render(source: str, fields: dict, *, path, field: str, item_id: str = "") -> str:
    """Render one template over one item's fields; errors name the file, field and item."""
    try:
        return _compile(source).render(**fields).strip()
    except UndefinedError as exc:
        available = ", ".join(sorted(fields))
        raise ConfigError(
            path, field, f"template refers to a missing field ({exc.message}) for item "
            f"{item_id!r}; the item has: {available}"
        ) from None
    except TemplateError as exc:
        raise ConfigError(path, field, f"template error: {exc}") from None

"""Rendering task templates in a sandboxed, bounded Jinja environment.

Task YAMLs are user input: the sandbox stops a template from calling into Python, and
StrictUndefined turns a reference to a missing field into an error instead of an empty
string that would silently change what the voice says.

The sandbox alone does not bound work: `{{ 9 ** 99999999 }}` runs for hours and
`{{ 'x' * 3000000000 }}` exhausts memory. So the operators and string methods that can make
huge values check their result size first, ranges are short, every render has a time limit
and a memory ceiling, and what comes out is at most MAX_TEXT characters. Each breach is a
ConfigError naming the file, field and item, within about a second.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import signal
import threading
from pathlib import Path

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import SandboxedEnvironment

from biasbench.errors import ConfigError

#: The longest text a template may produce or build on the way (characters, or list items).
MAX_TEXT = 100_000
#: The longest range() a template may loop over.
MAX_RANGE = 10_000
#: The largest integer `**` may build (bits): far past any real use, far short of a hang.
MAX_POWER_BITS = 4_096
#: Wall time (s) and extra memory (bytes) one render may take.
RENDER_SECONDS = 1.0
RENDER_MEMORY = 1 << 30

# A format spec's width or precision: `%99999999d`, `{:>99999999}`; and a width taken from an
# argument (`%*d`, `{:{}}`), which cannot be checked before it is used.
_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_WIDTH_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}


class TemplateLimit(Exception):
    """A template asked for more than the limits allow."""


def _check_size(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise TemplateLimit(f"{what} would be {size:,} long; templates may build at most {MAX_TEXT:,}")


def _check_binop(operator: str, left, right) -> None:
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
        bits = right * math.log2(abs(left))
        if bits > MAX_POWER_BITS:
            raise TemplateLimit(f"{left} ** {right} has about {bits:,.0f} bits; at most {MAX_POWER_BITS:,}")
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                _check_size(len(seq) * times, "a repeated string or list")
    elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        _check_size(len(left) + len(right), "a joined string or list")
    elif operator == "%" and isinstance(left, str):
        _check_format_widths(left)


def _check_format_widths(fmt: str) -> None:
    for match in _PERCENT_WIDTH.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise TemplateLimit("a '%*' width taken from an argument; write the width in the format")
            if part and int(part) > MAX_TEXT:
                _check_size(int(part), "a formatted field")
    for spec in _BRACE_SPEC.findall(fmt):
        if "{" in spec:
            raise TemplateLimit("a format width taken from an argument ('{:{}}'); write the width in the format")
        for digits in re.findall(r"\d+", spec):
            _check_size(int(digits), "a formatted field")


def _check_call(obj, args, kwargs) -> None:
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner, name = getattr(target, "__self__", None), getattr(target, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in _WIDTH_METHODS:
        width = args[0] if args else next(iter(kwargs.values()), 0)
        if isinstance(width, int):
            copies = owner.count("\t") if name == "expandtabs" else 1  # each tab may become `width` spaces
            _check_size(width * copies + len(owner), f"str.{name}'s result")
    elif name in ("format", "format_map"):
        _check_format_widths(owner)
    elif name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        old, new = args[0], args[1]
        grows = (owner.count(old) if old else len(owner) + 1) * max(len(new) - len(old), 0)
        _check_size(len(owner) + grows, "str.replace's result")


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimit(f"range of {len(numbers):,} numbers; templates may loop over at most {MAX_RANGE:,}")
    return numbers


def _bounded_join(parts) -> str:
    text = "".join(map(str, parts))
    _check_size(len(text), "a joined string")
    return text


class _BoundedCodeGenerator(CodeGenerator):
    # `a ~ b` compiles to a plain str join the sandbox never sees: route it through a check.
    def visit_Concat(self, node, frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with the size checks above on the operators and calls that build values."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context, operator, left, right):
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - the sandbox's own signature
        _check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    @staticmethod
    def bounded_concat(parts) -> str:
        return _bounded_join(parts)


@functools.lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    env = BoundedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals["letters"] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    env.globals["range"] = _bounded_range
    env.globals.pop("lipsum", None)  # generates text in loops: no use in a task, only a cost
    for name in ("center", "indent", "wordwrap"):  # filters whose int argument sets a size
        env.filters[name] = _width_checked(env.filters[name])
    env.filters["format"] = _format_checked(env.filters["format"])
    return env


def _width_checked(filter_):
    @functools.wraps(filter_)
    def checked(*args, **kwargs):
        for value in (*args[1:], *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                _check_size(value, f"the {filter_.__name__.removeprefix('do_')} filter's width")
        return filter_(*args, **kwargs)
    return checked


def _format_checked(filter_):
    @functools.wraps(filter_)
    def checked(value, *args, **kwargs):
        _check_format_widths(str(value))
        return filter_(value, *args, **kwargs)
    return checked


@functools.lru_cache(maxsize=256)
def _compile(source: str):
    return _environment().from_string(source)


def render(source: str, fields: dict, *, path, field: str, item_id: str = "") -> str:
    """Render one template over one item's fields; errors name the file, field and item."""
    where = f" for item {item_id!r}" if item_id else ""
    try:
        with _limits():
            text = _compile(source).render(**fields).strip()
        _check_size(len(text), "the rendered text")
        return text
    except UndefinedError as exc:
        available = ", ".join(sorted(fields))
        raise ConfigError(
            path, field, f"template refers to a missing field ({exc.message}) for item "
            f"{item_id!r}; the item has: {available}"
        ) from None
    except TemplateLimit as exc:
        raise ConfigError(path, field, f"template too costly{where}: {exc}") from None
    except _TimeUp:
        raise ConfigError(path, field, f"template took longer than {RENDER_SECONDS:g} s{where}; "
                          "templates should only arrange an item's fields") from None
    except MemoryError:
        raise ConfigError(path, field, f"template needed more than {RENDER_MEMORY >> 20} MiB{where}") from None
    except (OverflowError, RecursionError, ValueError, TypeError, ArithmeticError) as exc:
        raise ConfigError(path, field, f"template error{where}: {type(exc).__name__}: {exc}") from None
    except TemplateError as exc:
        raise ConfigError(path, field, f"template error: {exc}") from None


class _TimeUp(Exception):
    pass


@contextlib.contextmanager
def _limits():
    """A time limit (SIGALRM: main thread only) and a memory ceiling (RLIMIT_AS) for one render.
    Elsewhere, or where the OS offers neither, the size checks above still hold."""
    with contextlib.ExitStack() as stack:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            stack.enter_context(_alarm(RENDER_SECONDS))
        stack.enter_context(_memory_ceiling(RENDER_MEMORY))
        yield


@contextlib.contextmanager
def _alarm(seconds: float):
    def time_up(signum, frame):
        raise _TimeUp()

    previous = signal.signal(signal.SIGALRM, time_up)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _memory_ceiling(extra: int):
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        in_use = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    except (ImportError, OSError, ValueError):
        yield
        return
    ceiling = in_use + extra
    if soft != resource.RLIM_INFINITY and soft <= ceiling or hard != resource.RLIM_INFINITY and hard < ceiling:
        yield  # already limited more tightly by the user
        return
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

"""The standalone server's options, each declared once.

Every option is one field of :class:`Settings` (what the served app is) or of
:class:`ServeOptions` (how ``serve`` runs uvicorn), declared with :func:`option`: its name and
type are the field's, and the declaration holds its default, its help and its validation (a
:class:`Kind`). Its flag is ``--`` and its name (``max_body_bytes``: ``--max-body-bytes``) and
its environment variable ``RSM_`` and its name in capitals (``RSM_MAX_BODY_BYTES``), unless
the declaration names others. Everything else is derived from these declarations:

- the ``serve``, ``show`` and ``create-tables`` arguments (:func:`add_arguments`, and
  :func:`from_arguments` to read them back);
- the environment ``create_app_from_env`` reads (:meth:`Settings.from_environ`), and the one
  ``serve`` hands to its worker processes (:meth:`Settings.to_environ`);
- the option table of docs/deployment.md (:func:`markdown_table`; a test checks the docs).

Adding an option is adding one field here (and using it where it acts).

Why plain dataclasses rather than pydantic-settings: the command line and the environment
must keep their exact behaviour -- a bad value is one line naming the flag or the variable
(``RSM_BODY_TIMEOUT must be ..., not 'soon'``) and exit status 2; ``--api-key`` adds to the
comma-separated ``RSM_API_KEYS`` and to ``PHONEFARM_API_KEY``; an option left out on the
command line falls back to its variable. pydantic-settings would bring its own error texts
(validation reports of several lines), its own CLI parser, and one more dependency with its
own lower bound to keep, and each of these rules would still need code around it. A field's
metadata carries the same facts in about the same number of lines, and the derived forms
(argparse, environment, docs) stay short functions a reader can follow.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..extend.plugins import ConfigurationError
from ..request.app import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES
from .logging_setup import LOG_FORMATS, LOG_LEVELS

__all__ = [
    "DEFAULT_STORE",
    "ENVIRONMENT",
    "Kind",
    "Option",
    "ServeOptions",
    "Settings",
    "add_arguments",
    "from_arguments",
    "markdown_table",
    "option",
    "options",
    "store_from_arguments",
]

DEFAULT_STORE = "sqlite:///runtime-snapshots.db"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_T = TypeVar("_T")
DERIVED = "--"  # a flag, or a variable, named after its field


def _nothing_more(value: Any) -> None:
    """No check beyond parsing."""


@dataclass(frozen=True)
class Kind:
    """How an option's text becomes its value, and back.

    ``parse`` and ``check`` raise :class:`ValueError` whose text completes the sentence
    "the option must be ...".
    """

    parse: Callable[[str], Any]
    check: Callable[[Any], None] = _nothing_more
    show: Callable[[Any], str] = str
    metavar: str | None = None  # what the help calls the value
    choices: tuple[str, ...] = ()  # the values it takes, when they are few


def _text(text: str) -> str:
    return text


def _converted(convert: Callable[[str], _T], what: str) -> Callable[[str], _T]:
    """``convert``, raising a :class:`ValueError` that says what the text must be."""

    def parse(text: str) -> _T:
        try:
            return convert(text)
        except ValueError:
            raise ValueError(what) from None

    return parse


def _bound(holds: Callable[[Any], bool], what: str) -> Callable[[Any], None]:
    """A check that a value (unless ``None``) ``holds``, else says what it must be."""

    def check(value: Any) -> None:
        if value is not None and not holds(value):
            raise ValueError(what)

    return check


_integer = _converted(int, "an integer")
_number = _converted(float, "a number")
_at_least_1 = _bound(lambda value: value >= 1, "at least 1")
_port = _bound(lambda value: 0 <= value <= 65535, "a port number in 0-65535")
_positive_seconds = _bound(lambda value: value > 0, "a positive number of seconds")  # not NaN
_some_seconds = _bound(lambda value: value > 0, "a number of seconds, or 0 for no limit")


def _seconds_or_0(text: str) -> float | None:
    seconds = _number(text)
    return None if seconds == 0 else seconds


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("true or false")


def _choice(what: str, choices: Iterable[str]) -> Kind:
    allowed = tuple(choices)
    listed = f"{', '.join(allowed[:-1])} or {allowed[-1]}"

    def check(value: str) -> None:
        if value not in allowed:
            raise ValueError(f"{what}: {listed}")

    return Kind(str.lower, check, metavar="{" + ",".join(allowed) + "}", choices=allowed)


def _keys(text: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in text.split(",") if key.strip())


def _file(text: str) -> str:
    return os.path.abspath(text)  # the same file from a worker in another directory


TEXT = Kind(_text)
FILE = Kind(_file, show=lambda value: value or "", metavar="FILE")
COUNT = Kind(_integer, _at_least_1, metavar="N")
PORT = Kind(_integer, _port)
SECONDS = Kind(_number, _positive_seconds, lambda value: f"{value:g}", "SECONDS")
TIMEOUT = Kind(
    _seconds_or_0, _some_seconds, lambda value: "0" if value is None else f"{value:g}", "SECONDS"
)
BOOLEAN = Kind(_boolean, show=lambda value: str(value).lower())
KEYS = Kind(_keys, show=",".join, metavar="KEY")
LEVEL = _choice("a log level", LOG_LEVELS)
FORMAT = _choice("a log format", LOG_FORMATS)


@dataclass(frozen=True)
class Option:
    """What an option is besides its field's name, type and default."""

    help: str
    kind: Kind = TEXT
    env: tuple[str, ...] = (DERIVED,)  # its variables (the first is written), if any
    flag: str | None = DERIVED  # its command-line flag, or None for none
    metavar: str | None = None  # what the help calls the value, if not the kind's name
    switch: bool | None = None  # the flag takes no value and sets this one
    default_text: str | None = None  # the default as the help shows it, if not shown
    commands: tuple[str, ...] = ("serve",)


def option(default: _T, help: str, **details: Any) -> _T:
    """A settings field: its default, its help, and the :class:`Option` details."""
    spec = Option(help, **details)
    return dataclasses.field(default=default, metadata={"option": spec})


def switch(default: bool, help: str, **details: Any) -> bool:
    """An on/off setting whose flag takes no value and sets the other state."""
    return option(default, help, kind=BOOLEAN, switch=not default, **details)


def options(cls: type[Any]) -> Iterator[tuple[dataclasses.Field[Any], Option]]:
    """The fields of ``cls`` declared with :func:`option`, in order, with their details; a
    field's flag is ``--`` and its name unless declared, and its variable (for a class with an
    ``ENV_PREFIX``) the prefix and its name in capitals."""
    prefix: str | None = getattr(cls, "ENV_PREFIX", None)
    for field in dataclasses.fields(cls):
        spec: Option = field.metadata["option"]
        if spec.env == (DERIVED,):
            env = (f"{prefix}{field.name.upper()}",) if prefix else ()
            spec = dataclasses.replace(spec, env=env)
        if spec.flag == DERIVED:
            spec = dataclasses.replace(spec, flag="--" + field.name.replace("_", "-"))
        yield field, spec


def _label(spec: Option) -> str:
    """How an error names the option: its flag and its variable, as it has them."""
    names = [name for name in (spec.flag, spec.env[0] if spec.env else None) if name]
    return f"{names[0]} ({names[1]})" if len(names) == 2 else names[0]


def _read(spec: Option, source: str, text: str) -> Any:
    """``text`` (from the flag or variable ``source``) as the option's value."""
    try:
        value = spec.kind.parse(text)
        spec.kind.check(value)
    except ValueError as error:
        raise ConfigurationError(f"{source} must be {error}, not {text!r}") from None
    return value


def _checked(instance: object) -> None:
    """Check each field of a settings instance, however it was made."""
    for field, spec in options(type(instance)):
        try:
            spec.kind.check(getattr(instance, field.name))
        except ValueError as error:
            raise ConfigurationError(f"{_label(spec)} must be {error}") from None


def _shown_default(field: dataclasses.Field[Any], spec: Option) -> str:
    if spec.default_text is not None:
        return spec.default_text
    return spec.kind.show(field.default)


@dataclass(frozen=True)
class Settings:
    """What the standalone server serves, and how it logs.

    :meth:`from_environ` reads them from the variables of :data:`ENVIRONMENT`;
    :meth:`to_environ` writes them back, which is how ``serve`` hands them to its workers.
    """

    ENV_PREFIX: ClassVar[str] = "RSM_"

    api_keys: tuple[str, ...] = option(
        (),
        "accepted bearer tokens: --api-key repeats, RSM_API_KEYS is comma-separated (several "
        "for rotation), PHONEFARM_API_KEY adds one more; the three add up",
        kind=KEYS,
        env=("RSM_API_KEYS", "PHONEFARM_API_KEY"),
        flag="--api-key",
        default_text="none: at least one is required",
    )
    store: str = option(
        DEFAULT_STORE,
        "store URL: memory:// or a SQLAlchemy URL (sqlite:///path.db, "
        "postgresql+asyncpg://..., mysql+asyncmy://..., ...), optionally with ?table=NAME and "
        "?retry_deadline=SECONDS; a relative SQLite path is in the working directory",
        metavar="URL",
        commands=("serve", "show", "create-tables"),
    )
    accounts: str | None = option(
        None,
        'JSON array of {"account_id": "...", "active": true|false}',
        kind=FILE,
        default_text="every account id is accepted",
    )
    max_body_bytes: int = option(
        DEFAULT_MAX_BODY_BYTES, "largest accepted body in bytes; larger ones get 413", kind=COUNT
    )
    body_timeout: float | None = option(
        DEFAULT_BODY_TIMEOUT,
        "seconds a client has to send the whole body, else 408; 0: no limit",
        kind=TIMEOUT,
    )
    openapi: bool = switch(False, "also serve the OpenAPI document at /openapi.json")
    read: bool = switch(
        False,
        "also serve GET /runtime-snapshots/{account_id}, the stored snapshot (with the "
        "upsert's token check and account visibility)",
    )
    metrics: bool = switch(
        False,
        "also serve Prometheus metrics at GET /metrics, summed over every worker (extra "
        "[prometheus]); serve points PROMETHEUS_MULTIPROC_DIR at an empty directory for its "
        "workers, other servers with several workers need it set before they start",
    )
    create_tables: bool = switch(
        True,
        "create the store's table at start-up if it is missing (serve does it once, before "
        "its workers start)",
        flag=None,
    )
    access_log: bool = switch(
        True, "one access line per request (--no-access-log: none)", flag="--no-access-log"
    )
    log_level: str = option("info", "least level logged", kind=LEVEL)
    log_format: str = option("text", "text lines, or one JSON object per line", kind=FORMAT)

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ConfigurationError(
                "no API key: pass --api-key KEY, or set RSM_API_KEYS or PHONEFARM_API_KEY"
            )
        for key in self.api_keys:
            if not key.strip():
                raise ConfigurationError("an API key must not be empty")
            if "," in key or key != key.strip():
                raise ConfigurationError(
                    "an API key must not hold a comma or surrounding spaces (RFC 6750 token)"
                )
        if not self.store:
            raise ConfigurationError("the store URL must not be empty")
        _checked(self)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], api_keys: Iterable[str] = ()) -> Settings:
        """The settings the variables of :data:`ENVIRONMENT` in ``environ`` describe, with
        ``api_keys`` accepted too. An empty variable counts as unset.

        Raises :class:`ConfigurationError` with a one-line reason naming the variable.
        """
        return cls(**_environ_values(environ, {"api_keys": tuple(api_keys)}))

    def to_environ(self) -> dict[str, str]:
        """The variables that :meth:`from_environ` reads back as these settings."""
        written = {}
        for field, spec in options(type(self)):
            value = getattr(self, field.name)
            written[spec.env[0]] = spec.kind.show(value)
        return written


def _environ_values(environ: Mapping[str, str], more: Mapping[str, Any]) -> dict[str, Any]:
    """The values the variables in ``environ`` give, by field name; ``more`` adds to a
    repeatable option (the API keys) and overrides the others."""
    values: dict[str, Any] = {}
    for field, spec in options(Settings):
        found = []
        for name in spec.env:
            text = environ.get(name, "").strip()
            if text:
                found.append(_read(spec, name, text))
        if spec.kind is KEYS:
            keys = [key for part in found for key in part] + list(more.get(field.name, ()))
            values[field.name] = tuple(dict.fromkeys(keys))
        elif field.name in more:
            values[field.name] = more[field.name]
        elif found:
            values[field.name] = found[0]
    return values


@dataclass(frozen=True)
class ServeOptions:
    """How ``serve`` runs uvicorn: options of the command line only."""

    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(8000, "port to listen on (0-65535)", kind=PORT)
    workers: int = option(1, "worker processes (a shared store for > 1)", kind=COUNT)
    retry_deadline: float | None = option(
        None,
        "how long a request retries a database that is away (restarting, refusing "
        "connections) before it answers 500; SQLAlchemy stores on a server; adds "
        "?retry_deadline= to the store URL",
        kind=SECONDS,
        default_text="2",
    )
    limit_concurrency: int | None = option(
        None,
        "connections (and requests) per worker before new requests get 503; bounds what "
        "clients that never finish their headers can hold",
        kind=COUNT,
        default_text="1000, at most half the open-file limit",
    )
    timeout_keep_alive: int = option(
        5,
        "close an idle keep-alive connection after this many seconds",
        kind=COUNT,
        metavar="SECONDS",
    )
    root_path: str = option(
        "",
        "the path prefix a reverse proxy serves the app under (and strips)",
        metavar="PATH",
        default_text="none",
    )
    proxy_headers: bool = switch(
        False,
        "take the client address and scheme from X-Forwarded-* headers of the "
        "--forwarded-allow-ips",
    )
    forwarded_allow_ips: str = option(
        "127.0.0.1",
        "comma-separated addresses (or *) whose X-Forwarded-* headers are trusted",
        metavar="IPS",
    )

    def __post_init__(self) -> None:
        _checked(self)


ENVIRONMENT: dict[str, str] = {
    name: spec.help for _, spec in options(Settings) for name in spec.env
}
"""The environment variables :func:`create_app_from_env` reads, with what each means."""


def _help(field: dataclasses.Field[Any], spec: Option) -> str:
    default = _shown_default(field, spec)
    if spec.switch is not None:
        default = "on" if field.default else "off"
    if spec.env:
        return f"{spec.help} [{' + '.join(spec.env)}; default {default}]"
    return f"{spec.help} (default: {default})"


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of every option that ``command`` takes to ``parser``.

    Each takes its text as given: :func:`from_arguments` checks it, as the environment's.
    """
    for cls in (Settings, ServeOptions):
        for field, spec in options(cls):
            if spec.flag is None or command not in spec.commands:
                continue
            details: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
            if spec.switch is not None:
                details.update(action="store_const", const=spec.switch)
            elif spec.kind is KEYS:
                details.update(action="append", metavar=spec.metavar or spec.kind.metavar)
            else:
                details.update(metavar=spec.metavar or spec.kind.metavar)
            parser.add_argument(spec.flag, help=_help(field, spec), **details)


def from_arguments(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[Settings, ServeOptions]:
    """The settings of ``environ`` overridden by the flags given in ``args``, and the
    ``serve`` options given (the others at their defaults).

    Raises :class:`ConfigurationError` with a one-line reason naming the flag or variable.
    """
    given: dict[type[Any], dict[str, Any]] = {Settings: {}, ServeOptions: {}}
    for cls, values in given.items():
        for field, spec in options(cls):
            if field.name not in args:
                continue
            text = getattr(args, field.name)
            assert spec.flag is not None
            if spec.switch is not None:
                values[field.name] = text
            elif spec.kind is KEYS:
                values[field.name] = tuple(text)
            else:
                values[field.name] = _read(spec, spec.flag, text)
    settings = Settings(**_environ_values(environ, given[Settings]))
    return settings, ServeOptions(**given[ServeOptions])


def store_from_arguments(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """``--store``, else ``RSM_STORE``, else the default store: the store of the commands
    that serve nothing (and need no API key)."""
    field, spec = next((field, spec) for field, spec in options(Settings) if field.name == "store")
    assert spec.flag is not None
    if field.name in args:
        return str(_read(spec, spec.flag, getattr(args, field.name)))
    for name in spec.env:
        text = environ.get(name, "").strip()
        if text:
            return str(_read(spec, name, text))
    return str(field.default)


def markdown_table() -> str:
    """The option table of docs/deployment.md."""
    lines = ["| option | variable | meaning | default |", "|---|---|---|---|"]
    for cls in (Settings, ServeOptions):
        for field, spec in options(cls):
            flag = f"`{spec.flag}`" if spec.flag else "—"
            variables = ", ".join(f"`{name}`" for name in spec.env) or "—"
            default = _shown_default(field, spec)
            shown = f"`{default}`" if spec.default_text is None and default else default or "—"
            meaning = spec.help.replace("|", "\\|")
            if spec.kind.choices:
                meaning += ": " + ", ".join(f"`{choice}`" for choice in spec.kind.choices)
            lines.append(f"| {flag} | {variables} | {meaning} | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")

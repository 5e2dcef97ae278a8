"""The conversion of a request's id to a key column's type, and a key's canonical text."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from runtime_snapshot_mount_sqlalchemy import SQLAlchemyAccounts
from runtime_snapshot_mount_sqlalchemy.keys import canonical_text, conversion_for
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    column,
    create_engine,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import NullType
from sqlmodel.sql.sqltypes import AutoString

pytestmark = pytest.mark.sqlite

USER = uuid.UUID("6b1f0c2e-9a4d-4c1b-8e7f-0123456789ab")
SPELLINGS = [
    "6b1f0c2e-9a4d-4c1b-8e7f-0123456789ab",
    "6B1F0C2E-9A4D-4C1B-8E7F-0123456789AB",
    "6b1f0c2e9a4d4c1b8e7f0123456789ab",
    "{6b1f0c2e-9a4d-4c1b-8e7f-0123456789ab}",
    "urn:uuid:6b1f0c2e-9a4d-4c1b-8e7f-0123456789ab",
]


class SmallKey(TypeDecorator[int]):
    impl = SmallInteger
    cache_ok = True


@pytest.mark.parametrize("key_type", [Uuid(), postgresql.UUID()], ids=["Uuid", "postgresql"])
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_a_uuid_converts_to_it(key_type: Any, spelling: str) -> None:
    assert conversion_for(key_type)(spelling) == USER


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_uuid_column_of_text_gets_the_canonical_text(spelling: str) -> None:
    assert conversion_for(Uuid(as_uuid=False))(spelling) == str(USER)


@pytest.mark.parametrize(
    "text", ["account_user095916355", "6b1f0c2e", str(USER) + "0", "g" * 32, "", "😀" * 32]
)
def test_a_non_uuid_does_not_convert(text: str) -> None:
    with pytest.raises(ValueError):
        conversion_for(Uuid())(text)


@pytest.mark.parametrize(
    ("key_type", "low", "high"),
    [
        (SmallInteger(), -(2**15), 2**15 - 1),
        (SmallKey(), -(2**15), 2**15 - 1),
        (Integer(), -(2**31), 2**31 - 1),
        (BigInteger(), -(2**63), 2**63 - 1),
    ],
    ids=["smallint", "decorated-smallint", "integer", "bigint"],
)
def test_integers_convert_within_the_key_types_range(key_type: Any, low: int, high: int) -> None:
    convert = conversion_for(key_type)
    assert [convert(text) for text in ("7", "007", "+7", "-7", str(low), str(high))] == [
        7,
        7,
        7,
        -7,
        low,
        high,
    ]
    for text in (
        "abc",
        "7.0",
        " 7",
        "7 ",
        "1_000",
        "\u0667",  # ARABIC-INDIC DIGIT SEVEN: int() takes it, a key does not
        "0x7",
        "",
        "+",
        str(low - 1),
        str(high + 1),
    ):
        with pytest.raises(ValueError):
            convert(text)


@pytest.mark.parametrize(
    "key_type",
    [String(255), Text(), AutoString(), NullType()],
    ids=["String", "Text", "AutoString", "untyped"],
)
def test_strings_and_untyped_keys_take_the_id_unchanged(key_type: Any) -> None:
    assert conversion_for(key_type)("Ab c ") == "Ab c "


@pytest.mark.parametrize("key_type", [Date(), Numeric()], ids=["Date", "Numeric"])
def test_a_key_type_without_a_safe_conversion_asks_for_convert_id(key_type: Any) -> None:
    with pytest.raises(TypeError, match="convert_id="):
        conversion_for(key_type)


def test_the_accounts_refuse_such_a_key_unless_given_a_conversion() -> None:
    table = Table("days", MetaData(), Column("day", Date, primary_key=True))
    engine = create_engine("sqlite://")
    with pytest.raises(TypeError, match="convert_id="):
        SQLAlchemyAccounts(engine, table, id_column="day")
    SQLAlchemyAccounts(engine, table, id_column="day", convert_id=lambda text: text)
    engine.dispose()


def test_the_accounts_refuse_an_option_that_is_no_column() -> None:
    table = Table("names", MetaData(), Column("name", String(9), primary_key=True))
    engine = create_engine("sqlite://")
    with pytest.raises(TypeError, match="got bool: True"):
        SQLAlchemyAccounts(engine, table, id_column="name", active=True)
    SQLAlchemyAccounts(engine, table, id_column=column("name"), active=table.c.name == "x")
    engine.dispose()


@pytest.mark.parametrize(
    ("value", "text"),
    [(USER, str(USER)), (7, "7"), (2**63 - 1, str(2**63 - 1)), ("Ab ", "Ab ")],
)
def test_canonical_text(value: Any, text: str) -> None:
    assert canonical_text(value) == text

"""The OpenAPI document: opt-in, valid OpenAPI 3.1, right under any mount, and its request
schema accepts and rejects bodies as the app does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from rsm_support import (
    ACCOUNT,
    MISSING,
    TOKEN,
    UPSERT_URL,
    client_for,
    example,
    make_app,
    nested_personality,
    post_json,
    serving,
)
from starlette.applications import Starlette
from starlette.routing import Mount

import runtime_snapshot_mount.request.app as app_module
from runtime_snapshot_mount import MemoryStore
from runtime_snapshot_mount.request.snapshot import SNAPSHOT_SCHEMA

pytestmark = pytest.mark.anyio

# SPEC §2, plus 408 for a body that does not arrive within the body timeout
SPEC_STATUSES = {"200", "401", "404", "408", "413", "422", "500"}


async def fetch_document(app: Any, url: str = "/openapi.json") -> dict[str, Any]:
    async with client_for(app) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as the app serves it, fetched once for this module."""
    return anyio.run(fetch_document, make_app(MemoryStore(), openapi=True))


def validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    """A JSON Schema validator for ``#/components/schemas/{name}`` of ``document``."""
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:openapi", resource)
    return Draft202012Validator(
        {"$ref": f"urn:openapi#/components/schemas/{name}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


# -- served or not ---------------------------------------------------------------------------


async def test_the_document_is_absent_unless_enabled() -> None:
    async with client_for(make_app(MemoryStore())) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_the_document_needs_no_token(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    OpenAPIV31SpecValidator(document).validate()


@pytest.mark.parametrize(
    ("host_prefix", "expected"),
    [(None, "/"), ("/phonefarm", "/phonefarm"), ("/api/v1/phonefarm", "/api/v1/phonefarm")],
)
async def test_servers_name_the_mount_prefix(host_prefix: str | None, expected: str) -> None:
    app = make_app(MemoryStore(), openapi=True)
    if host_prefix is None:
        document = await fetch_document(app)
    else:
        host = Starlette(routes=[Mount(host_prefix, app=app)])
        document = await fetch_document(host, f"{host_prefix}/openapi.json")
    assert document["servers"] == [{"url": expected}]
    assert list(document["paths"]) == [UPSERT_URL, "/healthz"]
    OpenAPIV31SpecValidator(document).validate()


async def test_the_documented_path_works_under_a_fastapi_mount() -> None:
    store = MemoryStore()
    host = FastAPI()
    host.mount("/phonefarm", make_app(store, openapi=True))
    document = await fetch_document(host, "/phonefarm/openapi.json")
    [path] = [path for path in document["paths"] if "post" in document["paths"][path]]
    async with client_for(host) as client:
        response = await post_json(client, example(), url=document["servers"][0]["url"] + path)
    assert response.status_code == 200
    assert store.store_get(ACCOUNT) is not None


async def test_the_document_is_built_once_per_app(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []
    real = app_module.build_document

    def counting(*args: Any, **options: Any) -> dict[str, Any]:
        builds.append("built")
        return real(*args, **options)

    monkeypatch.setattr(app_module, "build_document", counting)
    app = make_app(MemoryStore(), openapi=True)
    host = Starlette(routes=[Mount("/a", app=app), Mount("/b", app=app)])
    async with client_for(host) as client:
        answers = [await client.get(url) for url in ["/a/openapi.json"] * 3 + ["/b/openapi.json"]]
    assert builds == ["built"]
    assert answers[0].content == answers[1].content == answers[2].content
    assert answers[3].json()["servers"] == [{"url": "/b"}]


def test_the_command_line_flag_enables_it(tmp_path: Path) -> None:
    base = ["--api-key", "k", "--store", "memory://"]
    with serving(*base, "--openapi", directory=tmp_path) as url:
        on = httpx.get(f"{url}/openapi.json")
    with serving(*base, directory=tmp_path) as url:
        off = httpx.get(f"{url}/openapi.json")
    assert on.status_code == 200 and on.json()["openapi"] == "3.1.0"
    assert off.status_code == 404


# -- what it says ---------------------------------------------------------------------------


def test_every_status_of_the_spec_is_documented_with_its_body(document: dict[str, Any]) -> None:
    operation = document["paths"][UPSERT_URL]["post"]
    responses = operation["responses"]
    assert set(responses) == SPEC_STATUSES
    for answer in responses.values():
        assert "schema" in answer["content"]["application/json"]
        assert answer["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/RequestId"}
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "oneOf": [
            {"$ref": "#/components/schemas/UpsertedResponse"},
            {"$ref": "#/components/schemas/IgnoredStaleResponse"},
        ]
    }
    assert "WWW-Authenticate" in responses["401"]["headers"]
    schema_of = {
        code: answer["content"]["application/json"]["schema"] for code, answer in responses.items()
    }
    assert schema_of["422"] == {"$ref": "#/components/schemas/ValidationErrorResponse"}
    for code in ("401", "404", "408", "413", "500"):
        assert schema_of[code] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert operation["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token the app's authenticate hook accepts.",
    }
    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SnapshotRequest"
    }


def test_the_request_schema_is_the_validating_one(document: dict[str, Any]) -> None:
    documented = document["components"]["schemas"]["SnapshotRequest"]
    model = SNAPSHOT_SCHEMA.json_schema()
    assert documented["required"] == model["required"]
    assert list(documented["properties"]) == list(model["properties"])
    for name, schema in model["properties"].items():
        assert documented["properties"][name].items() >= schema.items()


async def test_every_answer_matches_its_documented_schema(document: dict[str, Any]) -> None:
    store = MemoryStore()
    async with client_for(make_app(store, openapi=True, max_body_bytes=4096)) as client:
        answers = [
            await post_json(client, example(strategy_version=7)),
            await post_json(client, example(strategy_version=6)),
            await post_json(client, example(), token="wrong"),
            await post_json(client, example(account_id="acct-unknown")),
            await post_json(client, b" " * 5000),
            await post_json(client, example(strategy_version=MISSING, stage=5)),
            await post_json(client, b"{not json"),
            await client.post(
                UPSERT_URL, content=b"{}", headers={"Authorization": f"Bearer {TOKEN}"}
            ),
        ]
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 401, 404, 413, 422, 422, 422]
    responses = document["paths"][UPSERT_URL]["post"]["responses"]
    assert [a.json()["status"] for a in answers[:2]] == ["upserted", "ignored_stale"]
    for answer in answers:
        ref = responses[str(answer.status_code)]["content"]["application/json"]["schema"]
        schema = ref.get("$ref", "").rpartition("/")[2]
        names = [schema] if schema else [r["$ref"].rpartition("/")[2] for r in ref["oneOf"]]
        assert any(validator(document, name).is_valid(answer.json()) for name in names), answer.text


def schema_names(schema: dict[str, Any]) -> list[str]:
    """The component names a response's schema refers to (one, or each of a ``oneOf``)."""
    refs = schema.get("oneOf", [schema])
    return [ref["$ref"].rpartition("/")[2] for ref in refs]


async def test_every_documented_example_matches_its_schema() -> None:
    document = await fetch_document(make_app(MemoryStore(), openapi=True, read=True))
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                content = response["content"]["application/json"]
                assert content["examples"], (path, method, status)
                names = schema_names(content["schema"])
                for name, example_ in content["examples"].items():
                    valid = [validator(document, n).is_valid(example_["value"]) for n in names]
                    assert valid.count(True) == 1, (path, method, status, name, example_)
                    checked += 1
    assert checked >= 15


async def test_the_documented_headers_are_the_ones_sent() -> None:
    app = make_app(MemoryStore(), openapi=True, read=True)
    document = await fetch_document(app)
    async with client_for(app) as client:
        answers = {
            (UPSERT_URL, "post"): await post_json(client, example(), token="wrong"),
            ("/runtime-snapshots/{account_id}", "get"): await client.get(
                f"/runtime-snapshots/{ACCOUNT}", headers={"Authorization": "Bearer wrong"}
            ),
        }
    for (path, method), answer in answers.items():
        documented = document["paths"][path][method]["responses"][str(answer.status_code)]
        for name, header in documented["headers"].items():
            if "schema" in header and "const" in header["schema"]:
                assert answer.headers[name] == header["schema"]["const"], (path, name)
            assert name in answer.headers, (path, name)
        examples = documented["content"]["application/json"]["examples"].values()
        assert answer.json() in [e["value"] for e in examples], (path, answer.text)


# -- the request schema accepts and rejects like the app ---------------------------------------

ACCEPTED = {
    "the example": example(),
    "optional fields absent": example(stage=MISSING, active_action=MISSING, active_skills=MISSING),
    "optional fields null": example(stage=None, active_action=None, active_skills=None),
    "unknown fields": example(extra_field={"ignored": True}),
    "largest version": example(strategy_version=2**63 - 1),
    "offset time": example(strategy_synced_at="2026-03-22T10:30:00.123456+02:00"),
    "255-character ids": example(account_id=ACCOUNT, snapshot_id="s" * 255, content_hash="h" * 255),
    "1000-character stage": example(stage="x" * 1000),
    "256 skills": example(active_skills=[f"skill-{n}" for n in range(256)]),
    "empty personality": example(personality={}),
    "32-level personality": example(personality=nested_personality(32)),
}
REJECTED = {
    "empty object": {},
    "an array": [example()],
    "a string": "snapshot",
    "null": None,
    "missing account_id": example(account_id=MISSING),
    "missing personality": example(personality=MISSING),
    "empty snapshot_id": example(snapshot_id=""),
    "256-character content_hash": example(content_hash="h" * 256),
    "version as string": example(strategy_version="7"),
    "version as boolean": example(strategy_version=True),
    "version as fraction": example(strategy_version=7.5),
    "version zero": example(strategy_version=0),
    "version past 2**63-1": example(strategy_version=2**63),
    "time as number": example(strategy_synced_at=1774168200),
    "naive time": example(strategy_synced_at="2026-03-22T08:30:00"),
    "date alone": example(strategy_synced_at="2026-03-22"),
    "impossible date": example(strategy_synced_at="2026-02-30T08:30:00Z"),
    "stage as number": example(stage=3),
    "1001-character stage": example(stage="x" * 1001),
    "skills as string": example(active_skills="warmup"),
    "empty skill": example(active_skills=[""]),
    "257 skills": example(active_skills=[f"skill-{n}" for n in range(257)]),
    "personality null": example(personality=None),
    "personality array": example(personality=[]),
}
BEYOND_THE_SCHEMA = {
    # JSON Schema cannot say these; the document's description does, and the app rejects them.
    "version as 7.0": example(strategy_version=7.0),
    "U+0000 in a string": example(snapshot_id="snap\u0000shot"),
    "33-level personality": example(personality=nested_personality(33)),
    "instant before year 1 in UTC": example(strategy_synced_at="0001-01-01T00:30:00+01:00"),
}


async def app_status(body: Any) -> int:
    async with client_for(make_app(MemoryStore())) as client:
        response = await post_json(client, body)
    return response.status_code


@pytest.mark.parametrize(
    ("name", "accepted"),
    [*((name, True) for name in ACCEPTED), *((name, False) for name in REJECTED)],
)
async def test_the_request_schema_and_the_app_agree(
    document: dict[str, Any], name: str, accepted: bool
) -> None:
    body = (ACCEPTED if accepted else REJECTED)[name]
    assert validator(document, "SnapshotRequest").is_valid(body) is accepted
    assert await app_status(body) == (200 if accepted else 422)


@pytest.mark.parametrize("name", list(BEYOND_THE_SCHEMA))
async def test_what_the_schema_cannot_say_is_described_and_rejected(
    document: dict[str, Any], name: str
) -> None:
    body = BEYOND_THE_SCHEMA[name]
    assert validator(document, "SnapshotRequest").is_valid(body)
    assert await app_status(body) == 422
    description = document["components"]["schemas"]["SnapshotRequest"]["description"]
    for words in ("not 1.0", "U+0000", "32 levels", "0001-9999"):
        assert words in description


async def test_an_unauthenticated_client_cannot_post_but_can_read_the_document() -> None:
    app = make_app(MemoryStore(), openapi=True)
    async with client_for(app) as client:
        document = await client.get("/openapi.json", headers={"Authorization": "Bearer wrong"})
        post = await client.post(UPSERT_URL, json=example())
    assert document.status_code == 200
    assert post.status_code == 401


async def test_the_413_answer_names_the_configured_limit() -> None:
    document = await fetch_document(make_app(MemoryStore(), openapi=True, max_body_bytes=4096))
    answer = document["paths"][UPSERT_URL]["post"]["responses"]["413"]
    assert answer["description"] == "Request body exceeds 4096 bytes."

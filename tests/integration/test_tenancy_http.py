"""Tenancy end to end in process: the official ``openai`` client against the real app (fake engine and
classifier) with keys from a SQLite database, YAML policies, rate limits and the audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager

from models.backends import GuardInput, Verdict
from service.app import build_app
from service.audit.log import AuditLog
from service.engines.fake import FakeEngineClient
from service.settings import ServeSettings
from service.tenancy.db import open_database
from service.tenancy.keys import KeyStore

DANGER = "Information & Safety Harms/Dangerous Information"
MISINFO = "Misinformation Harms"
FRAUD = "Malicious Use/Fraud or deceptive action"
# word -> (node, score, classifier flags it): what the scripted classifier answers
WORDS = {"bomb": (DANGER, 0.95, True), "rumor": (MISINFO, 0.4, False), "scam": (FRAUD, 0.3, False)}
SCRIPT = {"model_name": "fake-vlm", "default": {"chunks": ["Sure, ", "here ", "you ", "go."]}}

STRICT = f"""
name: strict
version: "7"
default: {{action: block}}
nodes:
  "{FRAUD}": {{threshold: 0.25, action: block}}
  "{MISINFO}": {{threshold: 0.3, action: annotate}}
refusal: "Blocked by $policy: $categories"
"""
LENIENT = f"""
name: lenient
default: {{action: shadow}}
nodes:
  "{DANGER}": {{threshold: 0.99, action: block}}
record_content: true
fail_policy: open
"""
OTHER = "name: other\ndefault: {action: block}\n"


class NodeBackend:
    """A scripted classifier whose scores name real taxonomy nodes (``WORDS``)."""

    name = "node-fake"
    max_batch_size = 64

    def health(self) -> bool:
        return True

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        out = []
        for item in batch:
            text = (item.response if item.response is not None else item.text).lower()
            scores = {n: 0.01 for n, _, _ in WORDS.values()}
            flagged = False
            for word, (node, score, flags) in WORDS.items():
                if word in text:
                    scores[node] = score
                    flagged = flagged or flags
            prob = max(scores.values())
            cats = {n: s for n, s in scores.items() if flagged and s >= 0.9}
            out.append(Verdict(task=item.task, unsafe_prob=prob, flagged=flagged, categories=cats, scores=scores))
        return out


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "strict.yaml").write_text(STRICT)
    (folder / "lenient.yaml").write_text(LENIENT)
    (folder / "other.yaml").write_text(OTHER)
    return folder


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'spaguard.db'}"


@asynccontextmanager
async def serve(db_url: str, policies: Path, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    settings.setdefault("auth", "required")
    app = build_app(ServeSettings(engine="fake", model="script.json", db=db_url, policies=policies,
                                  stream_holdback_chars=4, **settings),  # type: ignore[arg-type]
                    engine=FakeEngineClient.from_script(SCRIPT), backend=NodeBackend())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def sdk(http: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url="http://test/v1", http_client=http, max_retries=0)


def make_key(db_url: str, tenant: str, policy: str, **limits: int) -> tuple[str, str]:
    db = open_database(db_url)
    try:
        record, key = KeyStore(db).create(tenant, policy, limits.get("rpm"), limits.get("tpm"))
        return record.key_id, key
    finally:
        db.close()


def ask(text: str) -> dict:
    return {"model": "fake-vlm", "messages": [{"role": "user", "content": text}], "max_tokens": 16}


def audit_records(db_url: str) -> dict[str, dict]:
    db = open_database(db_url)
    try:
        return {r["request_id"]: r for r in AuditLog(db).query()}
    finally:
        db.close()


async def test_keys_valid_unknown_missing_revoked_and_policy_selection(db_url: str, policies: Path) -> None:
    key_id, key = make_key(db_url, "acme", "strict")
    _, other_key = make_key(db_url, "globex", "other")
    async with serve(db_url, policies) as http:
        out = await sdk(http, key).chat.completions.create(**ask("hello there"))
        assert out.choices[0].message.content == "Sure, here you go."

        with pytest.raises(openai.AuthenticationError) as err:  # unknown key: 401
            await sdk(http, "sk-spa-000000000000-" + "x" * 32).chat.completions.create(**ask("hi"))
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
        r = await http.post("/v1/chat/completions", json=ask("hi"))  # no key at all
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"

        # acme may not select globex's policy: 403 naming the header
        with pytest.raises(openai.PermissionDeniedError) as err:
            await sdk(http, key).chat.completions.create(**ask("hi"), extra_headers={"x-spaguard-policy": "other"})
        assert err.value.code == "policy_not_allowed" and err.value.body["param"] == "x-spaguard-policy"
        # an unknown policy is a bad request, not a permission problem
        with pytest.raises(openai.BadRequestError) as err:
            await sdk(http, key).chat.completions.create(**ask("hi"), extra_headers={"x-spaguard-policy": "nope"})
        assert err.value.code == "unknown_policy"
        # granted, acme may select lenient: "bomb" (0.95 < lenient's 0.99) only shadows, so it is answered
        db = open_database(db_url)
        KeyStore(db).allow("acme", "lenient")
        out = await sdk(http, key).chat.completions.with_raw_response.create(
            **ask("a bomb"), extra_headers={"x-spaguard-policy": "lenient"})
        assert out.parse().choices[0].finish_reason == "stop"
        lenient_id = out.headers["x-request-id"]
        # the other tenant's key still works under its own policy
        assert (await sdk(http, other_key).models.list()).data[0].id == "fake-vlm"

        assert KeyStore(db).revoke(key_id)  # revoked in the database: the next request sees it
        db.close()
        with pytest.raises(openai.PermissionDeniedError) as err:
            await sdk(http, key).chat.completions.create(**ask("hi"))
        assert err.value.status_code == 403 and err.value.code == "key_revoked"
    record = audit_records(db_url)[lenient_id]
    assert (record["tenant"], record["key_id"], record["policy"], record["action"]) == ("acme", key_id, "lenient", "shadow")
    assert json.loads(record["content"]["request"])["messages"][0]["content"] == "a bomb"  # lenient records content


async def test_thresholds_and_actions_per_node(db_url: str, policies: Path) -> None:
    _, key = make_key(db_url, "acme", "strict")
    async with serve(db_url, policies) as http:
        client = sdk(http, key)
        # FRAUD 0.3 >= strict's 0.25 -> block, though the classifier itself does not flag it
        raw = await client.chat.completions.with_raw_response.create(**ask("a scam"))
        out = raw.parse()
        assert out.choices[0].finish_reason == "content_filter"
        assert out.choices[0].message.content == f"Blocked by strict: {FRAUD}"  # the policy's template
        blocked_id = raw.headers["x-request-id"]
        # MISINFO 0.4 >= 0.3 -> annotate: answered, with the verdict reported
        raw = await client.chat.completions.with_raw_response.create(**ask("a rumor"))
        out = raw.parse()
        assert out.choices[0].finish_reason == "stop"
        assert out.model_extra["safety"]["prompt"]["flagged"] is True
        assert MISINFO in out.model_extra["safety"]["prompt"]["categories"]
        annotated_id = raw.headers["x-request-id"]
        # the classifier's own flag -> the default rule's block
        out = await client.chat.completions.create(**ask("a bomb"))
        assert out.choices[0].finish_reason == "content_filter"
        # a benign stream is held back and passes, and is audited when it ends
        text = ""
        async for chunk in await client.chat.completions.create(**ask("hello"), stream=True):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                stream_id = chunk.id
        assert text == "Sure, here you go."
    records = audit_records(db_url)
    blocked = records[blocked_id]
    assert blocked["action"] == "block" and blocked["policy"] == "strict"
    assert blocked["policy_version"].startswith("7+")
    assert blocked["checks"][0]["fired"] == {FRAUD: 0.3} and blocked["checks"][0]["scores"][FRAUD] == 0.3
    assert set(blocked["content_sha256"]) == {"request", "response"} and "content" not in blocked
    assert records[annotated_id]["action"] == "annotate"
    stream = records[stream_id]
    assert [c["task"] for c in stream["checks"]][0] == "prompt" and "response" in {c["task"] for c in stream["checks"]}
    assert "response" in stream["content_sha256"]


async def test_rate_limits_answer_429_with_retry_after(db_url: str, policies: Path) -> None:
    _, key = make_key(db_url, "acme", "strict", rpm=2)
    _, tkey = make_key(db_url, "acme", "strict", tpm=5)
    async with serve(db_url, policies) as http:
        headers = {"authorization": f"Bearer {key}"}
        first = await http.post("/v1/chat/completions", json=ask("hi"), headers=headers)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert (await http.post("/v1/chat/completions", json=ask("hi"), headers=headers)).status_code == 200
        third = await http.post("/v1/chat/completions", json=ask("hi"), headers=headers)
        assert third.status_code == 429, third.text
        assert third.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(third.headers["retry-after"]) <= 60
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError):  # the SDK sees a 429 it understands
            await sdk(http, key).chat.completions.create(**ask("hi"))
        # tokens: the first answer's usage uses the 5 tokens up; the next request waits
        ok = await http.post("/v1/chat/completions", json=ask("hello world again"), headers={"authorization": f"Bearer {tkey}"})
        assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] >= 5
        over = await http.post("/v1/chat/completions", json=ask("hi"), headers={"authorization": f"Bearer {tkey}"})
        assert over.status_code == 429 and over.headers["x-ratelimit-remaining-tokens"] == "0"
        assert int(over.headers["retry-after"]) >= 1


async def test_tenant_concurrency_share(db_url: str, policies: Path) -> None:
    _, a = make_key(db_url, "acme", "strict")
    _, b = make_key(db_url, "globex", "strict")
    script = {"model_name": "fake-vlm", "chunk_delay_s": 0.2, "default": {"chunks": ["a", "b"]}}
    app = build_app(ServeSettings(engine="fake", model="s.json", db=db_url, policies=policies, auth="required",
                                  max_inflight=4, tenant_share=0.5),
                    engine=FakeEngineClient.from_script(script), backend=NodeBackend())
    async with LifespanManager(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://t") as http:
            async def call(key: str) -> int:
                r = await http.post("/v1/chat/completions", json=ask("hi"), headers={"authorization": f"Bearer {key}"})
                return r.status_code

            statuses = await asyncio.gather(*[call(a) for _ in range(4)], call(b))
    assert sorted(statuses[:4]) == [200, 200, 429, 429]  # acme holds at most 2 of the 4 slots
    assert statuses[4] == 200  # and globex still gets in


async def test_operator_endpoints_need_the_operator_key(db_url: str, policies: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPAGUARD_OPERATOR_KEYS", "op-secret")
    async with serve(db_url, policies, protect_operator_endpoints=True) as http:
        for path in ("/metrics", "/openapi.json", "/docs"):
            r = await http.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "operator_key_required", path
            assert (await http.get(path, headers={"authorization": "Bearer op-secret"})).status_code == 200, path
        assert (await http.get("/health")).status_code == 200  # probes need no key


async def test_policy_reload_under_load_fails_no_request(db_url: str, policies: Path) -> None:
    _, key = make_key(db_url, "acme", "strict")
    async with serve(db_url, policies, policy_reload_s=0.05) as http:
        tenancy = http.app.state.tenancy  # type: ignore[attr-defined]
        headers = {"authorization": f"Bearer {key}"}
        stop = asyncio.Event()
        statuses: list[int] = []
        finish: list[str] = []

        async def load() -> None:
            while not stop.is_set():
                r = await http.post("/v1/chat/completions", json=ask("a scam"), headers=headers)
                statuses.append(r.status_code)
                finish.append(r.json()["choices"][0]["finish_reason"])

        workers = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(0.3)
        # the fraud rule's threshold goes above its score: the same prompt is answered from now on
        (policies / "strict.yaml").write_text(STRICT.replace("threshold: 0.25", "threshold: 0.9"))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if tenancy.policies.reloads:
                break
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
    assert tenancy.policies.reloads == 1
    assert statuses and set(statuses) == {200}  # no request failed across the swap
    assert finish[0] == "content_filter" and finish[-1] == "stop"


async def test_no_answer_without_its_audit_record(db_url: str, policies: Path) -> None:
    _, key = make_key(db_url, "acme", "strict")
    async with serve(db_url, policies) as http:
        audit = http.app.state.tenancy.audit  # type: ignore[attr-defined]

        def broken(record: dict) -> None:
            raise OSError("disk full")

        audit.write = broken
        r = await http.post("/v1/chat/completions", json=ask("hello"), headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
        # a request the guard never scored (no decision to record) is unaffected
        assert (await http.get("/v1/models", headers={"authorization": f"Bearer {key}"})).status_code == 200


async def test_moderations_are_audited_and_auth_off_selects_policies(db_url: str, policies: Path) -> None:
    _, key = make_key(db_url, "acme", "strict")
    async with serve(db_url, policies) as http:
        r = await http.post("/v1/moderations", json={"input": "a bomb"}, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["results"][0]["flagged"] is True
        moderation_id = r.headers["x-request-id"]
    assert audit_records(db_url)[moderation_id]["tenant"] == "acme"
    # --auth off with a default policy: no key needed, the header picks any loaded policy
    async with serve(db_url, policies, auth="off", default_policy="strict") as http:
        r = await http.post("/v1/chat/completions", json=ask("a scam"))
        assert r.json()["choices"][0]["finish_reason"] == "content_filter"
        r = await http.post("/v1/chat/completions", json=ask("a scam"), headers={"x-spaguard-policy": "lenient"})
        assert r.json()["choices"][0]["finish_reason"] == "stop"
        record = audit_records(db_url)[r.headers["x-request-id"]]
        assert (record["tenant"], record["policy"], record["action"]) == (None, "lenient", "allow")


def test_settings_refuse_what_cannot_be_honoured(tmp_path: Path, policies: Path, monkeypatch) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="--auth required takes keys from --db"):
        ServeSettings(auth="required", api_keys=("k",))
    monkeypatch.delenv("SPAGUARD_OPERATOR_KEYS", raising=False)
    with pytest.raises(ValidationError, match="--protect-operator-endpoints needs operator keys"):
        ServeSettings(protect_operator_endpoints=True)
    with pytest.raises(ValidationError, match="--policies .* does not exist"):
        ServeSettings(policies=tmp_path / "nope")
    (policies / "bad.yaml").write_text("name: bad\nnodes: {\"Nope\": {threshold: 0.1, action: block}}\n")
    with pytest.raises(ValueError, match="'Nope' is not a node"):
        build_app(ServeSettings(engine="fake", model="s.json", policies=policies), backend=NodeBackend(),
                  engine=FakeEngineClient.from_script(SCRIPT))
    (policies / "bad.yaml").unlink()
    with pytest.raises(ValueError, match="--default-policy 'missing' is not loaded"):
        build_app(ServeSettings(engine="fake", model="s.json", policies=policies, default_policy="missing"),
                  backend=NodeBackend(), engine=FakeEngineClient.from_script(SCRIPT))
    assert ServeSettings().tenancy_config() is None  # the embedded default: no tenancy at all


class FailingBackend(NodeBackend):
    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        raise RuntimeError("classifier down")


async def test_fail_mode_per_policy_and_failures_audited(db_url: str, policies: Path) -> None:
    _, key = make_key(db_url, "acme", "strict")
    db = open_database(db_url)
    KeyStore(db).allow("acme", "lenient")
    db.close()
    app = build_app(ServeSettings(engine="fake", model="s.json", db=db_url, policies=policies, auth="required"),
                    engine=FakeEngineClient.from_script(SCRIPT), backend=FailingBackend())
    async with LifespanManager(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://t") as http:
            headers = {"authorization": f"Bearer {key}"}
            closed = await http.post("/v1/chat/completions", json=ask("hello"), headers=headers)
            assert closed.status_code == 503 and closed.json()["error"]["code"] == "guard_unavailable"
            # lenient says fail_policy: open, so the same failure lets the request through
            opened = await http.post("/v1/chat/completions", json=ask("hello"),
                                     headers={**headers, "x-spaguard-policy": "lenient"})
            assert opened.status_code == 200
    records = audit_records(db_url)
    assert [r["action"] for r in records.values()] == ["fail_closed", "fail_open"]
    assert all(r["checks"][0]["error"] == "backend_error" for r in records.values())
    assert records[opened.headers["x-request-id"]]["policy"] == "lenient"

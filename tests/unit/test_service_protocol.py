"""Protocol models, the error envelope/status table, and settings (CLI flags, YAML, cross-checks)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import ALL_GUARD_ROLES, BatcherConfig, GuardPolicy
from service.engines.base import EngineError, EngineTimeout, EngineUnavailable
from service.errors import (
    ContentFiltered,
    InvalidRequest,
    Overloaded,
    envelope,
    from_engine_error,
    validation_message,
)
from service.protocol import ChatCompletionRequest, ImagePartParam, TextPart
from service.settings import MAX_CHARS, MAX_ERROR_MESSAGE_CHARS, ServeSettings, load_settings


def _req(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(**{"messages": [{"role": "user", "content": "hi"}], **kw})


def test_content_string_and_parts_and_unknown_fields() -> None:
    req = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
        ]}],
        metadata={"trace": "t1"}, store=True,
    )
    parts = req.messages[0].content
    assert isinstance(parts[0], TextPart) and isinstance(parts[1], ImagePartParam)
    # An OpenAI parameter without a typed field is kept for the capability check (which refuses it).
    assert req.model_extra == {"store": True} and req.metadata == {"trace": "t1"}  # metadata: typed (issue 14)
    assert "store" in req.requested_params()


@pytest.mark.parametrize(("body", "loc"), [
    ({"vendor_thing": True}, "vendor_thing"),  # not an OpenAI parameter: refused, never ignored
    ({"x" * 500: 1}, "x" * 61 + "..."),  # echoed cut short
    ({"messages": [{"role": "user", "content": "hi", "temperature": 1}]}, "messages.0.temperature"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "bold": True}]}]},
     "0.text.bold"),
])
def test_unknown_fields_are_refused_naming_them(body: dict, loc: str) -> None:
    from service.errors import validation_message

    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **body})
    message, param = validation_message(info.value.errors())
    assert f"{loc}: unknown" in message, message  # (a content part's path names pydantic's union branch)
    if "text" not in loc:  # a content part's error sits under pydantic's union branches
        assert param == loc, (param, message)


def test_to_engine_params_defaults_and_mapping() -> None:
    p = _req().to_engine_params(default_max_tokens=99)
    assert (p.max_tokens, p.temperature, p.top_p, p.stop, p.seed) == (99, 1.0, 1.0, (), None)
    p = _req(max_tokens=5, max_completion_tokens=7, temperature=0, top_p=0.5, stop="x", seed=1,
             presence_penalty=0.5, frequency_penalty=-0.5).to_engine_params()
    assert p.max_tokens == 7  # max_completion_tokens wins (OpenAI's newer name)
    assert (p.temperature, p.top_p, p.stop, p.seed) == (0.0, 0.5, ("x",), 1)
    assert (p.presence_penalty, p.frequency_penalty) == (0.5, -0.5)


@pytest.mark.parametrize(
    "kw",
    [
        {"stream_options": {"include_usage": True}},  # without stream
        {"stop": ["a", "b", "c", "d", "e"]},
        {"messages": [{"role": "user", "content": "x" * (MAX_CHARS + 1)}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "assistant", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}, {"role": "user", "content": "q"}]},
        {"messages": [{"role": "user", "content": []}]},
        {"messages": [{"role": "system"}]},
        {"n": 9},  # past MAX_CHOICES
        {"top_p": 0},
    ],
)
def test_invalid_requests(kw: dict) -> None:
    with pytest.raises(ValidationError):
        _req(**kw)


def test_include_usage_and_developer_role() -> None:
    assert _req(stream=True, stream_options={"include_usage": True}).include_usage
    assert not _req(stream=True).include_usage
    req = ChatCompletionRequest(messages=[{"role": "developer", "content": "rules"},
                                          {"role": "user", "content": "hi"}])
    assert req.messages[0].role == "developer"


def test_envelope_caps_message_and_status_table() -> None:
    env = envelope(InvalidRequest("x" * 5000, param="messages"))
    assert len(env.error.message) == MAX_ERROR_MESSAGE_CHARS
    assert env.error.type == "invalid_request_error" and env.error.param == "messages"
    assert ContentFiltered("b").status == 400 and ContentFiltered("b").code == "content_filter"
    assert Overloaded("x").status == 429
    assert from_engine_error(EngineError("up")).status == 502
    assert from_engine_error(EngineUnavailable("down")).status == 503
    assert from_engine_error(EngineTimeout("slow")).status == 504


def test_validation_message_never_echoes_values() -> None:
    secret = "my-secret-prompt-text"
    try:
        ChatCompletionRequest(messages=[{"role": "user", "content": [{"type": secret, "text": secret}]}],
                              temperature=secret)
    except ValidationError as exc:
        message, param = validation_message(list(exc.errors()))
    assert secret not in message and param is not None


def test_settings_cli_yaml_and_precedence(tmp_path) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("port: 9001\nguard-mode: annotate\nremote_images: true\n"
                   "remote_image_hosts: [img.example.com]\nmax_wait_ms: 2\n")
    s = load_settings(["--config", str(cfg), "--port", "9002", "--no-remote-images",
                       "--remote-image-hosts"])
    assert s.port == 9002 and s.guard_mode == "annotate" and s.max_wait_ms == 2.0
    assert s.remote_images is False and s.remote_image_hosts == ()
    ec = load_settings(["--engine", "openai", "--upstream-url", "http://u/v1"]).engine_config()
    assert ec.kind == "openai" and ec.upstream_url == "http://u/v1"
    assert load_settings(["--guard-spin"]).guard_spin is True and load_settings([]).guard_spin is False



def test_settings_build_the_guard_policy_and_batcher_config() -> None:
    s = load_settings(["--guard-mode", "annotate", "--max-batch-size", "32", "--max-wait-ms", "20",
                       "--max-queue", "64"])
    # Every knob from the settings; the serve defaults are the only defaults.
    assert s.guard_policy() == GuardPolicy(mode="annotate", block_style="refusal", fail_policy="closed",
                                           timeout_s=10.0, stream_holdback_chars=64,
                                           stream_first_release_chars=16, roles=ALL_GUARD_ROLES)
    assert s.guard_policy().for_moderation() == s.guard_policy()  # already annotate + closed
    shadow_open = load_settings(["--guard-mode", "shadow", "--fail-policy", "open"]).guard_policy()
    moderation = shadow_open.for_moderation()
    assert (moderation.mode, moderation.fail_policy) == ("annotate", "closed")
    assert s.batcher_config(backend_max_batch_size=8) == BatcherConfig(
        max_batch_size=8, max_wait_s=0.02, max_queue=64, queue_timeout_s=5.0, max_batch_cost=16)
    assert s.batcher_config(backend_max_batch_size=64).max_batch_size == 32
@pytest.mark.parametrize(
    "argv",
    [
        ["--engine", "openai"],  # needs --upstream-url
        ["--engine", "fake"],  # needs --model script
        ["--remote-image-hosts", "a.com"],  # without --remote-images
        ["--max-queue", "2", "--max-batch-size", "8"],
        ["--guard-mode", "loud"],
        ["--port", "-1"],
        ["--guard-artifact", "/nonexistent/artifact"],
        ["--guard-backend", "torch", "--guard-spin"],  # spinning is an ORT thread-pool knob
    ],
)
def test_settings_cross_checks_exit_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as e:
        load_settings(argv)
    assert e.value.code == 2


def test_settings_yaml_unknown_key_is_an_error(tmp_path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("prot: 1\n")
    with pytest.raises(SystemExit):
        load_settings(["--config", str(cfg)])
    with pytest.raises(ValidationError):
        ServeSettings(prot=1)


def test_every_field_has_help() -> None:
    assert all(f.description for f in ServeSettings.model_fields.values())

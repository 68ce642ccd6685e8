"""Bearer keys from a file or the environment, not only from flags (issue 11: ``--api-keys k1``
showed the key in ``ps``); the flag still works and warns; the HTTP read timeouts reach uvicorn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service import cli, serve
from service.serving.http_timeouts import TimeoutH11Protocol
from service.settings import API_KEYS_ENV, load_settings


def _fake_args(tmp_path: Path) -> list[str]:
    script = tmp_path / "s.json"
    script.write_text("{}")
    return ["--engine", "fake", "--model", str(script)]


@pytest.mark.reliability("auth", "keys from --api-keys-file and SPAGUARD_API_KEYS", "accepted; nothing in argv")
def test_keys_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# ops keys\nk-file-1\n\n  k-file-2  \n")
    monkeypatch.setenv(API_KEYS_ENV, "k-env-1, k-env-2")
    settings = load_settings([*_fake_args(tmp_path), "--api-keys-file", str(keys)])
    assert set(settings.bearer_keys()) == {"k-file-1", "k-file-2", "k-env-1", "k-env-2"}


def test_empty_or_missing_key_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    for path in (empty, tmp_path / "missing"):
        with pytest.raises(SystemExit):  # no silent "no auth" because a file was empty or absent
            load_settings([*_fake_args(tmp_path), "--api-keys-file", str(path)])


@pytest.mark.reliability("auth", "--api-keys on the command line", "still works, logs a warning about ps")
def test_flag_still_works_but_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    calls: list[dict] = []
    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    monkeypatch.setattr(serve, "resolve_artifact", lambda artifact: tmp_path)
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    with caplog.at_level(logging.WARNING, logger="spaguard.serve"):
        assert cli.main(["serve", *_fake_args(tmp_path), "--api-keys", "k1"]) == 0
    assert "ps" in caplog.text and API_KEYS_ENV in caplog.text and "k1" not in caplog.text
    (call,) = calls
    assert call["app"].state.settings.bearer_keys() == ("k1",)
    proto = call["http"]
    assert issubclass(proto, TimeoutH11Protocol) and proto.header_timeout_s == 10.0


def test_no_warning_without_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(API_KEYS_ENV, "k-env")
    monkeypatch.setattr(serve, "resolve_artifact", lambda artifact: tmp_path)
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **kw: None)
    with caplog.at_level(logging.WARNING, logger="spaguard.serve"):
        assert cli.main(["serve", *_fake_args(tmp_path), "--http-header-timeout-s", "2"]) == 0
    assert "process list" not in caplog.text

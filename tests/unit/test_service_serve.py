"""``spaguard serve`` entry point: flags reach uvicorn; a missing classifier fails fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import cli, serve


def test_serve_passes_settings_to_uvicorn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(serve, "resolve_artifact", lambda artifact: tmp_path)
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    script = tmp_path / "s.json"
    script.write_text("{}")
    rc = cli.main(["serve", "--engine", "fake", "--model", str(script), "--port", "8123",
                   "--host", "0.0.0.0", "--log-level", "warning"])
    assert rc == 0
    (call,) = calls
    assert (call["host"], call["port"], call["log_level"]) == ("0.0.0.0", 8123, "warning")
    assert call["app"].state.settings.engine == "fake"


def test_serve_without_classifier_artifact_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(artifact: object) -> Path:
        raise FileNotFoundError("no classifier artifact at X (built by `spaguard train-guard`)")

    monkeypatch.setattr(serve, "resolve_artifact", missing)
    monkeypatch.setattr(serve.uvicorn, "run", lambda *a, **k: pytest.fail("must not start"))
    assert serve.main([]) == 2
    assert "train-guard" in capsys.readouterr().err

"""The operator page: behind the operator key (bearer or login cookie), recent decisions with filters and the
scores, the shadow chart, a try-it box; in process, then end to end in headless Chromium over CDP with a
screenshot saved under runs/ (skipped when Debian's ``chromium`` is absent)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager

from service import launch
from service.app import build_app
from service.audit.report import shadow_report
from service.engines.fake import FakeEngineClient
from service.settings import ServeSettings
from tests.integration.test_tenancy_http import FRAUD, LENIENT, OTHER, SCRIPT, STRICT, NodeBackend, make_key

OP_KEY = "op-secret-key"
ROOT = Path(__file__).resolve().parents[2]


def _app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SPAGUARD_OPERATOR_KEYS", OP_KEY)
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    for name, text in (("strict", STRICT), ("lenient", LENIENT), ("other", OTHER)):
        (folder / f"{name}.yaml").write_text(text)
    db_url = f"sqlite:///{tmp_path / 'spaguard.db'}"
    app = build_app(ServeSettings(engine="fake", model="s.json", db=db_url, policies=folder, auth="required"),
                    engine=FakeEngineClient.from_script(SCRIPT), backend=NodeBackend())
    return app, db_url


async def _traffic(http: httpx.AsyncClient, db_url: str) -> None:
    _, acme = make_key(db_url, "acme", "strict")
    _, globex = make_key(db_url, "globex", "other")
    for key, text in ((acme, "a scam"), (acme, "hello"), (globex, "hello"), (acme, "a rumor")):
        r = await http.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                            json={"model": "fake-vlm", "messages": [{"role": "user", "content": text}]})
        assert r.status_code == 200


async def test_operator_page_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, db_url = _app(tmp_path, monkeypatch)
    async with LifespanManager(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://t") as http:
            await _traffic(http, db_url)
            r = await http.get("/operator")
            assert r.status_code == 401 and r.json()["error"]["code"] == "operator_key_required"
            assert (await http.get("/operator", headers={"authorization": "Bearer wrong"})).status_code == 401
            assert (await http.post("/operator/login", data={"key": "wrong"})).headers["location"].endswith("failed=1")
            login = await http.post("/operator/login", data={"key": OP_KEY})
            assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
            assert "samesite=strict" in login.headers["set-cookie"].lower()
            page = await http.get("/operator")  # the cookie is sent now
            assert page.status_code == 200 and page.text.count("<tr>") == 5  # header + 4 decisions
            assert "acme" in page.text and "globex" in page.text and FRAUD in page.text and "0.300" in page.text
            blocked = await http.get("/operator", params={"action": "block"})
            assert blocked.text.count("<tr>") == 2 and "a scam" not in blocked.text  # no content, hashes only
            by_tenant = await http.get("/operator", params={"tenant": "globex"})
            assert by_tenant.text.count("<tr>") == 2
            by_cat = await http.get("/operator", params={"category": "Malicious Use"})
            assert by_cat.text.count("<tr>") == 2
            bad = await http.get("/operator", params={"since": "yesterday"})
            assert bad.status_code == 200 and "cannot read the time" in bad.text
            # the log keeps the classifier's own verdicts, so the report decides them again per policy:
            # neither "a scam" (fraud 0.3) nor "a rumor" is flagged by the classifier; strict blocks the scam
            report = shadow_report(app.state.tenancy.audit.query(), app.state.tenancy.policies.all())
            assert report["actual"] == {"allow": 2, "annotate": 1, "block": 1}
            assert report["policies"]["default"]["would_block"] == 0
            assert report["policies"]["strict"]["by_category"] == {FRAUD: 1}
            assert report["policies"]["other"]["would_block"] == 0
            png = await http.get("/operator/shadow.png", params={"since": "1h"})
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
            assert (await http.get("/operator/shadow.png", params={"since": "x"})).status_code == 400
            # try it: the same text under two policies; input is escaped on the way back
            tried = await http.post("/operator/try", data={"text": "a scam <script>x</script>", "policy": "strict"})
            assert tried.status_code == 200 and "class='block'>block</span>" in tried.text
            assert "&lt;script&gt;x&lt;/script&gt;" in tried.text and "<script>x</script>" not in tried.text
            lenient = await http.post("/operator/try", data={"text": "a scam", "policy": "lenient"})
            assert "class='allow'>allow</span>" in lenient.text
            image = "data:image/png;base64," + base64.b64encode(_png()).decode()
            with_image = await http.post("/operator/try", data={"text": "hi", "image": image, "policy": "strict"})
            assert with_image.status_code == 200 and "try-result" in with_image.text
            broken = await http.post("/operator/try", data={"text": "hi", "image": "data:image/png;base64,AAAA"})
            assert broken.status_code == 400 and "class='err'" in broken.text
            assert (await http.post("/operator/try", data={"text": "x", "policy": "nope"})).status_code == 400


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, format="PNG")
    return buf.getvalue()


class _CDP:
    """The few Chrome DevTools Protocol calls this test needs, over one websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(expression)


def test_operator_page_in_headless_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("websocket", reason="websocket-client drives Chromium over CDP")
    app, db_url = _app(tmp_path, monkeypatch)
    port = launch.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    profile = Path(tempfile.mkdtemp(prefix="spaguard-chromium-"))
    browser = None
    try:
        launch.wait_ready(f"{base}/health", timeout_s=60)
        _, acme = make_key(db_url, "acme", "strict")
        for text in ("a scam", "hello", "a rumor"):
            httpx.post(f"{base}/v1/chat/completions", headers={"authorization": f"Bearer {acme}"}, timeout=30,
                       json={"model": "fake-vlm", "messages": [{"role": "user", "content": text}]})
        cdp_port = launch.free_port()
        browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                                    f"--remote-debugging-port={cdp_port}", f"--user-data-dir={profile}",
                                    "--window-size=1280,1000", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        targets = launch.wait_ready(f"http://127.0.0.1:{cdp_port}/json/list", browser, timeout_s=60).json()
        page = next(t for t in targets if t["type"] == "page")
        cdp = _CDP(page["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        # sign in through the form, as a person would
        cdp.call("Page.navigate", url=f"{base}/operator/login")
        cdp.wait_for("document.readyState === 'complete' && !!document.querySelector('input[name=key]')")
        cdp.evaluate(f"document.querySelector('input[name=key]').value = {json.dumps(OP_KEY)};"
                     "document.querySelector('form').submit(); true")
        cdp.wait_for("location.pathname === '/operator' && !!document.getElementById('decisions')")
        rows = cdp.evaluate("document.querySelectorAll('#decisions tr').length")
        assert rows == 4  # header + 3 decisions
        assert cdp.wait_for("(() => { const i = document.getElementById('shadow-chart');"
                            " return i && i.complete && i.naturalWidth > 0 })()")  # the PNG chart rendered
        # try it in the browser: the fraud text under strict is blocked
        cdp.evaluate("document.querySelector('#try textarea').value = 'this is a scam';"
                     "document.querySelector('#try select').value = 'strict';"
                     "document.querySelector('#try').submit(); true")
        result = cdp.wait_for("document.getElementById('try-result') && document.getElementById('try-result').innerText")
        assert "action block" in str(result) and FRAUD in str(result)
        # the filter form narrows the table to blocks
        cdp.call("Page.navigate", url=f"{base}/operator?action=block")
        cdp.wait_for("document.readyState === 'complete' && !!document.getElementById('decisions')")
        assert cdp.evaluate("document.querySelectorAll('#decisions tr').length") == 2
        cdp.call("Page.navigate", url=f"{base}/operator")
        cdp.wait_for("document.readyState === 'complete' && document.getElementById('shadow-chart').complete")
        shot = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
        out = ROOT / "runs" / "operator_page.png"
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(shot)
        assert shot[:4] == b"\x89PNG" and len(shot) > 10_000
    finally:
        if browser is not None:
            launch.stop(browser, grace_s=5, sig=15)
        server.should_exit = True
        thread.join(30)
        shutil.rmtree(profile, ignore_errors=True)

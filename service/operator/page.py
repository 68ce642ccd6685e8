"""``/operator``: a small server-rendered page for the platform engineer, behind the operator key.

    GET  /operator?tenant=&action=&category=&since=24h   recent decisions (the scores that decided) + chart
    GET  /operator/shadow.png?since=24h                  the shadow report of that window (service.audit.report)
    POST /operator/try                                   score a text (and an image) under a chosen policy
    GET|POST /operator/login                             trade the operator key for a cookie (browsers)

Access: ``Authorization: Bearer <operator key>`` or the ``spaguard_operator`` cookie that ``/operator/login``
sets (HttpOnly, SameSite=Strict, so another site cannot post with it); checked by
``service.tenancy.middleware`` on every ``/operator`` path but the login. Mounted only when the server has
operator keys (``--operator-keys-file`` or SPAGUARD_OPERATOR_KEYS). Every value shown is HTML-escaped. A
try-it check runs through the live guard and batcher with the chosen policy (``service.tenancy.scope``) and
is not written to the audit log: it is not a client's request. No JavaScript but the few lines that turn a
chosen image file into a data: URL for the form.
"""

from __future__ import annotations

import asyncio
import html
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from models.backends import GuardInput
from service.audit.log import ACTION_ORDER, parse_time
from service.audit.report import chart_png, shadow_report
from service.errors import InvalidRequest
from service.images import decode_data_url
from service.settings import MAX_CHARS
from service.tenancy.middleware import OPERATOR_COOKIE
from service.tenancy.scope import CURRENT, RequestScope

COOKIE = OPERATOR_COOKIE
RECENT_LIMIT = 100
_STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}th{background:#eee}
.block{color:#b00;font-weight:bold}.annotate{color:#a60}.shadow{color:#06a}.err{color:#b00}
form.inline>*{margin-right:.6em}section{margin-bottom:2em}textarea{width:100%;height:5em}"""
_IMAGE_JS = """document.getElementById('image_file').addEventListener('change',function(e){var f=e.target.files[0];
if(!f)return;var r=new FileReader();r.onload=function(){document.getElementById('image').value=r.result};
r.readAsDataURL(f)});"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>")


def _options(values: list[str], chosen: str | None, blank: str | None = "any") -> str:
    opts = [f"<option value=''>{_e(blank)}</option>"] if blank is not None else []
    opts += [f"<option value='{_e(v)}'{' selected' if v == chosen else ''}>{_e(v)}</option>" for v in values]
    return "".join(opts)


def _scores(check: dict[str, Any], top: int = 3) -> str:
    fired = check.get("fired") or check.get("categories") or {}
    best = sorted((check.get("scores") or {}).items(), key=lambda kv: -kv[1])[:top]
    shown = fired or dict(best)
    return "<br>".join(f"{_e(k)}: {v:.3f}" for k, v in shown.items())


def _prob(check: dict[str, Any]) -> str:
    return "-" if check.get("unsafe_prob") is None else f"{check['unsafe_prob']:.3f}"


def _decisions(records: list[dict[str, Any]]) -> str:
    if not records:
        return "<p>No decision in this window.</p>"
    rows = []
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["ts"]))
        checks = "".join(
            f"<div><b>{_e(c['task'])}</b> <span class='{_e(c['action'])}'>{_e(c['action'])}</span> "
            f"p={_prob(c)}"
            f"{'' if not c.get('error') else ' error=' + _e(c['error'])}<br>{_scores(c)}</div>"
            for c in r["checks"])
        rows.append(f"<tr><td>{_e(when)}</td><td><code>{_e(r['request_id'])}</code></td><td>{_e(r.get('tenant') or '-')}"
                    f"</td><td>{_e(r.get('policy') or '-')} <small>{_e(r.get('policy_version') or '')}</small></td>"
                    f"<td class='{_e(r['action'])}'>{_e(r['action'])}</td><td>{_e(r['status'])}</td>"
                    f"<td>{_e(r['latency_ms'])} ms</td><td>{checks}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("time (UTC)", "request id", "tenant", "policy", "action", "status",
                                             "latency", "checks: action, score, nodes that decided"))
    return f"<table id='decisions'><tr>{head}</tr>{''.join(rows)}</table>"


def _try_form(policies: list[str], chosen: str | None, text: str) -> str:
    return (f"<form id='try' method='post' action='/operator/try'>"
            f"<textarea name='text' placeholder='text to score'>{_e(text)}</textarea><br>"
            f"image: <input type='file' id='image_file' accept='image/*'><input type='hidden' name='image' id='image'> "
            f"policy: <select name='policy'>{_options(policies, chosen, blank=None)}</select> "
            f"<button type='submit'>Score</button></form><script>{_IMAGE_JS}</script>")


def _result(outcome: dict[str, Any] | None, error: str | None) -> str:
    if error:
        return f"<p class='err' id='try-result'>{_e(error)}</p>"
    if outcome is None:
        return ""
    nodes = "".join(f"<li>{_e(k)}: {v:.3f}</li>" for k, v in outcome["nodes"].items()) or "<li>none</li>"
    return (f"<div id='try-result'><p>Policy <b>{_e(outcome['policy'])}</b>: action "
            f"<span class='{_e(outcome['action'])}'>{_e(outcome['action'])}</span>, unsafe probability "
            f"{outcome['unsafe_prob']:.3f}</p><p>Nodes that decided (or the top scores):</p><ul>{nodes}</ul></div>")


def render(app: FastAPI, query: dict[str, str], tried: dict[str, Any] | None = None, error: str | None = None,
           text: str = "", chosen: str | None = None) -> str:
    tenancy = app.state.tenancy
    since_text = query.get("since") or "24h"
    try:
        since = parse_time(since_text)
    except ValueError as exc:
        since, error = parse_time("24h"), error or str(exc)
    tenant, action, category = (query.get(k) or None for k in ("tenant", "action", "category"))
    policies = list(tenancy.policies.names)
    if tenancy.audit is None:
        recent, tenants = [], []
        decisions = "<p>The audit log is off on this server (--audit off).</p>"
    else:
        recent = tenancy.audit.query(since, tenant=tenant, action=action, category=category, limit=RECENT_LIMIT,
                                     newest_first=True)
        tenants = sorted({r["tenant"] for r in tenancy.audit.query(since) if r.get("tenant")})
        decisions = _decisions(recent)
    filters = (f"<form class='inline' id='filters' method='get' action='/operator'>"
               f"since <input name='since' value='{_e(since_text)}' size='6'> "
               f"tenant <select name='tenant'>{_options(tenants, tenant)}</select> "
               f"action <select name='action'>{_options(list(ACTION_ORDER), action)}</select> "
               f"category <input name='category' value='{_e(category or '')}' placeholder='node key prefix'> "
               f"<button type='submit'>Filter</button></form>")
    chart = ("" if tenancy.audit is None else
             f"<img id='shadow-chart' alt='shadow report' src='/operator/shadow.png?{_e(urlencode({'since': since_text}))}'>")
    body = (f"<section><h2>Try it</h2>{_try_form(policies, chosen, text)}{_result(tried, error)}</section>"
            f"<section><h2>Shadow report: what each policy would have blocked</h2>{chart}</section>"
            f"<section><h2>Recent decisions ({len(recent)})</h2>{filters}{decisions}</section>")
    return _page("SPA-Guard operator", body)


async def operator_page(request: Request) -> HTMLResponse:
    query = {k: v for k, v in request.query_params.items()}
    return HTMLResponse(await asyncio.to_thread(render, request.app, query))


async def shadow_png(request: Request) -> Response:
    tenancy = request.app.state.tenancy
    if tenancy.audit is None:
        raise InvalidRequest("the audit log is off on this server", code="audit_off")
    try:
        since = parse_time(request.query_params.get("since") or "24h")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None

    def build() -> bytes:
        return chart_png(shadow_report(tenancy.audit.query(since), tenancy.policies.all(),
                                       request.app.state.settings.guard_mode))

    return Response(await asyncio.to_thread(build), media_type="image/png")


async def try_it(request: Request) -> HTMLResponse:
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    text, image, name = form.get("text", ""), form.get("image", ""), form.get("policy", "default")
    tenancy = request.app.state.tenancy
    policy = tenancy.policies.get(name)
    status, outcome, error = 200, None, None
    if policy is None:
        status, error = 400, f"unknown policy {name[:64]!r}"
    elif len(text) > MAX_CHARS:
        status, error = 400, f"text longer than {MAX_CHARS} characters"
    else:
        try:
            images = (((await decode_data_url(image)).data,) if image else ())
            scope = RequestScope(None, None, policy)
            token = CURRENT.set(scope)
            try:
                decision = await request.app.state.guard.check_input(f"try-{uuid.uuid4().hex}",
                                                                     GuardInput(text=text, images=images))
            finally:
                CURRENT.reset(token)
        except InvalidRequest as exc:
            status, error = 400, exc.message
        except Exception as exc:  # noqa: BLE001 - a guard failure is shown, not a crash page
            status, error = 503, f"the guard could not score this: {type(exc).__name__}"
        else:
            v = decision.verdict
            fired = scope.checks[-1].fired if scope.checks else {}
            nodes = {k: s for k, s in fired.items() if k != "default"} or (v.categories if v else {})
            if v is not None and not nodes:
                nodes = dict(sorted(v.scores.items(), key=lambda kv: -kv[1])[:3])
            outcome = {"policy": name, "action": decision.action,
                       "unsafe_prob": v.unsafe_prob if v else float("nan"), "nodes": nodes}
    page = await asyncio.to_thread(render, request.app, {}, outcome, error, text, name)
    return HTMLResponse(page, status_code=status)


async def login_form(request: Request) -> HTMLResponse:
    failed = request.query_params.get("failed")
    note = "<p class='err'>That is not an operator key.</p>" if failed else ""
    return HTMLResponse(_page("SPA-Guard operator: sign in", f"{note}<form method='post' action='/operator/login'>"
                              "operator key <input type='password' name='key' autofocus> "
                              "<button type='submit'>Sign in</button></form>"))


async def login(request: Request) -> Response:
    key = parse_qs((await request.body()).decode("utf-8", "replace")).get("key", [""])[0]
    tenancy = request.app.state.tenancy
    if not tenancy.operator_ok({b"authorization": b"Bearer " + key.encode()}):
        return RedirectResponse("/operator/login?failed=1", status_code=303)
    response = RedirectResponse("/operator", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/operator",
                        secure=request.url.scheme == "https")
    return response


def attach_router(app: FastAPI) -> None:
    app.add_api_route("/operator", operator_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/operator/shadow.png", shadow_png, methods=["GET"], include_in_schema=False)
    app.add_api_route("/operator/try", try_it, methods=["POST"], include_in_schema=False)
    app.add_api_route("/operator/login", login_form, methods=["GET"], include_in_schema=False)
    app.add_api_route("/operator/login", login, methods=["POST"], include_in_schema=False)

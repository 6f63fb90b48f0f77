"""The dashboard's routes: parse the request, call the queries or the actions, render the page."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from syndicator import alerts as alerting
from syndicator.runtime import Runtime
from syndicator.states import DeliveryState as S
from syndicator.users import Principal
from syndicator.web.auth import require
from syndicator.web.ops import matrix
from syndicator.web.ops.actions import ACTIONS, MAX_ID, BadRequest, apply_action, parse_ids
from syndicator.web.ops.deliveries import ATTENTION, LIST_PAGE, TABS, delivery_detail, delivery_list, state_counts
from syndicator.web.ops.formatting import Helpers
from syndicator.web.ops.health import WINDOWS, health, live_stamp
from syndicator.web.pages import page_user, render

router = APIRouter(prefix="/ops", include_in_schema=False)

BOARD_LIST = 20
_STATES = tuple(s.value for s in S)
_STATE_PATTERN = "^(|" + "|".join(_STATES) + ")$"


def _page(request: Request, template: str, who: Principal, status_code: int = 200, live: bool = True,
          **context: Any) -> HTMLResponse:
    from syndicator.web.i18n import choose, translator

    rt: Runtime = request.app.state.runtime
    now = rt.clock()
    _ = translator(choose(request.query_params.get("lang"), request.cookies.get("lang")))
    flash = request.session.pop("ops_flash", None)
    counts = state_counts(rt, ATTENTION)
    return render(request, template, status_code=status_code, h=Helpers(rt, now, _), now=now, who=who,
                  can_operate=who.may("operate"), flash=flash, attention_counts=counts,
                  attention_total=sum(counts.values()), stamp=live_stamp(rt, now),
                  channels=list(rt.config.channels), states=_STATES, rt_alerts=rt.config.alerts, live=live,
                  **context)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _error(request: Request, who: Principal, exc: BadRequest) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": exc.message.format(**exc.values)}, status_code=exc.status)
    return _page(request, "web/ops/error.html", who, status_code=exc.status, live=False, message=exc.message,
                 values=exc.values)


def _safe_next(target: str | None, default: str) -> str:
    if target and target.startswith("/ops") and not target.startswith("//") and "\\" not in target \
            and len(target) <= 500:
        return target
    return default


# -- pages ------------------------------------------------------------------------------------------

@router.get("")
def board(request: Request, who: Principal = page_user("read")) -> HTMLResponse:
    rt: Runtime = request.app.state.runtime
    now = rt.clock()
    rows = health(rt, now)
    totals = {key: {k: sum(r["windows"][key][k] for r in rows) for k in ("delivered", "failed", "unknown",
                                                                           "retried", "settled")}
              for key, _ in WINDOWS}
    for t in totals.values():
        t["success_rate"] = t["delivered"] / t["settled"] if t["settled"] else None
    current = alerting.evaluate(rt, now)
    return _page(request, "web/ops/board.html", who, health=rows, totals=totals, alerts=current,
                 queue=sum(r["queue"] for r in rows), in_flight=sum(r["in_flight"] for r in rows),
                 attention=delivery_list(rt, ATTENTION, limit=BOARD_LIST), next_url="/ops")


@router.get("/matrix")
def matrix_page(request: Request, who: Principal = page_user("read"),
                state: str = Query("", pattern=_STATE_PATTERN), channel: str = Query("", max_length=40),
                q: str = Query("", max_length=80), before: int | None = Query(None, ge=1, le=MAX_ID)) -> Response:
    rt: Runtime = request.app.state.runtime
    if channel and channel not in rt.config.channels:
        raise HTTPException(422, detail=[{"loc": ["query", "channel"], "msg": f"unknown channel {channel!r}"}])
    q = q.strip()
    rows = matrix.matrix(rt, state=state or None, channel=channel or None, q=q or None, before_id=before, limit=matrix.MATRIX_PAGE)
    shown = [channel] if channel else list(rt.config.channels)
    filters = {k: v for k, v in (("state", state), ("channel", channel), ("q", q)) if v}
    more = "/ops/matrix?" + urlencode({**filters, "before": rows[-1]["id"]}) if len(rows) == matrix.MATRIX_PAGE else None
    newest = "/ops/matrix?" + urlencode(filters) if before is not None else None
    return _page(request, "web/ops/matrix.html", who, rows=rows, shown=shown, f_state=state, f_channel=channel,
                 f_q=q, more=more, newest=newest)


@router.get("/deliveries")
def deliveries_page(request: Request, who: Principal = page_user("read"),
                    tab: str = Query("attention", pattern="^(" + "|".join(TABS) + ")$"),
                    channel: str = Query("", max_length=40),
                    before: int | None = Query(None, ge=1, le=MAX_ID)) -> Response:
    rt: Runtime = request.app.state.runtime
    if channel and channel not in rt.config.channels:
        raise HTTPException(422, detail=[{"loc": ["query", "channel"], "msg": f"unknown channel {channel!r}"}])
    rows = delivery_list(rt, TABS[tab], channel=channel or None, before_id=before)
    more = None
    if len(rows) == LIST_PAGE:
        more = "/ops/deliveries?" + urlencode({k: v for k, v in (("tab", tab), ("channel", channel),
                                                                  ("before", rows[-1]["id"])) if v})
    counts = state_counts(rt, tuple(s for states in TABS.values() for s in states))
    tab_counts = {key: sum(counts.get(s, 0) for s in states) for key, states in TABS.items()}
    here = "/ops/deliveries?" + urlencode({k: v for k, v in (("tab", tab), ("channel", channel)) if v})
    return _page(request, "web/ops/deliveries.html", who, rows=rows, tab=tab, tabs=list(TABS), tab_counts=tab_counts,
                 f_channel=channel, more=more, next_url=here)


@router.get("/deliveries/{delivery_id}")
def delivery_page(request: Request, delivery_id: int = Path(ge=1, le=MAX_ID),
                  who: Principal = page_user("read")) -> Response:
    detail = delivery_detail(request.app.state.runtime, delivery_id)
    if detail is None:
        return _error(request, who, BadRequest(404, "No such delivery: {ids}", ids=f"#{delivery_id}"))
    return _page(request, "web/ops/delivery.html", who, **detail, next_url=f"/ops/deliveries/{delivery_id}")


async def _act(request: Request, who: Principal, action: str, raw_ids: list[str], default_next: str) -> Response:
    rt: Runtime = request.app.state.runtime
    form = await request.form()
    note = str(form.get("note") or "").strip()
    try:
        if action not in ACTIONS:
            raise BadRequest(422, "Unknown action: {value}", value=action[:40])
        if len(note) > 500:
            raise BadRequest(422, "The note is too long (at most {n} characters).", n=500)
        ids = parse_ids(raw_ids)
        from starlette.concurrency import run_in_threadpool

        result = await run_in_threadpool(apply_action, rt, action, ids, who, note)
    except BadRequest as exc:
        return _error(request, who, exc)
    if _wants_json(request):
        return JSONResponse(result.to_json())
    request.session["ops_flash"] = result.to_json()
    return RedirectResponse(_safe_next(str(form.get("next") or ""), default_next), status_code=303)


@router.post("/deliveries/bulk")
async def bulk(request: Request, who: Principal = page_user("operate")) -> Response:
    form = await request.form()
    return await _act(request, who, str(form.get("action") or ""), [str(v) for v in form.getlist("ids")],
                      "/ops/deliveries")


@router.post("/deliveries/{delivery_id}/{action}")
async def single(request: Request, delivery_id: int = Path(ge=1, le=MAX_ID),
                 action: str = Path(pattern="^(retry|resolve|cancel)$"),
                 who: Principal = page_user("operate")) -> Response:
    return await _act(request, who, action, [str(delivery_id)], f"/ops/deliveries/{delivery_id}")


@router.get("/live.json")
def live(request: Request, who: Principal = require("read")) -> JSONResponse:
    rt: Runtime = request.app.state.runtime
    now = rt.clock()
    counts = state_counts(rt, ATTENTION)
    return JSONResponse({"stamp": live_stamp(rt, now), "at": now.isoformat(), "attention": sum(counts.values()),
                         "counts": counts}, headers={"Cache-Control": "no-store"})

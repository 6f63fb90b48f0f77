"""The desk's routes: parse the request, call the core, render the page (or redirect with a flash)."""
from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from syndicator import editorial, operations
from syndicator.articles import BadInput
from syndicator.models import Article, Asset, Revision
from syndicator.publishing import publish as do_publish
from syndicator.states import TERMINAL
from syndicator.users import Principal
from syndicator.views import NotFoundError
from syndicator.web.desk.forms import LIMITS, Submission, _collect, _draft, _field_of, _local_input, _text
from syndicator.web.desk.messages import _flash, _take_flash, _translator, localise
from syndicator.web.desk.preview import preview_panels
from syndicator.web.desk.views import (OPERATION_LABELS, PROBLEM_STATES, STATE_LABELS, _article_context, _articles,
                                       _channel_labels, _counts, _empty_submission, _form_context,
                                       _latest_states, _local)
from syndicator.web.pages import page_user, render

router = APIRouter(prefix="/desk", include_in_schema=False)


# -- routes: list -----------------------------------------------------------------------------------

@router.get("")
def desk_index(request: Request, who: Principal = page_user("read"),
               status: str | None = Query(None, max_length=16), unit: str | None = Query(None, max_length=120),
               problems: str | None = Query(None, max_length=4),
               before: int | None = Query(None, ge=1, le=2**62)) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    status = status if status in ("live", "retracted") else None
    unit = (unit or "").strip() or None
    only_problems = problems in ("1", "on", "true")
    with rt.store.read() as session:
        rows, more = _articles(session, status=status, unit=unit, problems=only_problems, before=before)
        units = session.scalars(select(Revision.unit).join(
            Article, (Article.id == Revision.article_id) & (Article.current_revision == Revision.number))
            .where(Revision.unit != "").distinct().order_by(Revision.unit).limit(200)).all()
        dots = _latest_states(session, [r["id"] for r in rows])
        counts = _counts(session)
    channels = list(rt.config.enabled_channels())
    for row in rows:
        states = dots.get(row["id"], {})
        row["channels"] = [(name, states.get(name)) for name in
                           [*channels, *sorted(set(states) - set(channels))]]
        row["created"] = _local(rt, row["created_at"])
        row["problem"] = any(s and s[0] in PROBLEM_STATES for _n, s in row["channels"])
        row["pending"] = any(s and s[0] not in {"withdrawn", *(t.value for t in TERMINAL)} for _n, s in row["channels"])
    filters = {"status": status or "", "unit": unit or "", "problems": only_problems}
    next_url = None
    if more and rows:
        query = {k: v for k, v in (("status", status), ("unit", unit), ("problems", "1" if only_problems else None))
                 if v}
        query["before"] = str(rows[-1]["id"])
        next_url = "/desk?" + urlencode(query)
    return render(request, "web/desk/index.html", rows=rows, units=units, filters=filters, next_url=next_url,
                  counts=counts, channel_labels=_channel_labels(rt, _), state_labels=STATE_LABELS,
                  flashes=_take_flash(request), paged=before is not None)


# -- routes: create, preview, publish ------------------------------------------------------------

@router.get("/new")
def new_article(request: Request, who: Principal = page_user("publish")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    return render(request, "web/desk/form.html", form=_form_context(rt, _empty_submission(), _))


@router.post("/new")
async def edit_again(request: Request, who: Principal = page_user("publish")) -> Response:
    """Back from the preview to the form, with everything as it was (nothing is checked here)."""
    rt = request.app.state.runtime
    _ = _translator(request)
    sub = await _collect(request, rt, _)
    sub.errors = {k: v for k, v in sub.errors.items() if k in ("cover", "images")}
    return render(request, "web/desk/form.html", form=_form_context(rt, sub, _))


@router.post("/preview")
async def preview(request: Request, who: Principal = page_user("publish")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    sub = await _collect(request, rt, _)
    draft = await run_in_threadpool(_draft, rt, sub, _)
    if draft is None:
        return render(request, "web/desk/form.html", status_code=422, form=_form_context(rt, sub, _))
    panels = await run_in_threadpool(preview_panels, rt, draft, _)
    now = rt.clock()
    scheduled = draft.publish_at if draft.publish_at and draft.publish_at > now else None
    return render(request, "web/desk/preview.html", draft=draft, panels=panels, values=sub.values,
                  cover=sub.cover, images_json=sub.images_json, scheduled=_local(rt, scheduled),
                  site_name=rt.config.site.name,
                  expires=_local(rt, draft.expires_at),
                  errors_count=sum(1 for p in panels for level, _t in p.problems if level == "error"),
                  warnings_count=sum(1 for p in panels for level, _t in p.problems if level == "warn"))


@router.post("/publish")
async def publish_article(request: Request, who: Principal = page_user("publish")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    sub = await _collect(request, rt, _)

    def run():
        draft = _draft(rt, sub, _)
        if draft is None:
            return None
        try:
            return do_publish(rt.store, rt.config, draft, actor=who.actor, enqueuer=rt.enqueuer)
        except BadInput as exc:
            for problem in exc.problems:
                name, message = _field_of(problem)
                sub.error(name, localise(message, _))
            return None

    result = await run_in_threadpool(run)
    if result is None:
        return render(request, "web/desk/form.html", status_code=422, form=_form_context(rt, sub, _))
    if result.created:
        _flash(request, "ok", _("Published: every channel is on its way."))
    else:
        _flash(request, "info", _("This article was already published with the same content; nothing was sent again."))
    return RedirectResponse(f"/desk/articles/{result.article_id}", status_code=303)


# -- routes: the article ------------------------------------------------------------------------

def _render_article(request: Request, article_id: int, status_code: int = 200, *,
                    correction: Submission | None = None, retract_errors: dict[str, list[str]] | None = None,
                    reason: str = "") -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    ctx = _article_context(rt, article_id, _)
    stored = ctx.pop("correction")
    sub = correction or stored
    live_labels = {"states": {k: _(v) for k, v in STATE_LABELS.items()},
                   "operations": {k: _(v) for k, v in OPERATION_LABELS.items()},
                   "open": _("Open"), "all_done": _("All channels settled."),
                   "delivered_of": _("{done} of {total} delivered"),
                   "withdrawn_of": _("{done} of {total} withdrawn")}
    return render(request, "web/desk/article.html", status_code=status_code, **ctx,
                  form=_form_context(rt, sub, _), correction_open=correction is not None,
                  retract_errors=retract_errors or {}, reason=reason, state_labels=STATE_LABELS,
                  operation_labels=OPERATION_LABELS, live_labels=live_labels,
                  timezone=rt.config.site.timezone, flashes=_take_flash(request))


@router.get("/articles/{article_id}")
def show_article(request: Request, article_id: int = PathParam(ge=1, le=2**62),
                 who: Principal = page_user("read")) -> Response:
    return _render_article(request, article_id)


@router.post("/articles/{article_id}/correct")
async def correct_article(request: Request, article_id: int = PathParam(ge=1, le=2**62),
                          who: Principal = page_user("correct")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    sub = await _collect(request, rt, _, extra=("note", "at"))

    def run():
        at = None
        if sub.values["at"]:
            try:
                at = editorial.parse_when(sub.values["at"], now=rt.clock(), timezone=rt.config.site.timezone)
            except BadInput as exc:
                sub.error("at", localise(exc.problems[0], _))
        draft = _draft(rt, sub, _)
        if draft is None or sub.errors:
            return None
        try:
            return editorial.correct(rt, str(article_id), draft, note=sub.values["note"] or None, at=at,
                                     actor=who.actor)
        except NotFoundError:
            raise HTTPException(404, detail="no such article") from None
        except BadInput as exc:
            for problem in exc.problems:
                name, message = _field_of(problem)
                sub.error(name if name != "slug" else "form", localise(message, _))
            return None

    result = await run_in_threadpool(run)
    if result is None:
        return await run_in_threadpool(lambda: _render_article(request, article_id, 422, correction=sub))
    if result.changed:
        when = _local(rt, _local_input(sub.values["at"], rt.ports.timezone)) if sub.values["at"] else ""
        _flash(request, "ok", _("Correction scheduled for {when}: revision {n}.", when=when, n=result.revision)
               if when else _("Correction sent: revision {n} is on its way.", n=result.revision))
    else:
        _flash(request, "info", _("The correction is identical to the current revision; nothing was sent."))
    return RedirectResponse(f"/desk/articles/{article_id}", status_code=303)


@router.post("/articles/{article_id}/retract")
async def retract_article(request: Request, article_id: int = PathParam(ge=1, le=2**62),
                          who: Principal = page_user("retract")) -> Response:
    rt = request.app.state.runtime
    _ = _translator(request)
    form = await request.form()
    reason = _text(form.get("reason"), single_line=True).strip()
    errors: dict[str, list[str]] = {}
    if not reason:
        errors["reason"] = [_("Give the reason for the retraction; it is recorded and shown to readers.")]
    elif len(reason) > LIMITS["reason"]:
        errors["reason"] = [_("{label} has {n} characters; at most {max} are allowed.", label=_("Reason"),
                              n=len(reason), max=LIMITS["reason"])]
    if errors:
        return await run_in_threadpool(lambda: _render_article(request, article_id, 422, retract_errors=errors,
                                                               reason=reason))
    try:
        result = await run_in_threadpool(lambda: editorial.retract(rt, str(article_id), reason=reason,
                                                                   actor=who.actor))
    except NotFoundError:
        raise HTTPException(404, detail="no such article") from None
    if result.changed:
        _flash(request, "ok", _("Retracted: the article is being withdrawn from every channel."))
    else:
        _flash(request, "info", _("This article was already retracted; nothing was done."))
    return RedirectResponse(f"/desk/articles/{article_id}", status_code=303)


@router.post("/articles/{article_id}/retry")
async def retry_article(request: Request, article_id: int = PathParam(ge=1, le=2**62),
                        who: Principal = page_user("retry")) -> Response:
    """「仅重试失败渠道」: failed, unknown and waiting deliveries go again; delivered ones are untouched."""
    rt = request.app.state.runtime
    _ = _translator(request)
    try:
        ids = await run_in_threadpool(lambda: operations.retry(rt, str(article_id), channel=None, actor=who.actor))
    except NotFoundError:
        raise HTTPException(404, detail="no such article") from None
    if ids:
        _flash(request, "ok", _("{n} channel(s) sent again.", n=len(ids)))
    else:
        _flash(request, "info", _("No channel needed sending again."))
    return RedirectResponse(f"/desk/articles/{article_id}", status_code=303)


# -- routes: images and the micro-site stylesheet for the preview ----------------------------------

@router.get("/assets/{sha}")
def asset(request: Request, sha: str = PathParam(pattern=r"^[0-9a-f]{64}$"),
          who: Principal = page_user("read")) -> Response:
    rt = request.app.state.runtime
    with rt.store.read() as session:
        row = session.execute(select(Asset.mime, Asset.data).where(Asset.sha256 == sha)).one_or_none()
    if row is None:
        raise HTTPException(404, detail="no such image")
    return Response(row.data, media_type=row.mime,
                    headers={"Cache-Control": "private, max-age=31536000, immutable"})


@router.get("/preview/microsite.css")
def microsite_css(request: Request, who: Principal = page_user("read")) -> Response:
    css = request.app.state.runtime.ports.templates.get_template("microsite/site.css").render()
    return Response(css, media_type="text/css; charset=utf-8", headers={"Cache-Control": "private, max-age=300"})

"""The editor desk (编辑台): article list, the create form, the five-channel preview, the one
publish button, and the article page with live delivery rows, correction, retraction and retry.

Every route declares its action with `page_user(action)` (login, role, CSRF on POST). A form is
validated completely before anything is stored (`parse_article`, the same check as the CLI and
API); problems come back as 422 with each message next to its field. Uploaded images are the one
thing kept early: content-addressed in the assets table (harmless if never used), carried by
SHA-256 in hidden fields, so neither a failed form nor the publish step needs a re-upload.

The preview renders each enabled channel with the channel's own pure `render` on a snapshot built
from the draft (nothing stored), and shows it in a form suited to the channel. Everything that
shows article HTML goes through `_display_html` (nh3, images only from /desk/assets/), and the
micro-site page sits in a sandboxed `<iframe srcdoc>` without scripts. No inline script or style
anywhere: the CSP is `script-src 'self'; style-src 'self'`.
"""
from __future__ import annotations

from syndicator.web.desk.routes import router

__all__ = ["router"]

"""Page language: Simplified Chinese by default, English available (`?lang=en`, kept in a cookie).

Templates and code write English message ids (`_("Publish")`); the Babel catalogues under
`syndicator/web/locale/<lang>/LC_MESSAGES/*.po` (one file per area) translate them. English needs no catalogue.
Catalogues are read with Babel at start-up, so there is no compile step.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from babel.messages.pofile import read_po

#: Languages offered, default first.
LANGUAGES = ("zh_CN", "en")
DEFAULT_LANGUAGE = "zh_CN"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"


@cache
def catalogue(lang: str) -> dict[str, str]:
    """Every `*.po` file of the language merged (one file per area: messages, desk, ops …)."""
    table: dict[str, str] = {}
    for path in sorted((LOCALE_DIR / lang / "LC_MESSAGES").glob("*.po")):
        with open(path, "rb") as fh:
            table.update({m.id: m.string for m in read_po(fh) if m.id and m.string and isinstance(m.id, str)})
    return table


def translator(lang: str) -> Callable[..., str]:
    table = catalogue(lang if lang in LANGUAGES else DEFAULT_LANGUAGE)

    def gettext(message: str, **values: object) -> str:
        text = table.get(message, message)
        return text.format(**values) if values else text

    return gettext


def choose(query_lang: str | None, cookie_lang: str | None) -> str:
    for lang in (query_lang, cookie_lang):
        if lang in LANGUAGES:
            return lang
    return DEFAULT_LANGUAGE

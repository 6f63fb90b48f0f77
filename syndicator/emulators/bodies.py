"""Request-body parsing the emulators share: multipart/form-data, url-encoded forms, image sniffing.

Starlette's own form parser needs python-multipart, which syndicator does not depend on; this
parser is byte-exact and small.
"""
from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from urllib.parse import parse_qsl

#: Leading bytes of the image formats the vendors accept or reject.
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


@dataclass
class Part:
    """One multipart field."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def header_params(value: str, header: str = "content-type") -> Message:
    """Parse a header with parameters (``multipart/form-data; boundary=…``)."""
    msg = Message()
    msg[header] = value
    return msg


def is_multipart(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() == "multipart/form-data"


def parse_multipart(body: bytes, content_type: str) -> dict[str, Part]:
    """Fields of a multipart/form-data body by name (last one wins). Raises ValueError if malformed."""
    boundary = header_params(content_type).get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise ValueError("multipart body without boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 2:
        raise ValueError("multipart boundary not found in body")
    fields: dict[str, Part] = {}
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without header/body separator")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            key, _, val = line.partition(":")
            headers[key.strip().lower()] = val.strip()
        disp = header_params(headers.get("content-disposition", ""), "content-disposition")
        name = disp.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        fields[name] = Part(name=name, filename=disp.get_filename(),
                            content_type=headers.get("content-type"), data=data)
    return fields


def parse_urlencoded(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as a dict (last value wins)."""
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def sniff_image(data: bytes) -> str | None:
    """``jpeg``/``png``/``gif``/``bmp``/``webp``/``svg`` by content, or None."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "svg"
    return None

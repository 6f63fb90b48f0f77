"""The ops pages (being built)."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/ops", include_in_schema=False)

"""The annotators' review page: ``GET /review``, one static page over the task API.

The page (``serve/static/review.html``) signs in with an annotator's bearer token, fetches
``GET /v1/tasks/next``, shows the item, the suggestion with its confidence and reason (none on
blind tasks), the guideline section and the nearest resolved examples, and answers with keys
1-9 through ``POST /v1/tasks/{id}/annotations``. It holds no data of its own, so serving it
needs no token; every call it makes does.

Its inline script and style are allowed by their hashes in a Content-Security-Policy, and
nothing else is: no other script, no other origin, no framing. Item payloads reach the page
as JSON and go in as text, never as HTML.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["router", "review_page"]

router = APIRouter()


def _hash(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


@lru_cache(maxsize=1)
def review_page() -> tuple[str, str]:
    """The page's HTML and its Content-Security-Policy."""
    html = resources.files("serve").joinpath("static/review.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, flags=re.S)
    policy = ("default-src 'none'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
              f"frame-ancestors 'none'; script-src {' '.join(map(_hash, scripts))}; "
              f"style-src {' '.join(map(_hash, styles))}")
    return html, policy


@router.get("/review", response_class=HTMLResponse, include_in_schema=False)
async def review() -> HTMLResponse:
    html, policy = review_page()
    return HTMLResponse(html, headers={"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
                                       "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})

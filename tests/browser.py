"""Debian's Chromium driven by Playwright (its own browser download cannot work here), for tests
that look at pages as a person would. ``chromium_page`` skips with the reason where either is missing."""
from __future__ import annotations

import contextlib
import shutil
from typing import Iterator

import pytest

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[tuple[object, list[str]]]:
    """A fresh page and the list its errors go to (uncaught page errors and console errors)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    path = chromium()
    if path is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            yield page, errors
        finally:
            browser.close()

"""Debian's Chromium, headless, driven by Playwright's Python API (nothing downloaded).

``make test`` installs the ``chromium`` package (``make chromium``); Playwright is told
where it is and never fetches a browser of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("SPLITMQ_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB: Chromium would crash
    # a page in a background tab is throttled; the test's pages are agents at work
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session (a fresh context per page keeps them apart)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise FileNotFoundError(
            f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium package"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()

"""Agent pages in the session's Chromium: opened, watched, crashed."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

PAGE_START_TIMEOUT_S = 90.0


@dataclass
class AgentPage:
    """One agent page in a browser context of its own (its own storage, its own tab)."""

    agent_id: str
    context: Any
    page: Any
    console: list[str]

    def state(self) -> dict[str, Any]:
        """``window.splitmqAgent`` as plain data."""
        return dict(self.page.evaluate("() => ({...window.splitmqAgent})"))

    def crash(self) -> None:
        """The tab dies as a phone's would (its renderer killed: no pagehide, no
        DISCONNECT, the TCP connection dropped), so the broker publishes its will."""
        from playwright.sync_api import Error

        crashed: list[bool] = []
        self.page.on("crash", lambda *_: crashed.append(True))
        with contextlib.suppress(Error):  # the navigation is aborted by the crash itself
            self.page.goto("chrome://crash", timeout=5000)
        deadline = time.monotonic() + 10
        while not crashed and time.monotonic() < deadline:
            with contextlib.suppress(Error):
                self.page.evaluate("1")
            time.sleep(0.05)
        assert crashed, f"the page {self.agent_id} did not crash"

    def close(self) -> None:
        self.context.close()


def open_agent_page(browser: Any, base_url: str, agent_id: str, **params: str) -> AgentPage:
    """Open ``agent.html?id=AGENT&...`` and wait until its agent serves."""
    context = browser.new_context(ignore_https_errors=base_url.startswith("https"))
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    query = urlencode({"id": agent_id, **params})
    page.goto(f"{base_url}agent.html?{query}")
    agent = AgentPage(agent_id, context, page, console)
    deadline = time.monotonic() + PAGE_START_TIMEOUT_S
    while True:
        state = agent.state()
        if state.get("phase") == "serving" and state.get("connected"):
            return agent
        if state.get("phase") == "failed" or time.monotonic() > deadline:
            context.close()
            raise AssertionError(
                f"the agent page {agent_id} did not start: {state}\n" + "\n".join(console[-20:])
            )
        page.wait_for_timeout(100)

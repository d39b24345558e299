"""A headless Chromium with the agent page open: a "phone" on this machine.

``splitmq demo --browser`` adds one to the demo's fleet when Chromium is installed::

    with browser_phone(broker, pool_dir, workdir, say=print) as phone:
        ...                       # phone.agent_id is online once the page has connected

The page's own agent id and profile come from its URL (``?id=..&profile=..``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from splitmq.transport import TransportConfig

PHONE_ID = "browser-phone-1"
WASM_TOLERANCE = 1e-6
"""How far an answer computed in part by LiteRT.js's wasm build may be from the unsplit
model run by ai-edge-litert (absolute; the top-1 class must be the same). Measured: at
most 3.0e-7 for the digits model with a page on stage 0 (docs/web.md)."""
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HEADLESS_ARGS = (
    "--headless=new",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB
    # an agent must not be throttled like a page in a background tab
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
)


@dataclass(frozen=True)
class BrowserPhone:
    """The page's agent id, and the browser process (SIGKILL it: the page's will fires)."""

    agent_id: str
    process: subprocess.Popen[bytes]
    url: str


def find_chromium() -> Path | None:
    """Chromium or Chrome on this machine (``$SPLITMQ_CHROMIUM`` first), or None."""
    override = os.environ.get("SPLITMQ_CHROMIUM")
    if override:
        return Path(override) if Path(override).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def chromium_command(binary: Path, url: str, profile_dir: Path) -> list[str]:
    command = [str(binary), *HEADLESS_ARGS, f"--user-data-dir={profile_dir}"]
    if os.geteuid() == 0:
        command.append("--no-sandbox")  # Chromium's sandbox cannot start as root
    return [*command, url]


@contextmanager
def browser_phone(
    broker: TransportConfig,
    pool_dir: Path,
    workdir: Path,
    *,
    say: Callable[[str], None],
    agent_id: str = PHONE_ID,
    profile: str = "phone",
) -> Iterator[BrowserPhone | None]:
    """Serve the agent page and open it in a headless Chromium; yields the phone, or None
    (and says why) when Chromium or the built page is missing."""
    from splitmq.web.config import STATIC_DIR, WebConfig
    from splitmq.web.server import WebServer

    binary = find_chromium()
    if binary is None:
        say("no Chromium on this machine: the demo runs without a browser phone")
        yield None
        return
    if not (STATIC_DIR / "agent.html").is_file():
        say(f"the agent page is not built ({STATIC_DIR}): run `make web`; no browser phone")
        yield None
        return
    config = WebConfig(broker=broker, host="127.0.0.1", port=0, pool_dir=pool_dir)
    server = WebServer(config).start()
    url = f"{server.local_url}agent.html?id={agent_id}&profile={profile}"
    workdir.joinpath("logs").mkdir(parents=True, exist_ok=True)
    log = (workdir / "logs" / f"{agent_id}.log").open("wb")
    process = subprocess.Popen(
        chromium_command(binary, url, workdir / f"{agent_id}-profile"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    say(f"browser phone: headless {binary.name} on {url} (fleet page {server.local_url})")
    try:
        yield BrowserPhone(agent_id, process, url)
    finally:
        # The whole process group: the browser's helpers too, even after the browser
        # itself was killed (the demo kills it to show the page's will).
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()
        server.stop()

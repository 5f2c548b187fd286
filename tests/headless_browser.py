"""Open a page in headless Chromium and evaluate JavaScript in it (Chrome DevTools protocol)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The path of a Chromium binary, or None."""
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluate_in_page(url: str, expression: str, timeout: float = 60.0) -> Any:
    """Load `url` in a fresh headless Chromium, wait for the load event, and return the value of
    the (possibly async) JavaScript `expression`, JSON-decoded when it is a string of JSON."""
    import websocket  # websocket-client

    binary = chromium()
    if binary is None:
        raise RuntimeError("no Chromium binary found")
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="skillmix-chromium-")
    proc = subprocess.Popen(
        [
            binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--remote-debugging-port={port}", "--remote-allow-origins=*", f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        pages = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [p for p in json.load(r) if p.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if not pages:
            raise RuntimeError("Chromium did not open its DevTools port")
        ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout)
        counter = iter(range(1, 10**6))

        def call(method: str, **params: Any) -> dict:
            msg_id = next(counter)
            ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == msg_id:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg["result"]

        call("Page.enable")
        call("Page.navigate", url=url)
        while time.monotonic() < deadline:
            state = call("Runtime.evaluate", expression="document.readyState", returnByValue=True)
            if state["result"].get("value") == "complete":
                break
            time.sleep(0.2)
        result = call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        ws.close()
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        value = result["result"].get("value")
        return json.loads(value) if isinstance(value, str) else value
    finally:
        proc.kill()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)

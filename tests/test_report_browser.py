"""report.html in a real browser: headless Chromium opens the file from disk (no server), driven
through the Chrome DevTools Protocol. The page must show its tables, every image must decode with
a non-zero size, nothing may log an error, and no request may leave the file."""
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest
from conftest import run_psx

websocket = pytest.importorskip("websocket", reason="the browser test needs websocket-client (pip install -e '.[dev]')")

SWEEP = ["train", "-m", "model=cnn_shared,cnn_unshared", "dataset.train_size=5,40", "seed=0,1", "trainer.epochs=2",
         "model.channels=[8,16]", "model.hidden=[32]", "trainer.progress=none"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing on CI (.ci/run installs the Debian package `chromium`)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); CI installs it")
    return found


class DevTools:
    """The few CDP calls this test needs, over one websocket to the page."""

    def __init__(self, url: str):
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            assert time.monotonic() < deadline, f"no {method} within {timeout} s"
            self.events.append(json.loads(self.ws.recv()))


@pytest.fixture
def browser(tmp_path):
    profile = tmp_path / "profile"
    process = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1280,2000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_report_html_renders_in_chromium(browser, tmp_path):
    trained = run_psx(SWEEP, cwd=tmp_path)
    assert trained.returncode == 1, trained.stderr  # train_size=5 fails on purpose: a failed-runs table
    report = run_psx(["report"], cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    (html,) = (tmp_path / "outputs" / "multirun").glob("*/*/report/report.html")

    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=html.as_uri())
    browser.wait_for("Page.loadEventFired")

    check = """(async () => {
        const images = await Promise.all([...document.images].map(img => img.decode().then(
            () => [img.naturalWidth, img.naturalHeight], () => [0, 0])));
        const table = document.getElementById('aggregate');
        return {images, tableRows: table ? table.tBodies[0].rows.length : 0,
                tableShown: table ? table.getBoundingClientRect().height > 0 : false,
                failedRows: document.querySelectorAll('#failed tbody tr').length};
    })()"""
    result = browser.call("Runtime.evaluate", expression=check, awaitPromise=True, returnByValue=True)["result"]["value"]
    assert result["tableShown"] and result["tableRows"] == 4  # 2 models x (40, 5): the failed size is a row too
    assert result["failedRows"] == 4
    assert len(result["images"]) == 4 and all(w > 0 and h > 0 for w, h in result["images"]), result["images"]

    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (tmp_path / "report-screenshot.png").write_bytes(base64.b64decode(shot["data"]))  # kept as a test artifact
    assert (tmp_path / "report-screenshot.png").stat().st_size > 10_000

    errors = [e for e in browser.events if e.get("method") in ("Runtime.exceptionThrown",)
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert not errors, errors
    requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests

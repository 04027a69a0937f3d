"""End to end in a real headless browser: the app (a subprocess, as `python app.py` runs it) is opened in Debian's
Chromium driven by Playwright; the test picks the demo recipe, sets short overrides, starts it, waits for a curve
point, loads the run's adapter in Chat and gets a reply. Screenshots: tests/artifacts/ (git-ignored) and the
pytest tmp dir.

No browser (or no playwright) skips, unless KIT_REQUIRE_BROWSER=1 (CI sets it): then it fails.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("KIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# What a user would type to get a run in a minute on a CPU: a short warm-up, then a few small GRPO steps.
OVERRIDES = {"ov-sft-max-steps": "20", "ov-grpo-max-steps": "3", "ov-grpo-num-generations": "2",
             "ov-grpo-per-device-train-batch-size": "8", "ov-grpo-max-completion-length": "32"}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _missing(reason: str):
    if os.environ.get("KIT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"KIT_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None:
        _missing("no chromium on PATH (apt-get install chromium; or set KIT_CHROMIUM)")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`python app.py` on a free port with an empty runs folder; stopped (with any run it started) at the end."""
    home = tmp_path_factory.mktemp("app")
    port = _free_port()
    log = open(home / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--runs", str(home / "runs"),
                             "--recipes", str(ROOT / "recipes")], cwd=home, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app exited ({proc.returncode}):\n{(home / 'app.log').read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        pytest.fail("app did not open its port within 90 s")
    yield url, home
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    # The app leaves runs training when it stops (they are their own sessions): stop the one this test started.
    for summary in (home / "runs").glob("*/summary.json"):
        import json

        pid = json.loads(summary.read_text()).get("pid")
        if pid and json.loads(summary.read_text()).get("status") == "running":
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def _wait_text(page, elem_id: str, pattern: str, timeout_s: float, home: Path):
    """Wait until the element's text matches; on timeout fail with what the page and the run log said."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = _text(page, elem_id)
        if re.search(pattern, text):
            return text
        if re.search(r"\bfailed\b", _text(page, "train-status")):
            break
        time.sleep(1)
    logs = "\n".join(p.read_text()[-3000:] for p in (home / "runs").glob("*/train.log"))
    page.screenshot(path=str(home / "timeout.png"), full_page=True)
    pytest.fail(f"#{elem_id} never matched {pattern!r} (last: {_text(page, elem_id)!r}); train-status: "
                f"{_text(page, 'train-status')!r}\n{logs}")


def _save(page, name: str, home: Path) -> Path:
    path = home / name
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)
    return path


def test_pick_start_watch_and_chat_in_a_real_browser(playwright_api, app_url):
    url, home = app_url
    with playwright_api() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(url, wait_until="domcontentloaded")

        # --- Train: pick the demo recipe, set short overrides, see the command, Start -------------------------
        recipe = page.locator("#recipe input")
        recipe.click()
        recipe.fill("demo")
        page.get_by_role("option", name="demo", exact=True).click()
        _wait_text(page, "recipe-summary", r"builtin:tiny", 30, home)
        for elem_id, value in OVERRIDES.items():
            page.locator(f"#{elem_id} input, #{elem_id} textarea").first.fill(value)
        _wait_text(page, "override-status", r"Valid, 5 override", 30, home)
        assert "--set grpo.max_steps=3" in page.locator("#command").inner_text()
        page.locator("#start").click()
        _wait_text(page, "train-message", r"Started", 30, home)
        started = _text(page, "train-message")
        run_name = re.search(r"Started (demo-[\d-]+)", started).group(1)

        # --- Curves: a point appears while it trains ----------------------------------------------------------
        page.get_by_role("tab", name="Curves").click()
        _wait_text(page, "curve-status", r"reward -?\d+\.\d+ at step \d+", 240, home)
        assert page.locator("#curves img").count() >= 1, "the curve figure is on the page"
        curves_png = _save(page, "app-curves.png", home)

        # --- Runs: the run is listed; wait for it to finish -----------------------------------------------------
        page.get_by_role("tab", name="Runs").click()
        _wait_text(page, "runs-table", rf"{run_name}", 30, home)
        _wait_text(page, "train-status", r"finished", 240, home)

        # --- Chat: load the run's adapter, ask, get a streamed reply ------------------------------------------
        page.get_by_role("tab", name="Chat").click()
        source = page.locator("#chat-source input")
        _wait_text(page, "chat-status", r"No model loaded", 30, home)  # the run has ended: chat is unlocked
        source.click()
        source.fill(run_name)
        page.get_by_role("option", name=re.compile(re.escape(run_name))).click()
        page.locator("#chat-load").click()
        _wait_text(page, "chat-status", r"Loaded: " + re.escape(run_name), 120, home)
        page.locator("#chat-input textarea, #chat-input input").first.fill(
            "Ava has 3 apples. Ava gets 4 more apples. How many apples does Ava have now?")
        page.locator("#chat-send").click()
        _wait_text(page, "chat-extracted", r"extracted answer", 120, home)
        bot = page.locator("#chatbot .message.bot, #chatbot [data-testid='bot']")
        reply = bot.last.inner_text().strip() if bot.count() else ""
        assert reply and "empty answer" not in reply, f"the assistant's reply is on the page: {reply!r}"
        assert "Traceback" not in page.content()
        chat_png = _save(page, "app-chat.png", home)
        browser.close()
    assert curves_png.stat().st_size > 10_000 and chat_png.stat().st_size > 10_000

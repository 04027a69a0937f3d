"""Regenerate docs/app.png (and docs/app-*.png): run the demo recipe through the app in headless Chromium, as a
user would, and photograph each tab once the run has finished.

    python docs/screenshot.py                      # the whole demo recipe: a few minutes on a CPU
    python docs/screenshot.py --set grpo.max_steps=20 --out /tmp/shots

Needs playwright (pip install -e '.[dev]') and a Chromium (apt-get install chromium); no download, no GPU.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
QUESTION = "Cara has 4 boxes with 3 pens in each box. How many pens does Cara have?"


def wait_text(page, elem_id: str, pattern: str, timeout_s: float) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = page.locator(f"#{elem_id}").inner_text()
        if re.search(pattern, text):
            return text
        time.sleep(1)
    raise SystemExit(f"#{elem_id} never showed {pattern!r}; last: {text!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="typed into the app's 'More overrides' box")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNGs")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="kit-screenshot-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--runs", str(home / "runs"),
                            "--recipes", str(ROOT / "recipes")], cwd=home)
    try:
        time.sleep(1)
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            wait_text(page, "recipe-summary", "builtin:tiny", 60)
            if args.overrides:
                page.locator("#ov-extra textarea").fill("\n".join(args.overrides))
                wait_text(page, "override-status", "Valid", 30)
            page.locator("#start").click()
            run = re.search(r"Started (\S+?):", wait_text(page, "train-message", "Started", 60)).group(1)
            print(f"training {run} ...", flush=True)
            page.screenshot(path=str(out / "app-train.png"), full_page=True)
            wait_text(page, "train-status", r"finished|failed|stopped", 3600)
            print(page.locator("#train-status").inner_text(), flush=True)

            page.get_by_role("tab", name="Curves").click()
            wait_text(page, "curve-status", r"reward -?\d", 60)
            page.locator("#smoothing input[type=number]").fill("0.6")
            page.locator("#smoothing input[type=number]").press("Enter")
            time.sleep(4)  # the figure is redrawn on the next poll
            page.screenshot(path=str(out / "app.png"), full_page=True)

            page.get_by_role("tab", name="Runs").click()
            time.sleep(3)
            page.screenshot(path=str(out / "app-runs.png"), full_page=True)
            page.get_by_role("tab", name="Completions").click()
            time.sleep(3)
            page.screenshot(path=str(out / "app-completions.png"), full_page=True)

            page.get_by_role("tab", name="Chat").click()
            source = page.locator("#chat-source input")
            source.click()
            source.fill(run)
            page.get_by_role("option", name=re.compile(re.escape(run))).click()
            page.locator("#chat-load").click()
            wait_text(page, "chat-status", "Loaded:", 300)
            page.locator("#chat-input textarea").fill(QUESTION)
            page.locator("#chat-send").click()
            wait_text(page, "chat-extracted", "extracted answer", 300)
            page.locator("#compare-question textarea").fill(QUESTION)
            page.locator("#compare-expected textarea").fill("12")
            page.locator("#compare").click()
            wait_text(page, "compare-trained", "extracted answer", 300)
            page.screenshot(path=str(out / "app-chat.png"), full_page=True)
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)
    print(f"screenshots in {out}; the run folder: {home / 'runs' / run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

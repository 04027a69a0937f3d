"""`make test-unsloth-import`: the pinned Unsloth imports on a CPU machine; the arguments the kit passes it exist.

    PYTHONPATH=.unsloth-import .venv/bin/python scripts/unsloth_import_check.py [--log FILE]

Unsloth cannot load a model without a CUDA GPU, but with its test switch UNSLOTH_ALLOW_CPU=1 its import runs. The
make target installs profiles/unsloth-import.txt (unsloth, unsloth_zoo and what their import needs, --no-deps) into
a folder of its own, apart from the venv, so triton never changes the CPU path of the venv's torch. This script:

  1. imports unsloth, then `from unsloth import FastLanguageModel` (7-8 s);
  2. for every shipped recipe, with and without vLLM: kit.models.loading.unsloth_kwargs, the keyword arguments
     kit.models.loading passes to `FastLanguageModel.from_pretrained` and `FastLanguageModel.get_peft_model`, held
     against the installed functions' signatures: each a named parameter (or, where the function also takes
     **kwargs, a name its source reads), and the whole set binds;
  3. `FastLanguageModel.for_inference` exists (kit.models.loading calls it for inference without vLLM).

Names only: whether Unsloth honours a value (a dtype, "unsloth" checkpointing) needs a GPU run (make gpu-check).
On the first failure it prints one line, "unsloth import check: <what> failed: <first line> ...", and exits 1;
what Unsloth printed meanwhile goes to --log (default: unsloth-import-check.log in the temporary folder),
not to the console.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import re
import sys
import tempfile
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PINS = ROOT / "profiles" / "unsloth-import.txt"
# Unsloth's own switches: import on CPU (its test mode), no statistics download, compiled code in a scratch folder
# instead of the working directory.
ENV = {"UNSLOTH_ALLOW_CPU": "1", "UNSLOTH_DISABLE_STATISTICS": "1", "HF_HUB_OFFLINE": "1"}


class CheckFailed(Exception):
    pass


def _dist_of(module: str) -> str | None:
    """The installed distribution that provides top-level `module` (tyro -> tyro, yaml -> PyYAML), or None."""
    names = metadata.packages_distributions().get(module)
    return names[0] if names else None


def _pinned_in(dist: str) -> str:
    """Which profile file pins `dist`, as a fix to name."""
    key = re.sub(r"[-_.]+", "-", dist).lower()
    for f in [PINS, *sorted((ROOT / "profiles").glob("*.txt"))]:
        for line in f.read_text().splitlines():
            name = re.split(r"[=<>!~ ;#\[]", line.strip(), maxsplit=1)[0]
            if name and re.sub(r"[-_.]+", "-", name).lower() == key:
                return f"change its pin in {f.relative_to(ROOT)}"
    return f"add it to {PINS.relative_to(ROOT)}"


def _culprit(e: BaseException) -> str:
    """The package an import failure comes from, with its version and the fix: the missing module for an
    ImportError, else the package of the innermost frame that raised."""
    module = None
    if isinstance(e, ImportError) and e.name:
        module = e.name.split(".")[0]
    if module is None:
        # installed code only: site-packages and the PYTHONPATH folder the make target installs into
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        roots = [Path(p).resolve() for p in [*extra, *sys.path] if p in extra or "site-packages" in p]
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            path = Path(frame.filename).resolve()
            root = next((r for r in roots if r in path.parents), None)
            if root is not None:
                module = path.relative_to(root).parts[0].removesuffix(".py")
                break
    if not module:
        return ""
    dist = _dist_of(module)
    if dist is None:
        fix = _pinned_in(module)
        if fix.startswith("change"):  # pinned, yet not there: the folder is older than the pins
            fix = f"{fix.replace('change its pin in', 'pinned in')}: remove .unsloth-import/ and run it again"
        return f" [{module}: not installed; {fix}]"
    return f" [{dist} {metadata.version(dist)}; {_pinned_in(dist)}]"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


@contextlib.contextmanager
def _quiet(log: Path):
    """Everything written to stdout/stderr (Python's and the C libraries' alike) goes to `log` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def import_unsloth(log: Path):
    try:
        with _quiet(log):
            import unsloth  # noqa: F401  (patches transformers/TRL/PEFT: before anything imports them)
            from unsloth import FastLanguageModel
    except Exception as e:  # noqa: BLE001  an import can fail with any type (a GPU probe, a version check)
        raise CheckFailed(f"import unsloth failed: {_first_line(e)}{_culprit(e)}") from e
    return FastLanguageModel


def _source(fn) -> str:
    try:
        return inspect.getsource(inspect.unwrap(fn))
    except (OSError, TypeError):
        return ""


def check_kwargs(fn, label: str, kwargs: dict, positional: tuple = ()) -> list[str]:
    """Each of `kwargs` is a parameter of `fn` (or a name its source reads, if it takes **kwargs) and the call
    binds. Returns the names that only **kwargs takes."""
    sig = inspect.signature(fn)
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    source = _source(fn) if var_kw else ""
    via_kwargs = []
    for name in kwargs:
        if name in params and params[name].kind in (params[name].POSITIONAL_OR_KEYWORD, params[name].KEYWORD_ONLY):
            continue
        if var_kw and re.search(rf"['\"]{name}['\"]|\b{name}\b", source):
            via_kwargs.append(name)
            continue
        raise CheckFailed(f"{label}({name}=...) failed: unsloth {metadata.version('unsloth')} has no parameter "
                          f"{name!r} (kit/models/loading.py unsloth_kwargs passes it; its parameters: "
                          f"{', '.join(n for n in params if n not in ('args', 'kwargs'))[:300]})")
    try:
        sig.bind(*positional, **kwargs)
    except TypeError as e:
        raise CheckFailed(f"{label}(...) failed: the kit's arguments do not bind: {e} (kit/models/loading.py "
                          "unsloth_kwargs)") from None
    return via_kwargs


def check_arguments(FastLanguageModel) -> tuple[int, set, set, list]:
    """kit.models.loading.unsloth_kwargs for every shipped recipe, with and without vLLM, against the installed
    functions. Returns (calls checked, from_pretrained keys, get_peft_model keys, keys taken only by **kwargs)."""
    from kit.models.loading import unsloth_kwargs
    from kit.models.plan import Hardware, plan
    from kit.recipe import list_recipes, load_recipe

    gpu = Hardware(cuda=True, name="a CUDA GPU (assumed)", capability=(8, 0), total_gb=80.0)
    calls, load_keys, peft_keys, loose = 0, set(), set(), []
    for path in list_recipes(ROOT / "recipes"):
        recipe = load_recipe(path)
        base = dataclasses.replace(plan(recipe, gpu), backend="unsloth")
        for fast in (False, True):
            load, peft = unsloth_kwargs(recipe.model, dataclasses.replace(base, fast_inference=fast), seed=0)
            loose += check_kwargs(FastLanguageModel.from_pretrained, "FastLanguageModel.from_pretrained", load)
            loose += check_kwargs(FastLanguageModel.get_peft_model, "FastLanguageModel.get_peft_model", peft,
                                  positional=(None,))  # the model, passed positionally
            calls += 2
            load_keys |= set(load)
            peft_keys |= set(peft)
    if not callable(getattr(FastLanguageModel, "for_inference", None)):
        raise CheckFailed("FastLanguageModel.for_inference failed: not in unsloth "
                          f"{metadata.version('unsloth')} (kit/models/loading.py load_for_inference calls it)")
    return calls, load_keys, peft_keys, sorted(set(loose))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path,
                    help="where Unsloth's own output goes (default: unsloth-import-check.log in the temporary folder)")
    args = ap.parse_args(argv)
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    log = args.log or Path(tempfile.gettempdir()) / "unsloth-import-check.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="unsloth-import-") as scratch:
        os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", os.path.join(scratch, "unsloth_compiled_cache"))
        try:
            FastLanguageModel = import_unsloth(log)
            calls, load_keys, peft_keys, loose = check_arguments(FastLanguageModel)
        except CheckFailed as e:
            print(f"unsloth import check: {e} (Unsloth's output: {log})", flush=True)
            return 1
    versions = ", ".join(f"{d} {metadata.version(d)}" for d in ("unsloth", "unsloth_zoo", "torch", "transformers",
                                                                 "trl", "peft"))
    print(f"unsloth import check: ok ({versions}); {calls} calls from the shipped recipes bind: from_pretrained("
          f"{', '.join(sorted(load_keys))}), get_peft_model({', '.join(sorted(peft_keys))})"
          + (f"; through **kwargs: {', '.join(loose)}" if loose else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

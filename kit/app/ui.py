"""The Gradio app: pick a recipe, run it, watch its reward curves live, read its sampled completions, chat with
the trained adapter.

    python app.py                        # http://127.0.0.1:7860   (also: kit ui, make app)
    python app.py --port 7861 --share    # a public gradio.live link only with --share

This module only wires widgets: what the app does lives in kit/app/controller.py (runs, GPU owner, chat model), what it
shows in kit/app/views.py and kit/runs/plots.py. Handlers turn a `KitError` into a short message on the page; anything else
is a bug, and Gradio shows "Error" without its traceback (show_error=False). `import kit.app.ui` imports no torch.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
from pathlib import Path

# The app runs offline (and must start with no network): Gradio's usage analytics would try to phone home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from kit import runs  # noqa: E402
from kit.app import views
from kit.app.controller import (  # noqa: E402
    KIT_ROOT,
    OVERRIDE_FIELDS,
    Controller,
    add_app_arguments,
    display_path,
    login_for,
)
from kit.recipe import KitError, field_help, ineffective_overrides  # noqa: E402
from kit.runs import metrics, plots
from kit.task.rewards import score

# Long model output wraps instead of scrolling sideways (Markdown code blocks keep lines as they are).
CSS = ("#compare-base pre, #compare-trained pre, #compare-base code, #compare-trained code "
       "{ white-space: pre-wrap !important; overflow-wrap: anywhere; } #compare-base, #compare-trained "
       "{ padding-left: 4px; }")
POLL_S = 2.0  # metrics.jsonl is flushed once per logged step; 2 s keeps the page live without busy reading

HEADER = """# grpo-kit
Pick a recipe and start it (**Train**), follow every run (**Runs**), watch its rewards live (**Curves**), read what
the model wrote and how each reward scored it (**Completions**), then talk to the trained adapter (**Chat**).
One model owns the GPU at a time: chat loads only while nothing trains, and a run starts only with no chat model
loaded."""


def build_app(recipes_dir: str | Path = "recipes", runs_dir: str | Path = "runs",
              controller: Controller | None = None, studies_dir: str | Path = "studies") -> gr.Blocks:
    """The app's Blocks. `controller` (default: one for these folders) holds its runs and chat model; the Runs tab
    also shows the studies (`kit study`) in `studies_dir`."""
    ctl = controller or Controller(recipes_dir, runs_dir)
    with gr.Blocks(title="grpo-kit") as app:
        gr.Markdown(HEADER)
        names = [r.name for r in ctl.run_folders()]
        run_pick = gr.Dropdown(names, value=names[0] if names else None, label="Run",
                               info="the run shown in Runs, Curves and Completions (newest first)",
                               elem_id="run-pick")
        timer = gr.Timer(POLL_S)
        with gr.Tabs():
            with gr.Tab("Train", id="train"):
                _train_tab(app, ctl, run_pick, timer)
            with gr.Tab("Runs", id="runs"):
                _runs_tab(app, ctl, run_pick, timer)
                _studies(app, Path(studies_dir), timer)
            with gr.Tab("Curves", id="curves"):
                _curves_tab(app, ctl, run_pick, timer)
            with gr.Tab("Completions", id="completions"):
                _completions_tab(app, ctl, run_pick, timer)
            with gr.Tab("Chat", id="chat"):
                _chat_tab(app, ctl, timer)
    # A page, not an API: no endpoint is offered to Gradio's client libraries, and the page served before a login
    # (Gradio embeds the API description in it, the dropdowns' choices included) names no recipe and no run.
    for fn in app.fns.values():
        fn.api_visibility = "private"
    return app


def _error(e: KitError) -> str:
    gr.Warning(str(e))
    return f"**Error:** {html.escape(str(e))}"


# ---------------------------------------------------------------------------------------------------------------
# Train: recipe, overrides (validated like the CLI's), Start / Stop


def _train_tab(app: gr.Blocks, ctl: Controller, run_pick, timer) -> None:
    names = ctl.recipe_names()
    with gr.Row():
        with gr.Column(scale=5):
            recipe = gr.Dropdown(names, value="demo" if "demo" in names else (names[0] if names else None),
                                 label="Recipe", allow_custom_value=True, elem_id="recipe",
                                 info=f"a recipe in {ctl.recipes_dir}/, or type the path of a recipe YAML")
            summary = gr.Markdown(elem_id="recipe-summary")
        with gr.Column(scale=6):
            gr.Markdown("**Overrides**: pre-filled with the recipe's values; a change becomes a "
                        "`--set section.field=value`, checked by the same validation as `kit train`.")
            boxes = []
            for chunk in (OVERRIDE_FIELDS[:2], OVERRIDE_FIELDS[2:4], OVERRIDE_FIELDS[4:]):
                with gr.Row():
                    for name in chunk:
                        boxes.append(gr.Textbox(label=name, info=field_help(name), max_lines=1,
                                                elem_id="ov-" + name.replace(".", "-").replace("_", "-")))
            extra = gr.Textbox(label="More overrides", lines=2, elem_id="ov-extra",
                               placeholder="one section.field=value per line, e.g. grpo.temperature=0.9  (kit "
                                           "fields lists them all)")
            check = gr.Markdown(elem_id="override-status")
    with gr.Accordion("Every field of this recipe, with its help text", open=False):
        fields = gr.Dataframe(headers=["field", "value", "help"], interactive=False, wrap=True, max_height=400)
    command = gr.Code(label="Equivalent command", language="shell", interactive=False, elem_id="command",
                      lines=1, max_lines=4, wrap_lines=True)
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="start")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
    message = gr.Markdown(elem_id="train-message")
    status = gr.Markdown(elem_id="train-status")

    def pick(ref):
        try:
            r = ctl.load(ref)
        except KitError as e:
            # Clear the form: values kept from the previous recipe would otherwise turn into silent overrides.
            return (_error(e), None, *[""] * len(boxes), gr.skip(), "", "")
        values = ctl.form_values(r)
        shown = Path(display_path(ctl.recipe_path(ref)))
        return (views.recipe_summary(r, shown), views.recipe_fields(r), *[values[n] for n in OVERRIDE_FIELDS], "",
                "Recipe loaded; no overrides.", ctl.command(ref, []))

    def validate(ref, *values):
        *form, more = values
        try:
            overrides = ctl.overrides(ref, dict(zip(OVERRIDE_FIELDS, form)), more)
            r = ctl.load(ref, overrides)
        except KitError as e:
            return f"**Invalid:** {html.escape(str(e))}", gr.skip(), gr.skip()
        ok = f"Valid, {len(overrides)} override(s)." if overrides else "Recipe loaded; no overrides."
        ok += "".join(f"  \n**Note:** {html.escape(note)}" for note in ineffective_overrides(r, overrides))
        return ok, ctl.command(ref, overrides), views.recipe_summary(r, Path(display_path(ctl.recipe_path(ref))))

    def start_run(ref, *values):
        *form, more = values
        try:
            overrides = ctl.overrides(ref, dict(zip(OVERRIDE_FIELDS, form)), more)
            run = ctl.start(ref, overrides)
        except KitError as e:
            return _error(e), gr.skip()
        names = [r.name for r in ctl.run_folders()]
        return (f"Started **{run.name}**: `{ctl.command(ref, overrides, run)}`. Follow it in Runs and Curves.",
                gr.update(choices=names, value=run.name))

    def stop_run(name):
        try:
            return ctl.stop(ctl.find_run(name))
        except KitError as e:
            return _error(e)

    pick_outputs = [summary, fields, *boxes, extra, check, command]
    recipe.change(pick, recipe, pick_outputs)
    gr.on([b.change for b in boxes] + [extra.change], validate, [recipe, *boxes, extra], [check, command, summary],
          trigger_mode="always_last", show_progress="hidden")
    start.click(start_run, [recipe, *boxes, extra], [message, run_pick])
    stop.click(stop_run, run_pick, message)
    timer.tick(lambda: views.train_status(ctl), None, status, show_progress="hidden")
    # Fill the form when the page opens (the dropdown's first value fires no change event).
    app.load(pick, recipe, pick_outputs)


# ---------------------------------------------------------------------------------------------------------------
# Runs: every run folder with its status; the selected one's details and log tail


def _runs_tab(app: gr.Blocks, ctl: Controller, run_pick, timer) -> None:
    table = gr.Dataframe(headers=views.RUN_COLUMNS, interactive=False, wrap=True, elem_id="runs-table",
                         max_height=320)
    details = gr.Markdown(elem_id="run-details")
    log = gr.Textbox(label="train.log (last 30 lines)", lines=10, max_lines=30, interactive=False,
                     elem_id="run-log")
    last_reward = views.LastReward()

    def refresh(name, seen):
        rows = views.runs_table(ctl, last_reward)
        names = [r[0] for r in rows]
        text, tail = views.run_details(ctl, ctl.find_run(name))
        shown = [rows, names, text, tail]
        # Unchanged parts are skipped: the browser re-renders (and scrolls the log) only when something changed,
        # and the picker is not reset under the user's mouse while the list of runs stays the same.
        changed = [seen is None or new != old for new, old in zip(shown, seen or shown)]
        picker = gr.update(choices=names, value=name if name in names else (names[0] if names else None))
        out = [value if change else gr.skip() for value, change in zip([rows, picker, text, tail], changed)]
        return *out, shown

    seen = gr.State(None)
    outputs = [table, run_pick, details, log, seen]
    timer.tick(refresh, [run_pick, seen], outputs, show_progress="hidden")
    app.load(refresh, [run_pick, seen], outputs)
    run_pick.change(lambda name: views.run_details(ctl, ctl.find_run(name)), run_pick, [details, log])


def _studies(app: gr.Blocks, root: Path, timer) -> None:
    """A study's table and plot (`kit study`, folders under ./studies). The choices are filled after the page
    loads (behind the login where there is one), never into the page itself."""
    with gr.Accordion("Studies (kit study): trials against their baseline", open=False, elem_id="studies"):
        pick = gr.Dropdown([], label="Study", info="a folder under ./studies, most recently updated first",
                           elem_id="study-pick")
        table = gr.Markdown(elem_id="study-table")
        plot = gr.Image(show_label=False, type="pil", interactive=False, elem_id="study-plot")

    def show(name):
        folder = next((f for f in views.study_folders(root) if f.name == name), None)
        text, png = views.study_view(folder)
        if png is None:
            return text, None
        from PIL import Image

        with Image.open(png) as im:
            return text, im.copy()

    def refresh(name, seen):
        folders = views.study_folders(root)
        names = [f.name for f in folders]
        name = name if name in names else (names[0] if names else None)
        json_file = root / name / "study.json" if name else None
        key = [names, name, json_file.stat().st_mtime if json_file and json_file.is_file() else 0]
        if key == seen:  # nothing new: leave the page as it is
            return gr.skip(), gr.skip(), gr.skip(), seen
        text, image = show(name)
        return gr.update(choices=names, value=name), text, image, key

    seen = gr.State(None)
    timer.tick(refresh, [pick, seen], [pick, table, plot, seen], show_progress="hidden")
    app.load(refresh, [pick, seen], [pick, table, plot, seen])
    pick.input(show, pick, [table, plot])


# ---------------------------------------------------------------------------------------------------------------
# Curves: live from metrics.jsonl


def _curves_tab(app: gr.Blocks, ctl: Controller, run_pick, timer) -> None:
    with gr.Row():
        smoothing = gr.Slider(0.0, 0.95, value=0.0, step=0.05, label="Smoothing (EMA weight; 0 = raw values)",
                              info="the raw values stay visible, faint, under the smoothed line",
                              elem_id="smoothing")
    status = gr.Markdown(elem_id="curve-status")
    plot = gr.Plot(show_label=False, format="png", elem_id="curves")
    gr.Markdown(plots.LOSS_NOTE + " Zero is a value: a reward of exactly 0 is drawn, not skipped. Dashed lines "
                "mark where a later stage begins.")

    def refresh(name, weight, drawn):
        run = ctl.find_run(name)
        if run is None:
            return views.curve_status(ctl, None, []), None, None
        path = run / runs.METRICS
        records = metrics.read_jsonl(path)
        st = path.stat() if path.is_file() else None
        key = [str(run), weight, st.st_size if st else 0, st.st_mtime if st else 0]
        text = views.curve_status(ctl, run, records)
        if key == drawn:  # nothing new logged: keep the figure the page already has
            return text, gr.skip(), drawn
        return text, plots.figure(records, weight), key

    drawn = gr.State(None)
    for trigger in (timer.tick, run_pick.change, smoothing.release):
        trigger(refresh, [run_pick, smoothing, drawn], [status, plot, drawn], show_progress="hidden")
    app.load(refresh, [run_pick, smoothing, drawn], [status, plot, drawn])


# ---------------------------------------------------------------------------------------------------------------
# Completions: what the model wrote and how each reward scored it


def _completions_tab(app: gr.Blocks, ctl: Controller, run_pick, timer) -> None:
    # allow_custom_value: a tick that still carries the previous run's step must reach `refresh` (which falls back
    # to latest), not fail Gradio's choice check on the way in.
    step = gr.Dropdown(["latest"], value="latest", label="Step", elem_id="completions-step", allow_custom_value=True,
                       info="latest follows the run as it trains")
    caption = gr.Markdown(elem_id="completions-caption")
    table = gr.Dataframe(interactive=False, wrap=True, elem_id="completions", max_height=600)

    def refresh(name, chosen, shown):
        import pandas as pd  # Gradio's own dependency; only here, where a table is built

        run = ctl.find_run(name)
        path = run / runs.COMPLETIONS if run else None
        st = path.stat() if path and path.is_file() else None
        key = [str(run), chosen, st.st_size if st else 0, st.st_mtime if st else 0]
        if key == shown:
            return gr.skip(), gr.skip(), gr.skip(), shown
        if run is None or not (run / runs.RECIPE).is_file():
            return gr.update(choices=["latest"], value="latest"), "No completions yet.", None, key
        records = metrics.read_jsonl(path)
        choices = ["latest"] + [str(s) for s in views.completion_steps(records)]
        if chosen not in choices:  # another run was picked, without the step shown before: follow the latest
            chosen = "latest"
            key[1] = chosen
        try:
            columns, rows, text = views.completions_table(run, records, None if chosen == "latest" else int(chosen))
        except KitError as e:
            return gr.update(choices=choices, value=chosen), _error(e), None, key
        # Question and completion get the room; the score columns stay narrow enough to be seen beside them.
        widths = ["20%", "36%"] + [f"{44 / (len(columns) - 2):.1f}%"] * (len(columns) - 2)
        return (gr.update(choices=choices, value=chosen), text,
                gr.update(value=pd.DataFrame(rows, columns=columns), column_widths=widths), key)

    shown = gr.State(None)
    for trigger in (timer.tick, run_pick.change, step.change):
        trigger(refresh, [run_pick, step, shown], [step, caption, table, shown], show_progress="hidden")
    app.load(refresh, [run_pick, step, shown], [step, caption, table, shown])


# ---------------------------------------------------------------------------------------------------------------
# Chat: one model loaded on demand; streamed answers; base vs trained side by side


def _shown(text: str) -> str:
    """Model output as the chat shows it: tags such as <answer> visible as text, an empty answer said so."""
    return html.escape(text) if text.strip() else "*(empty answer: the model stopped at once)*"


def _fenced(text: str) -> str:
    """A Markdown code block that model output cannot close early: its fence is longer than any run of backticks in
    the text."""
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


def _answer_md(title: str, text: str, expected: str, session) -> str:
    if not text:
        return f"**{title}**\n\n(waiting)"

    answer = views.answer_line(text)
    lines = [f"**{title}**", "", _fenced(text) if text.strip() else _shown(text), "", f"- {answer}"]
    if expected.strip():
        scores = score(text, expected.strip(), [r.name for r in session.recipe.rewards])
        lines.append("- rewards against the expected answer: " + ", ".join(
            f"{k.removesuffix('_reward')} {v:g}" for k, v in scores.items()))
    return "\n".join(lines)


def _chat_tab(app: gr.Blocks, ctl: Controller, timer) -> None:
    with gr.Row():
        sources = ctl.chat_sources()
        source = gr.Dropdown(sources, value=sources[0][1] if sources else None, label="Model", scale=3,
                             elem_id="chat-source",
                             info="a run's trained adapter, or a recipe's base model")
        load = gr.Button("Load", variant="primary", scale=1, elem_id="chat-load")
        unload = gr.Button("Unload", scale=1, elem_id="chat-unload")
    status = gr.Markdown(elem_id="chat-status")
    message = gr.Markdown(elem_id="chat-message")
    sample = gr.Checkbox(False, label="Sample at the recipe's grpo.temperature (off: greedy, as kit eval)")
    chatbot = gr.Chatbot(elem_id="chatbot", height=360, show_label=False, allow_tags=False)
    convo = gr.State([])  # the raw turns the model sees; the chatbot shows them escaped
    with gr.Row():
        text = gr.Textbox(placeholder="Ask a question, e.g. Ava has 3 apples and gets 4 more. How many now?",
                          show_label=False, scale=5, elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        clear = gr.Button("Clear", scale=1)
    extracted = gr.Markdown(elem_id="chat-extracted")

    gr.Markdown("### Compare: the same question to the base model and the trained adapter")
    with gr.Row():
        question = gr.Textbox(label="Question", scale=4, elem_id="compare-question")
        expected = gr.Textbox(label="Expected answer (optional: scores both with the recipe's rewards)", scale=2,
                              elem_id="compare-expected")
        compare = gr.Button("Compare", scale=1, elem_id="compare")
    with gr.Row():
        with gr.Column(variant="panel"):
            base_out = gr.Markdown(elem_id="compare-base")
        with gr.Column(variant="panel"):
            trained_out = gr.Markdown(elem_id="compare-trained")

    def do_load(choice):
        try:
            session = ctl.load_chat(choice)
        except KitError as e:
            return _error(e), gr.skip(), gr.skip(), views.chat_status(ctl)
        return f"Loaded {session.label}.", [], [], views.chat_status(ctl)

    def do_unload():
        return ctl.unload_chat(), views.chat_status(ctl)

    def chat(question_text, turns, sampled):
        session = ctl.chat
        if session is None:
            yield _error(KitError("no model loaded: choose one above and press Load")), gr.skip(), gr.skip(), \
                gr.skip(), gr.skip()
            return
        if not question_text.strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        turns = turns + [{"role": "user", "content": question_text}]
        answer = ""
        try:
            for answer in session.stream(turns[:-1], question_text, sampled):
                yield "", _display(turns, answer, partial=True), gr.skip(), "", ""
        except KitError as e:
            yield _error(e), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        turns = turns + [{"role": "assistant", "content": answer}]
        yield "", _display(turns), turns, "", views.answer_line(answer)

    def do_compare(question_text, expected_text, sampled):
        session = ctl.chat
        try:
            if session is None:
                raise KitError("no model loaded: load a run's trained adapter above, then compare")
            if not question_text.strip():
                raise KitError("type a question to compare")
            for base, trained in session.compare(question_text, sampled):
                yield (_answer_md("Base model", base, expected_text, session),
                       _answer_md(f"Trained: {session.label}", trained, expected_text, session), "")
        except KitError as e:
            yield gr.skip(), gr.skip(), _error(e)

    load.click(do_load, source, [message, chatbot, convo, status])
    unload.click(do_unload, None, [message, status])
    send_args = dict(fn=chat, inputs=[text, convo, sample], outputs=[message, chatbot, convo, text, extracted])
    send.click(**send_args)
    text.submit(**send_args)
    clear.click(lambda: ([], [], ""), None, [chatbot, convo, extracted])
    compare.click(do_compare, [question, expected, sample], [base_out, trained_out, message])

    def refresh(seen, current):
        choices = ctl.chat_sources()
        if choices == seen:
            return views.chat_status(ctl), gr.skip(), choices
        values = [value for _, value in choices]
        adapters = [value for value in values if not value.endswith((".yaml", ".yml"))]
        # When the list changes (a run finished), a base-model pick moves to the newest trained adapter; a picked
        # adapter stays.
        keep = seen is not None and current in values and (current in adapters or not adapters)
        chosen = current if keep else (values[0] if values else None)  # the newest adapter comes first
        return views.chat_status(ctl), gr.update(choices=choices, value=chosen), choices

    seen = gr.State(None)
    timer.tick(refresh, [seen, source], [status, source, seen], show_progress="hidden")
    app.load(refresh, [seen, source], [status, source, seen])


def _display(turns: list[dict], partial_answer: str = "", partial: bool = False) -> list[dict]:
    shown = [{"role": t["role"], "content": _shown(t["content"]) if t["role"] == "assistant" else
              html.escape(t["content"])} for t in turns]
    if partial:
        shown.append({"role": "assistant", "content": html.escape(partial_answer) or "..."})
    return shown


# ---------------------------------------------------------------------------------------------------------------
# Launch


def default_recipes_dir() -> Path:
    """./recipes when there is one (a user's own), else the kit's."""
    return Path("recipes") if Path("recipes").is_dir() else KIT_ROOT / "recipes"


def cli(args) -> int:
    """`kit ui` and app.py: serve on args.host:args.port; a public link only with args.share. Loopback serves
    without a login; any other host or a share link only behind one (see kit.app.controller.login_for)."""
    login = login_for(args.host, args.share, getattr(args, "auth", None))
    app = build_app(getattr(args, "recipes", None) or default_recipes_dir(), getattr(args, "runs", None) or "runs")
    print(f"[kit] grpo-kit app on http://{args.host}:{args.port}  (Ctrl-C stops the app; runs keep training)",
          flush=True)
    if login is not None:
        user, password, generated = login
        print(f"[kit] login: user {user}, password {password}  (generated for this session; choose your own with "
              "--auth USER:PASSWORD or KIT_UI_AUTH)" if generated else
              f"[kit] login: user {user} (password from --auth / KIT_UI_AUTH)", flush=True)
    app.queue().launch(server_name=args.host, server_port=args.port, share=args.share, show_error=False,
                       footer_links=[], css=CSS, auth=[login[:2]] if login else None,
                       auth_message="grpo-kit: log in with the user and password printed where the app started")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="grpo-kit app: train, watch, chat.")
    add_app_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return cli(build_parser().parse_args(argv))
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

"""GRPO as the field runs it: TRL's knobs as grpo fields (TRL's defaults, so existing recipes train as before),
published algorithms as presets, grpo.trl_args for the rest, and a note when a clip field cannot act."""

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from kit.errors import KitError
from kit.recipe import (
    ALGORITHM_FIELDS,
    ALGORITHMS,
    GRPOSpec,
    RecipeError,
    ineffective_overrides,
    load_recipe,
    on_policy_notes,
    recipe_from_dict,
    save_recipe,
)
from kit.train import trl_args

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """
model:
  name: builtin:tiny
  fast_inference: false
data:
  source: builtin:arithmetic
grpo:
  num_generations: 4
  per_device_train_batch_size: 8
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def load(tmp_path, grpo="", overrides=()):
    return load_recipe(write(tmp_path, MINIMAL + textwrap.indent(textwrap.dedent(grpo), "  ")), overrides)


def error_of(tmp_path, grpo="", overrides=()):
    with pytest.raises(RecipeError) as e:
        load(tmp_path, grpo, overrides)
    return str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# Fields: TRL's names, TRL's defaults, checked ranges


def _trl_default(name):
    from trl import GRPOConfig

    f = GRPOConfig.__dataclass_fields__[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _takes(name, value=None):
    """Whether the installed TRL's GRPOConfig takes name=value (the t4 profile's 0.22 lacks some fields)."""
    from trl import GRPOConfig

    from kit.models import compat

    return compat.grpo_takes(GRPOConfig, name, value)


def _this_trl():
    from kit.models import compat

    return f"this TRL ({compat.version('trl')}, profile {compat.profile()})"


def _on_main():
    from kit.models import compat

    return compat.profile() == "main"


@pytest.mark.parametrize("name", [*trl_args.OPTIONAL_ARGS, "loss_type", "epsilon", "scale_rewards",
                                  "mask_truncated_completions", "beta", "temperature", "top_p"])
def test_defaults_are_trls_own(name):
    """A recipe that sets none of the new fields trains exactly as before: each default is GRPOConfig's. A field
    the installed TRL lacks is never passed at its default, and set away from it fails before any model."""
    from trl import GRPOConfig

    from kit.train.preflight import check_grpo_args

    ours = getattr(GRPOSpec(), name)
    if name not in GRPOConfig.__dataclass_fields__:
        assert not _on_main(), name
        recipe = recipe_from_dict({"model": {"name": "builtin:tiny"}, "grpo": {name: ALL_SET[name]}})
        with pytest.raises(KitError, match=f"grpo.{name}: this TRL .* has no such GRPOConfig field"):
            check_grpo_args(recipe)
        return
    theirs = _trl_default(name)
    if name == "top_k" and theirs is None:  # TRL 0.22: None; 1.14: 0. Both are "no top-k", and 0 is not passed
        theirs = 0
    assert ours == theirs, name


def test_a_recipe_that_sets_none_passes_none():
    assert trl_args.optional_args(GRPOSpec()) == {}
    for path in sorted((ROOT / "recipes").glob("*.yaml")):  # every recipe still loads, and passes nothing new
        r = load_recipe(path)
        assert trl_args.optional_args(r.grpo) == {} and r.grpo.trl_args == {} and r.grpo.algorithm is None, path


ALL_SET = {
    "loss_type": "cispo", "epsilon": 0.1, "epsilon_high": 5.0, "delta": 6.0, "importance_sampling_level": "sequence",
    "num_iterations": 2, "steps_per_generation": 2, "top_entropy_quantile": 0.2, "off_policy_mask_threshold": 0.5,
    "multi_objective_aggregation": "normalize_then_sum", "top_k": 50, "min_p": 0.05, "repetition_penalty": 1.1,
    "vllm_importance_sampling_correction": False, "vllm_importance_sampling_mode": "token_truncate",
    "vllm_importance_sampling_clip_max": 2.0, "vllm_importance_sampling_clip_min": 0.5,
    "mask_truncated_completions": True, "scale_rewards": "batch",
}


def test_every_field_reaches_grpo_config(tmp_path):
    from kit.models.plan import Hardware, plan
    from kit.train.trl_args import grpo_config

    assert set(trl_args.OPTIONAL_ARGS) <= set(ALL_SET)
    extra = {"sapo_temperature_neg": 1.2, "entropy_coef": 1e-3}
    fields = {k: v for k, v in ALL_SET.items() if _takes(k, v)}  # all of them on profile main
    extra = {k: v for k, v in extra.items() if _takes(k)}
    assert not _on_main() or (fields == ALL_SET and len(extra) == 2)
    recipe = recipe_from_dict({"model": {"name": "builtin:tiny", "fast_inference": False},
                               "grpo": {**fields, "trl_args": extra}})
    args = grpo_config(recipe, plan(recipe, Hardware(cuda=False)), tmp_path)
    for name, value in {**fields, **extra}.items():
        assert getattr(args, name) == value, name


@pytest.mark.parametrize("grpo, needle", [
    ("epsilon_high: 11", "grpo.epsilon_high: 11.0 is out of range; must be > 0.0 and <= 10.0"),
    ("epsilon: 0", "grpo.epsilon: 0.0 is out of range; must be > 0.0"),
    ("delta: 1.0", "grpo.delta: 1.0 is out of range; must be > 1.0"),
    ("num_iterations: 0", "grpo.num_iterations: 0 is out of range; must be >= 1"),
    ("steps_per_generation: 0", "grpo.steps_per_generation: 0 is out of range"),
    ("top_entropy_quantile: 1.5", "grpo.top_entropy_quantile: 1.5 is out of range; must be >= 0.0 and <= 1.0"),
    ("top_k: -1", "grpo.top_k: -1 is out of range; must be >= 0"),
    ("min_p: 2", "grpo.min_p: 2.0 is out of range"),
    ("repetition_penalty: 0", "grpo.repetition_penalty: 0.0 is out of range; must be > 0.0"),
    ("off_policy_mask_threshold: -0.1", "grpo.off_policy_mask_threshold: -0.1 is out of range"),
    ("importance_sampling_level: sentence", "grpo.importance_sampling_level: 'sentence' is not allowed"),
    ("multi_objective_aggregation: sum", "grpo.multi_objective_aggregation: 'sum' is not allowed"),
    ("loss_type: gspo", "grpo.loss_type: 'gspo' is not allowed"),
    ("vllm_importance_sampling_mode: sequence", "grpo.vllm_importance_sampling_mode: 'sequence' is not allowed"),
    ("vllm_importance_sampling_clip_max: 0.5", "grpo.vllm_importance_sampling_clip_max: 0.5 is out of range"),
    ("vllm_importance_sampling_clip_min: 1.5", "grpo.vllm_importance_sampling_clip_min: 1.5 is out of range"),
    ("vllm_importance_sampling_clip_min: 1.0\nvllm_importance_sampling_clip_max: 1.0",
     "grpo.vllm_importance_sampling_clip_min: 1 is not below"),
    ("vllm_importance_sampling_mode: token_truncate\nvllm_importance_sampling_clip_max: null",
     "set vllm_importance_sampling_clip_max"),
    ("algorithm: gpso", "grpo.algorithm: 'gpso' is not allowed; choose one of grpo, dr_grpo, dapo, gspo"),
    ("trl_args: [entropy_coef]", "grpo.trl_args: expected a mapping"),
    ("trl_args: {entropy-coef: 1}", "grpo.trl_args: 'entropy-coef' is not an argument name"),
    ("trl_args: {lr_scheduler_kwargs: {power: 2}}", "grpo.trl_args.lr_scheduler_kwargs: expected a number"),
])
def test_range_and_shape_errors_are_one_line_naming_the_field(tmp_path, grpo, needle):
    msg = error_of(tmp_path, grpo + "\n")
    assert needle in msg and "\n" not in msg, msg


def test_small_epsilons_and_cispos_cap_are_in_range(tmp_path):
    r = load(tmp_path, "epsilon: 3e-4\nepsilon_high: 5\n")  # GSPO's lower clip; CISPO's cap (YAML reads 3e-4 as text)
    assert r.grpo.epsilon == 3e-4 and r.grpo.epsilon_high == 5.0


def test_a_round_of_rollouts_holds_whole_groups(tmp_path):
    msg = error_of(tmp_path, "steps_per_generation: 3\n", ["grpo.per_device_train_batch_size=2",
                                                            "grpo.gradient_accumulation_steps=2"])
    assert msg.startswith("grpo.steps_per_generation: per_device_train_batch_size x steps_per_generation = 2 x 3")


def test_trl_args_shape_and_overrides(tmp_path):
    r = load(tmp_path, "trl_args: {entropy_coef: 1e-3, sapo_temperature_neg: 1.1}\n",
             ["grpo.trl_args.use_adaptive_entropy=true"])
    assert r.grpo.trl_args == {"entropy_coef": 1e-3, "sapo_temperature_neg": 1.1, "use_adaptive_entropy": True}
    assert isinstance(r.grpo.trl_args["entropy_coef"], float)  # 1e-3 without a dot: a number, not text


# ---------------------------------------------------------------------------------------------------------------
# Presets


def test_presets_set_only_algorithm_fields_and_each_loads(tmp_path):
    for name, a in ALGORITHMS.items():
        assert set(a.sets) <= set(ALGORITHM_FIELDS), name
        assert not set(a.sets) & {"beta", "num_generations", "learning_rate"}
        assert (a.arxiv and re.fullmatch(r"\d{4}\.\d{5}", a.arxiv)) or "no paper" in a.title, name
        r = load(tmp_path, f"algorithm: {name}\n")
        for field, value in a.sets.items():
            assert getattr(r.grpo, field) == value, (name, field)


def test_presets_resolve_and_explicit_values_win(tmp_path):
    r = load(tmp_path, "algorithm: gspo\n")
    g = r.grpo
    assert (g.loss_type, g.importance_sampling_level, g.epsilon, g.epsilon_high) == ("grpo", "sequence", 3e-4, 4e-4)
    assert g.beta == 0.0 and g.num_generations == 4  # never touched by a preset
    r = load(tmp_path, "algorithm: dapo\nepsilon_high: 0.3\nloss_type: dapo\n",
             ["grpo.mask_truncated_completions=false"])
    assert (r.grpo.epsilon_high, r.grpo.mask_truncated_completions, r.grpo.epsilon) == (0.3, False, 0.2)
    r = load(tmp_path, "algorithm: dr_grpo\n", ["grpo.scale_rewards=group"])
    assert (r.grpo.loss_type, r.grpo.scale_rewards) == ("dr_grpo", "group")
    r = load(tmp_path, "", ["grpo.algorithm=cispo"])
    assert (r.grpo.loss_type, r.grpo.epsilon_high) == ("cispo", 5.0)


def test_switching_presets_leaves_nothing_of_the_first(tmp_path):
    r = load(tmp_path, "algorithm: gspo\n", ["grpo.algorithm=dr_grpo"])
    g, d = r.grpo, GRPOSpec()
    assert (g.loss_type, g.scale_rewards) == ("dr_grpo", "none")
    assert (g.importance_sampling_level, g.epsilon, g.epsilon_high) == (d.importance_sampling_level, d.epsilon, None)
    assert load(tmp_path, "algorithm: gspo\n", ["grpo.algorithm=null"]).grpo == GRPOSpec(num_generations=4,
                                                                                          per_device_train_batch_size=8)


@pytest.mark.parametrize("algorithm", [None, *ALGORITHMS])
def test_load_save_load_gives_the_same_recipe(tmp_path, algorithm):
    over = [f"grpo.algorithm={algorithm}"] if algorithm else []
    r = load(tmp_path, "epsilon: 0.15\ntrl_args: {entropy_coef: 0.01}\n", over)
    save_recipe(r, tmp_path / "saved.yaml")
    again = load_recipe(tmp_path / "saved.yaml")
    assert again == r
    save_recipe(again, tmp_path / "saved2.yaml")
    assert (tmp_path / "saved2.yaml").read_text() == (tmp_path / "saved.yaml").read_text()


def test_a_preset_over_a_saved_recipe_says_what_it_cannot_change(tmp_path):
    save_recipe(load(tmp_path, "algorithm: gspo\n"), tmp_path / "saved.yaml")
    over = ["grpo.algorithm=dr_grpo", "grpo.loss_type=dr_grpo"]
    r = load_recipe(tmp_path / "saved.yaml", over)
    assert r.grpo.loss_type == "dr_grpo" and r.grpo.importance_sampling_level == "sequence"  # the file's wins
    (note,) = ineffective_overrides(r, over)
    assert note.startswith("grpo.algorithm: the recipe sets grpo.scale_rewards, grpo.epsilon, grpo.epsilon_high, "
                           "grpo.importance_sampling_level itself") and "--set those too" in note
    fresh = load(tmp_path, "algorithm: gspo\n", ["grpo.algorithm=dr_grpo"])
    assert ineffective_overrides(fresh, ["grpo.algorithm=dr_grpo"]) == []


# ---------------------------------------------------------------------------------------------------------------
# A knob that cannot act is said


def test_clip_fields_on_policy_get_one_note(tmp_path):
    (note,) = on_policy_notes(load(tmp_path, "algorithm: gspo\n"), vllm_correction=False)
    assert note.startswith("grpo.epsilon, grpo.epsilon_high, grpo.importance_sampling_level have no effect here "
                           "(grpo.algorithm=gspo sets them)")
    assert "ratio is exactly 1" in note and "grpo.num_iterations >= 2" in note and "steps_per_generation above" in note
    (note,) = on_policy_notes(load(tmp_path, "", ["grpo.delta=4"]), vllm_correction=False)
    assert note.startswith("grpo.delta has no effect here:") and "makes it act" in note


@pytest.mark.parametrize("grpo, vllm", [
    ("algorithm: gspo\nnum_iterations: 2\n", False),
    ("algorithm: gspo\nsteps_per_generation: 2\n", False),  # above gradient_accumulation_steps (1)
    ("algorithm: gspo\n", True),  # vLLM's importance-sampling correction keeps old log-probs
    ("algorithm: dr_grpo\n", False),  # sets no clip field
    ("importance_sampling_level: sequence\nbeta: 0.01\n", False),  # reweights the KL gradient even on-policy
    ("", False),
])
def test_no_note_where_the_fields_act_or_are_unset(tmp_path, grpo, vllm):
    assert on_policy_notes(load(tmp_path, grpo), vllm_correction=vllm) == []


def test_on_policy_follows_trls_own_rule(tmp_path):
    """TRL keeps old log-probs when gradient_accumulation_steps % (steps_per_generation x num_iterations) != 0."""
    r = load(tmp_path, "per_device_train_batch_size: 4\ngradient_accumulation_steps: 4\nsteps_per_generation: 2\n"
                       "num_iterations: 2\nepsilon: 0.1\n")  # 4 % (2 x 2) == 0: still on-policy
    assert len(on_policy_notes(r, vllm_correction=False)) == 1
    r = dataclasses.replace(r, grpo=dataclasses.replace(r.grpo, steps_per_generation=3))
    assert on_policy_notes(r, vllm_correction=False) == []


def test_vllm_correction_follows_the_plan(tmp_path):
    from kit.models.plan import Hardware, Plan

    r = load(tmp_path, "algorithm: gspo\n")
    hf = Plan("transformers", False, False, "float32", "adamw_torch", Hardware(cuda=False))
    vllm = dataclasses.replace(hf, fast_inference=True)
    assert not trl_args.vllm_correction(r, hf)
    assert trl_args.vllm_correction(r, vllm) == _takes("vllm_importance_sampling_correction")  # 0.22 has none
    off = dataclasses.replace(r, grpo=dataclasses.replace(r.grpo, vllm_importance_sampling_correction=False))
    assert not trl_args.vllm_correction(off, vllm)


# ---------------------------------------------------------------------------------------------------------------
# The preflight: the installed GRPOConfig, before any model loads


def preflight_error(recipe):
    from kit.train.preflight import check_grpo_args

    with pytest.raises(KitError) as e:
        check_grpo_args(recipe)
    assert "\n" not in str(e.value)
    return str(e.value)


MAIN_ONLY = pytest.mark.skipif("not _on_main()", reason="the hint names a field only profile main's TRL has")


@pytest.mark.parametrize("name, needle", [
    pytest.param("sapo_temperature_negg", ("grpo.trl_args.sapo_temperature_negg: this TRL (1.14.0, profile main) "
                                           "has no such GRPOConfig argument; did you mean sapo_temperature_neg?"),
                 marks=MAIN_ONLY),
    ("entropy_coeff", "has no such GRPOConfig argument"),
    ("logging_stps", "did you mean logging_steps? (use the recipe field grpo.logging_steps)"),
    ("beta", "grpo.trl_args.beta: not allowed here; use the recipe field grpo.beta"),
    ("loss_type", "use the recipe field grpo.loss_type"),
    ("num_generations", "use the recipe field grpo.num_generations"),
    ("learning_rate", "use the recipe field grpo.learning_rate"),
    ("warmup_steps", "use the recipe field grpo.warmup_ratio"),
    ("max_prompt_length", "use the recipe field grpo.max_prompt_length"),
    ("report_to", "use the recipe field run.report_to"),
    ("reward_weights", "use the recipe field rewards"),
    pytest.param("vllm_importance_sampling_cap", "use the recipe field grpo.vllm_importance_sampling_clip_max",
                 marks=MAIN_ONLY),
    ("output_dir", "the kit sets it from its plan"),
    ("bf16", "the kit sets it from its plan"),
    ("vllm_server_timeout", "the kit sets it from its plan"),
    ("save_total_limit", "the kit sets it from its plan"),
    ("logging_first_step", "the kit sets it from its plan"),
])
def test_trl_args_unknown_or_reserved(name, needle):
    recipe = recipe_from_dict({"model": {"name": "builtin:tiny"}, "grpo": {"trl_args": {name: 1}}})
    assert needle in preflight_error(recipe)


def test_every_argument_the_kit_passes_is_refused_in_trl_args(tmp_path):
    """The reserved names cover whatever grpo_args sets, on every kind of plan."""
    from kit.models.plan import Hardware, Plan

    recipe = recipe_from_dict({"model": {"name": "builtin:tiny", "vllm_server": "http://localhost:8000"},
                               "data": {"enable_thinking": False}, "grpo": ALL_SET})
    cpu = Plan("transformers", False, False, "float32", "adamw_torch", Hardware(cuda=False))
    plans = [cpu, dataclasses.replace(cpu, fast_inference=True)]
    for p in plans:
        for name in trl_args.grpo_args(recipe, p, tmp_path, stop_ids=[2]):
            assert trl_args.reserved(name), name


def test_a_recipe_that_sets_nothing_new_imports_no_trl_before_the_model():
    import subprocess
    import sys

    code = ("import sys; from kit.recipe import load_recipe; from kit.train.preflight import check_grpo_args; "
            "check_grpo_args(load_recipe('recipes/demo.yaml')); print('trl' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_known_trl_args_pass_the_preflight():
    from kit.train.preflight import check_grpo_args

    fields = {k: v for k, v in ALL_SET.items() if _takes(k, v)}
    extra = {k: v for k, v in {"sapo_temperature_neg": 1.1, "entropy_coef": 0.01, "cast_lm_head_to_fp32": False,
                               "sync_ref_model": True}.items() if _takes(k)}
    assert not _on_main() or (fields == ALL_SET and len(extra) == 4)
    assert "sync_ref_model" in extra  # every tested TRL has it
    check_grpo_args(recipe_from_dict({"model": {"name": "builtin:tiny"}, "grpo": {**fields, "trl_args": extra}}))


@pytest.mark.skipif("_on_main()", reason="the real older TRL: profile t4 (make test-compat)")
@pytest.mark.parametrize("grpo, needle", [
    ({"loss_type": "cispo"}, "grpo.loss_type: cispo is not a loss of this TRL (0.22.2, profile t4)"),
    ({"algorithm": "sapo"}, "grpo.loss_type: sapo is not a loss of this TRL (0.22.2, profile t4)"),
    ({"multi_objective_aggregation": "normalize_then_sum"}, "grpo.multi_objective_aggregation: this TRL (0.22.2"),
])
def test_the_t4_profiles_trl_refuses_what_it_lacks(grpo, needle):
    msg = preflight_error(recipe_from_dict({"model": {"name": "builtin:tiny"}, "grpo": grpo}))
    assert needle in msg and "profile main (trl 1.14.0) has it" in msg, msg


def _old_grpo_config(drop, loss_help):
    """A GRPOConfig as an older TRL has it: without `drop`, and a loss_type whose help lists fewer losses."""
    from trl import GRPOConfig

    fields = []
    for f in dataclasses.fields(GRPOConfig):
        if f.name in drop:
            continue
        meta = {"help": loss_help} if f.name == "loss_type" else dict(f.metadata)
        fields.append((f.name, object, dataclasses.field(default=None, metadata=meta)))
    return dataclasses.make_dataclass("GRPOConfig", fields)


OLD_LOSSES = "Supported values are 'grpo', 'dapo', 'bnpo', and 'dr_grpo'."


@pytest.mark.parametrize("grpo, needle", [
    ({"multi_objective_aggregation": "normalize_then_sum"}, "grpo.multi_objective_aggregation: this TRL"),
    ({"vllm_importance_sampling_correction": False}, "grpo.vllm_importance_sampling_correction: this TRL"),
    ({"off_policy_mask_threshold": 0.5}, "grpo.off_policy_mask_threshold: this TRL"),
    ({"loss_type": "cispo"}, "grpo.loss_type: cispo is not a loss of this TRL"),
    ({"algorithm": "sapo"}, "grpo.loss_type: sapo is not a loss of this TRL"),
])
def test_a_field_an_older_trl_lacks_fails_before_the_model(monkeypatch, grpo, needle):
    import trl

    monkeypatch.setattr(trl, "GRPOConfig", _old_grpo_config(
        {"multi_objective_aggregation", "off_policy_mask_threshold", "vllm_importance_sampling_correction",
         "vllm_importance_sampling_mode", "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min"},
        OLD_LOSSES))
    msg = preflight_error(recipe_from_dict({"model": {"name": "builtin:tiny"}, "grpo": grpo}))
    assert needle in msg and "profile main (trl 1.14.0) has it" in msg, msg


def test_fields_left_at_their_defaults_are_not_passed_to_an_older_trl(monkeypatch):
    import trl

    from kit.train.preflight import check_grpo_args

    monkeypatch.setattr(trl, "GRPOConfig", _old_grpo_config({"multi_objective_aggregation"}, OLD_LOSSES))
    check_grpo_args(recipe_from_dict({"model": {"name": "builtin:tiny"}, "grpo": {"algorithm": "dapo"}}))


# ---------------------------------------------------------------------------------------------------------------
# kit fields, kit train, the docs


def test_kit_fields_grpo_lists_the_presets_from_the_table(capsys):
    from kit.cli import main

    assert main(["fields", "grpo"]) == 0
    out = capsys.readouterr().out
    for name in trl_args.OPTIONAL_ARGS + ("algorithm", "trl_args"):
        assert f"grpo.{name}  (default" in out, name
    for name, a in ALGORITHMS.items():
        line = next(line for line in out.splitlines() if line.strip().startswith(f"- {name}: "))
        assert a.title in line and (a.arxiv is None or f"arXiv {a.arxiv}" in line)
        assert all(f"{k}=" in line for k in a.sets)
    assert "no dynamic sampling" in out


def test_docs_preset_table_is_current():
    from kit.cli import algorithms_markdown

    text = (ROOT / "docs" / "grpo-options.md").read_text()
    table = re.search(r"<!-- algorithms:start -->\n(.*)\n<!-- algorithms:end -->", text, re.DOTALL)
    assert table and table.group(1) == algorithms_markdown(), \
        'regenerate with: python -c "from kit.cli import algorithms_markdown as m; print(m())"'


def test_kit_train_refuses_an_unknown_trl_arg_before_any_model(tmp_path):
    from test_cli import kit

    out = tmp_path / "runs"
    result = kit("train", "recipes/demo.yaml", "--set", "grpo.trl_args.entropy_coeff=0.01", "--set",
                 f"run.output_dir={out}")
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    # the last line (importing TRL's config may let a library warn first, e.g. bitsandbytes on a CPU)
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"error: grpo.trl_args.entropy_coeff: {_this_trl()} has no such GRPOConfig argument")
    assert not _on_main() or last.endswith("; did you mean entropy_coef?")
    assert "model loaded" not in result.stdout and not out.exists()


@pytest.mark.slow
def test_gspo_reaches_the_checkpoint(tmp_path, capsys):
    """Two GRPO steps on builtin:tiny with algorithm=gspo: TRL's saved arguments hold the preset's values."""
    import torch

    from kit import runs
    from kit.train.flow import train

    recipe = write(tmp_path, f"""
        model: {{name: builtin:tiny, fast_inference: false, max_seq_length: 256}}
        data: {{source: builtin:arithmetic}}
        grpo: {{algorithm: gspo, num_generations: 4, per_device_train_batch_size: 4, max_prompt_length: 160,
                max_completion_length: 8, max_steps: 2, save_steps: 2, completions_every: 0}}
        eval: {{every_steps: 0}}
        run: {{output_dir: {tmp_path / 'runs'}}}
        """)
    run = train(recipe)
    assert "have no effect here (grpo.algorithm=gspo sets them)" in capsys.readouterr().out
    args = torch.load(next(run.glob("stages/*-grpo/checkpoints/checkpoint-2/training_args.bin")), weights_only=False)
    assert (args.importance_sampling_level, args.loss_type, args.epsilon, args.epsilon_high) == \
        ("sequence", "grpo", 3e-4, 4e-4)
    saved = load_recipe(run / runs.RECIPE)
    assert saved.grpo.algorithm == "gspo" and saved.grpo.epsilon_high == 4e-4

"""The seed pipeline end to end on CPU: SFT -> GRPO -> SFT on filtered self-generated answers -> GRPO."""

from pathlib import Path

import pytest

from kit import runs
from kit.runs import metrics
from kit.task.rewards import correctness_reward

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

STAGES = ("stages=[{kind: sft, max_steps: 400}, {kind: grpo, max_steps: 3}, "
          "{kind: rejection_sft, questions: 32, samples_per_question: 4, max_steps: 4, learning_rate: 1.0e-4}, {kind: grpo, max_steps: 3}]")


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    from kit.train.flow import train

    out = tmp_path_factory.mktemp("pipeline")
    # format_fraction 1: the warm-up writes the layout, so strict accuracy measures what was learnt
    return train(ROOT / "recipes" / "demo-pipeline.yaml",
                 [STAGES, "sft.format_fraction=1.0", "eval.every_steps=3", "eval.during_limit=32",
                  f"run.output_dir={out}"])


def test_every_stage_writes_its_folder(pipeline_run):
    names = ["1-sft", "2-grpo", "3-rejection_sft", "4-grpo"]
    summary = runs.read_summary(pipeline_run)
    assert summary["status"] == "finished"
    assert [s["name"] for s in summary["stages"]] == names
    assert all(s["status"] == "finished" for s in summary["stages"])
    for name in names:
        folder = pipeline_run / runs.STAGES / name
        assert (folder / runs.RECIPE).is_file() and (folder / runs.METRICS).is_file()
        assert (folder / runs.ADAPTER / "adapter_model.safetensors").is_file()


def test_metrics_carry_the_stage_and_a_continuous_step_axis(pipeline_run):
    records = metrics.read_jsonl(pipeline_run / runs.METRICS)
    stages = [r["stage"] for r in records]
    assert stages == sorted(stages, key=lambda s: int(s.split("-")[0]))  # in pipeline order
    run_steps = [r["run_step"] for r in records if "loss" in r]
    assert run_steps == sorted(run_steps)
    assert max(r["run_step"] for r in records if r["stage"] == "4-grpo") == 400 + 3 + 4 + 3


def test_rejection_stage_keeps_only_correct_unique_answers(pipeline_run):
    folder = pipeline_run / runs.STAGES / "3-rejection_sft"
    kept = metrics.read_jsonl(folder / "kept.jsonl")
    assert kept, "the warm-up + GRPO model should get some of 128 sampled answers right"
    assert correctness_reward([k["completion"] for k in kept], answer=[k["answer"] for k in kept]) == [1.0] * len(kept)
    keys = [(k["question"], " ".join(k["completion"].split())) for k in kept]
    assert len(keys) == len(set(keys))
    record = next(r for r in metrics.read_jsonl(pipeline_run / runs.METRICS) if "rejection/kept" in r)
    assert record["rejection/sampled"] == 128 and record["rejection/kept"] == len(kept)


def test_each_stage_starts_from_the_previous_adapter(pipeline_run):
    records = metrics.read_jsonl(pipeline_run / runs.METRICS)
    first_loss = {s: next(r["loss"] for r in records if r["stage"] == s and "loss" in r)
                  for s in ("1-sft", "3-rejection_sft")}
    # a fresh LoRA on the random model starts near log(vocab) ~ 6.5; the rejection SFT starts trained
    assert first_loss["1-sft"] > 4 and first_loss["3-rejection_sft"] < 1.5


def test_held_out_accuracy_is_logged_and_above_the_random_base(pipeline_run):
    records = metrics.read_jsonl(pipeline_run / runs.METRICS)
    evals = [r for r in records if "eval/accuracy_strict" in r]
    assert {r["stage"] for r in evals} == {"2-grpo", "4-grpo"}
    final = evals[-1]["eval/accuracy_strict"]
    # the random base model cannot write an <answer> block, so its strict accuracy is 0
    assert final > 0.15, evals


# --- the rejection filter and its LLM-as-judge, without a whole pipeline ------------------------------------------


def _two_gsm8k_rows():
    from kit.task import data

    return data.questions("builtin:gsm8k-sample", "train", limit=2, seed=0)


def test_filter_keeps_correct_answers_once_each():
    from kit.train.rejection import filter_answers

    a, b = _two_gsm8k_rows()
    right_a = f"<reasoning>\nsteps\n</reasoning>\n<answer>\n{a['answer']}\n</answer>"
    answers = [[right_a, right_a.replace("\n", " \n "), "<answer>\n-1\n</answer>", "no answer"],
               [f"<reasoning>x</reasoning>\n<answer>{b['answer']}</answer>", ""]]
    kept, n_correct = filter_answers([a, b], answers)
    assert n_correct == 3  # two spellings of the same right answer for a, one for b
    assert [k["question"] for k in kept] == [a["question"], b["question"]]  # the whitespace twin is dropped
    assert kept[0] == {"question": a["question"], "answer": a["answer"], "completion": right_a}


def test_judge_filters_after_correctness():
    from kit.train.rejection import filter_answers

    a, b = _two_gsm8k_rows()
    seen = []

    def judge(question, completion, prompt):  # approves only worked answers; sees only correct ones
        seen.append(completion)
        assert prompt == "P"
        return "steps" in completion

    answers = [[f"<reasoning>steps</reasoning><answer>{a['answer']}</answer>"],
               [f"<reasoning></reasoning><answer>{b['answer']}</answer>", "<answer>0.5</answer>"]]
    kept, n_correct = filter_answers([a, b], answers, judge, "P")
    assert n_correct == 2 and len(seen) == 2
    assert [k["question"] for k in kept] == [a["question"]]


def test_judge_loads_through_the_real_path_and_keeps_what_it_approves(monkeypatch):
    """The judge (builtin:tiny, loaded as a rejection_sft stage's `judge` is) is asked the stage's judge prompt about
    each correct answer; a reply that starts with YES (any case, after spaces) approves it, any other rejects it; the
    filter keeps exactly the approved answers."""
    from kit.models.engines import Generator
    from kit.recipe import StageSpec
    from kit.train.rejection import filter_answers, load_judge

    stage = StageSpec(kind="rejection_sft", judge="builtin:tiny")
    real_generate = Generator.generate
    asked, replies, scripted = [], [], {}  # scripted: call number -> the reply given in place of the model's

    def generate(self, prompts, max_new_tokens, **kwargs):
        replies.append(real_generate(self, prompts, max_new_tokens, **kwargs)[0][0])  # the loaded judge answers
        asked.append(prompts[0][0]["content"])
        return [[scripted.get(len(asked), replies[-1])]]

    monkeypatch.setattr(Generator, "generate", generate)
    approve = load_judge(stage)
    a, b = _two_gsm8k_rows()

    # the model's own reply (the random tiny model: whatever it writes) decides, parsed as YES or not
    verdict = approve(a["question"], f"<answer>{a['answer']}</answer>", stage.judge_prompt)
    assert isinstance(replies[0], str)
    assert verdict is replies[0].strip().upper().startswith("YES")
    assert asked[0] == stage.judge_prompt.format(question=a["question"], completion=f"<answer>{a['answer']}</answer>")

    # replies scripted per call: approve the 1st and 3rd correct answers, reject the 2nd; wrong answers never asked
    scripted.update({2: "  yes, the reasoning holds", 3: "No.", 4: "YES"})
    a_steps = f"<reasoning>steps</reasoning><answer>{a['answer']}</answer>"
    a_bare = f"<answer>{a['answer']}</answer>"
    b_steps = f"<reasoning>steps</reasoning><answer>{b['answer']}</answer>"
    kept, n_correct = filter_answers([a, b], [[a_steps, "<answer>-1</answer>", a_bare], [b_steps, "no answer"]],
                                     approve, stage.judge_prompt)
    assert n_correct == 3 and len(asked) == 4  # the two wrong answers went to no judge
    assert [k["completion"] for k in kept] == [a_steps, b_steps]
    assert asked[1:] == [stage.judge_prompt.format(question=q["question"], completion=c)
                         for q, c in ((a, a_steps), (a, a_bare), (b, b_steps))]

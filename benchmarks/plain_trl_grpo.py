"""The baseline of benchmarks/real_model.py: GRPO on the real model with TRL alone — no kit code in the training
path, as a user would write it from TRL's docs. Same work as the kit's run it is compared with: the same model
folder, questions, system prompt, LoRA and GRPOConfig values; two reward functions of its own instead of the
kit's five (they cost microseconds beside a step's seconds).

    python benchmarks/plain_trl_grpo.py MODEL_FOLDER --steps 5 --generations 4 --completion 64

Prints one line `PLAIN {"train_s": ..., "steps": ..., "wall_s": ...}`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time

SYSTEM = "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"


# The reward functions, written here in TRL's signature so that nothing of the kit is in the training path. They
# score what the kit's built-in rewards score (an answer block holding the right number; the layout).
def correctness(completions, answer, **kwargs):
    out = []
    for c, a in zip(completions, answer):
        m = re.search(r"<answer>\s*(-?[\d,.]+)\s*</answer>", c[0]["content"])
        out.append(2.0 if m and m.group(1).replace(",", "") == a else 0.0)
    return out


def layout(completions, **kwargs):
    pattern = r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n?$"
    return [0.5 if re.match(pattern, c[0]["content"], re.S) else 0.0 for c in completions]


def questions(n: int, seed: int) -> list[dict]:
    """The kit's builtin:arithmetic questions (data only: the same prompts as the kit's run), as TRL's
    conversational prompts with the gold answer."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from kit.task.answers import extract_hash_answer
    from kit.task.arithmetic import arithmetic_rows

    rows = arithmetic_rows("train")
    random.Random(seed).shuffle(rows)
    return [{"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["question"]}],
             "answer": extract_hash_answer(r["answer"])} for r in rows[:n]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--completion", type=int, default=64)
    p.add_argument("--seed", type=int, default=3407)
    args = p.parse_args()
    t0 = time.time()
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    torch.manual_seed(args.seed)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    config = GRPOConfig(output_dir="/tmp/plain-trl-grpo", use_cpu=True, bf16=False, seed=args.seed,
                        num_generations=args.generations, per_device_train_batch_size=args.generations,
                        max_completion_length=args.completion, max_steps=args.steps, learning_rate=1e-5, beta=0.0,
                        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[correctness, layout], args=config,
                          train_dataset=Dataset.from_list(questions(256, args.seed)), processing_class=tokenizer)
    t1 = time.time()
    trainer.train()
    t2 = time.time()
    print("PLAIN " + json.dumps({"train_s": round(t2 - t1, 1), "steps": args.steps, "wall_s": round(t2 - t0, 1)}),
          flush=True)


if __name__ == "__main__":
    main()

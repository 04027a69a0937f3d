"""The numbers of an evaluation, from scored answers: GSM8K accuracy, measured the same way before and after training, and the numbers that tell a reasoning gain
from a format gain.

strict: the number in the first <answer> block is right (what correctness_reward pays for).
lenient: the last number anywhere in the answer is right (credits a right answer in the wrong layout).
format: the strict <reasoning>/<answer> layout (format_reward). Greedy decoding, the recipe's system prompt.

With K samples per question (`kit eval --samples K`, temperature > 0) also, strict and `_lenient`:
pass@1   mean correctness of the K samples;
pass@k   the unbiased estimator of Chen et al. 2021, 1 - C(K-c, k) / C(K, k) for c right of K, averaged over the
         questions (reported for k = 2, 4, ... and K; at k = K it is the share of questions with a right sample);
maj@K    the majority answer of the K samples is right. Samples without an answer do not vote (a question whose
         samples all lack one counts as wrong); a tie goes to the tied answer sampled first.
"""

from __future__ import annotations

import math

from kit.task.answers import answers_match, extract_answer
from kit.task.rewards import format_reward


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the chance that at least one of k samples is right, from c right of n samples
    (Chen et al. 2021, in its numerically stable product form).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 4, 1)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    p = 1.0
    for i in range(n - c + 1, n + 1):
        p *= 1.0 - k / i
    return 1.0 - p


def majority(answers: list[str | None]) -> str | None:
    """The most frequent answer (canonical strings from extract_answer); None answers do not vote; a tie goes to
    the tied answer that occurs first. None when no sample has an answer.

    >>> majority(["3", None, "4", "4", "3"]), majority([None, None]), majority(["7", "5", "5", "7"])
    ('3', None, '7')
    """
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def pass_ks(k: int) -> list[int]:
    """The k reported for K samples: 1, 2, 4, ... below K, and K."""
    ks, x = [], 1
    while x < k:
        ks.append(x)
        x *= 2
    return ks + [k]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def score_answers(rows: list[dict], completions: list[str], tokenizer=None) -> tuple[dict, list[dict]]:
    """Per-item results and their summary for completions answering `rows` (question/answer dicts)."""
    items = []
    for row, text in zip(rows, completions, strict=True):
        strict, lenient = extract_answer(text), extract_answer(text, lenient=True)
        items.append({
            "question": row["question"], "gold": row["answer"], "completion": text,
            "pred_strict": strict, "pred_lenient": lenient,
            "correct_strict": answers_match(strict, row["answer"]),
            "correct_lenient": answers_match(lenient, row["answer"]),
            "format": format_reward([text])[0] == 1.0,
            "length": len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer else len(text),
        })
    summary = {"n": len(items), "accuracy_strict": _mean(i["correct_strict"] for i in items),
               "accuracy_lenient": _mean(i["correct_lenient"] for i in items),
               "format_rate": _mean(i["format"] for i in items), "mean_length": _mean(i["length"] for i in items),
               "length_unit": "tokens" if tokenizer else "characters"}
    return summary, items


def score_samples(rows: list[dict], samples: list[list[str]]) -> tuple[dict, list[dict]]:
    """K sampled answers per row scored: the summary's pass@k / maj@K (strict and `_lenient`), and per row the
    samples with their extracted answers and correctness plus the per-row figures (`sampled`)."""
    k = len(samples[0]) if samples else 0
    if k < 1 or any(len(s) != k for s in samples):
        raise ValueError("score_samples needs the same number (>= 1) of samples for every row")
    per_row = []
    for row, texts in zip(rows, samples, strict=True):
        drawn = []
        for text in texts:
            strict, lenient = extract_answer(text), extract_answer(text, lenient=True)
            drawn.append({"completion": text, "pred_strict": strict, "pred_lenient": lenient,
                          "correct_strict": answers_match(strict, row["answer"]),
                          "correct_lenient": answers_match(lenient, row["answer"]),
                          "format": format_reward([text])[0] == 1.0})
        figures = {}
        for suffix, key in (("", "strict"), ("_lenient", "lenient")):
            c = sum(d[f"correct_{key}"] for d in drawn)
            vote = majority([d[f"pred_{key}"] for d in drawn])
            figures[f"correct{suffix}"] = c
            figures[f"maj{suffix}"] = vote
            figures[f"maj@{k}{suffix}"] = answers_match(vote, row["answer"])
            for j in pass_ks(k):
                figures[f"pass@{j}{suffix}"] = pass_at_k(k, c, j)
        per_row.append({"samples": drawn, "sampled": figures})
    summary = {"samples": k}
    for suffix in ("", "_lenient"):
        for j in pass_ks(k):
            summary[f"pass@{j}{suffix}"] = _mean(r["sampled"][f"pass@{j}{suffix}"] for r in per_row)
        summary[f"maj@{k}{suffix}"] = _mean(r["sampled"][f"maj@{k}{suffix}"] for r in per_row)
    summary["format_rate_sampled"] = _mean(d["format"] for r in per_row for d in r["samples"])
    return summary, per_row


def difference_interval(base: list, trained: list) -> tuple[float, float, float]:
    """Difference in the mean (trained - base) over the same items (booleans or per-item rates), with a 95%
    interval from the paired differences (normal approximation)."""
    if len(base) != len(trained) or not base:
        raise ValueError("paired comparison needs the same, non-empty item list")
    d = [float(t) - float(b) for b, t in zip(base, trained)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def gain_split(a_items: list[dict], b_items: list[dict]) -> dict:
    """Where the strict gain from A to B comes from, question by question (paired by question):
    format_gain: right by the lenient criterion in A, strictly right in B (the answer was there, the layout new);
    reasoning_gain: wrong under both criteria in A, strictly right in B;
    format_loss / reasoning_loss: the reverse (strictly right in A; in B right only leniently / wrong under both).
    Strictly right implies leniently right, so strict(B) - strict(A) = the two gains - the two losses. Each entry:
    `count` and `share` (of n)."""
    by_q = {i["question"]: i for i in a_items}
    pairs = [(by_q[b["question"]], b) for b in b_items if b["question"] in by_q]
    counts = dict.fromkeys(("format_gain", "reasoning_gain", "format_loss", "reasoning_loss"), 0)
    for a, b in pairs:
        if b["correct_strict"] and not a["correct_strict"]:
            counts["format_gain" if a["correct_lenient"] else "reasoning_gain"] += 1
        elif a["correct_strict"] and not b["correct_strict"]:
            counts["format_loss" if b["correct_lenient"] else "reasoning_loss"] += 1
    n = len(pairs)
    out = {key: {"count": c, "share": c / n if n else 0.0} for key, c in counts.items()}
    out["n"] = n
    return out


DIFF_KEYS = ("accuracy_strict", "accuracy_lenient", "format_rate")


def comparison(a: tuple[dict, list[dict]], b: tuple[dict, list[dict]]) -> dict:
    """Paired A vs B table: {"n", "a": summary, "b": summary, "diff": {metric: {value, low, high}}, "gain": ...}
    with diff = B - A and its 95% interval over the questions both answered; with samples on both sides the
    diff also holds pass@1, pass@K, maj@K (strict and _lenient), from the per-question figures."""
    (sa, items_a), (sb, items_b) = a, b
    by_q = {i["question"]: i for i in items_a}
    pairs = [(by_q[i["question"]], i) for i in items_b if i["question"] in by_q]
    if not pairs:
        raise ValueError("the two evaluations share no question")
    fields = {"accuracy_strict": "correct_strict", "accuracy_lenient": "correct_lenient", "format_rate": "format"}
    diff = {}
    for key, field in fields.items():
        value, low, high = difference_interval([p[0][field] for p in pairs], [p[1][field] for p in pairs])
        diff[key] = {"value": value, "low": low, "high": high}
    k = sa.get("samples") if sa.get("samples") == sb.get("samples") else None
    if k and all("sampled" in x for p in pairs for x in p):
        for suffix in ("", "_lenient"):
            for key in (f"pass@1{suffix}", f"pass@{k}{suffix}", f"maj@{k}{suffix}"):
                value, low, high = difference_interval([float(p[0]["sampled"][key]) for p in pairs],
                                                       [float(p[1]["sampled"][key]) for p in pairs])
                diff[key] = {"value": value, "low": low, "high": high}
    return {"n": len(pairs), "a": sa, "b": sb, "diff": diff, "gain": gain_split(items_a, items_b)}


def format_comparison(table: dict) -> str:
    """The compare table as text: A, B, B - A with its interval per metric, then the strict gain split."""
    a, b, n = table["a"], table["b"], table["n"]
    lines = [f"{'metric':<18} {'A':>7} {'B':>7} {'B - A':>7}   95% interval of the difference"]
    for key, d in table["diff"].items():
        lines.append(f"{key:<18} {a[key]:>7.1%} {b[key]:>7.1%} {d['value']:>+7.1%}   [{d['low']:+.1%}, "
                     f"{d['high']:+.1%}]")
    g = table["gain"]
    lines += ["", "strict gain, question by question (A -> B):"]
    for key, text in (("format_gain", "format gain: right only leniently in A, strictly right in B"),
                      ("reasoning_gain", "reasoning gain: wrong under both criteria in A, strictly right in B"),
                      ("format_loss", "format loss: strictly right in A, right only leniently in B"),
                      ("reasoning_loss", "reasoning loss: strictly right in A, wrong under both in B")):
        lines.append(f"  {g[key]['count']:>4} ({g[key]['share']:>6.1%})  {text}")
    net = (g["format_gain"]["count"] + g["reasoning_gain"]["count"] - g["format_loss"]["count"]
           - g["reasoning_loss"]["count"])
    lines.append(f"  net {net:+d} of {n} = strict B - A")
    return "\n".join(lines)

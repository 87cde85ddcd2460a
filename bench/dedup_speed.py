"""Deduplication speed and accuracy on synthetic support conversations.

    python bench/dedup_speed.py                       # 100,000 examples, the target run
    python bench/dedup_speed.py --n 5000              # quick check

Generates `--n` conversations deterministically from `--seed`: templates
filled with products, order numbers and names, plus sentences of random
support words so that unrelated examples stay well below the threshold.
Planted on top: `--exact` (fraction) verbatim copies and `--near` copies
with one to three small edits (typo, swapped word, punctuation, case,
an added "Thanks!"), all shuffled in. Every example belongs to a family
(its original and the copies of it), which is the ground truth.

Then runs exact dedup on everything and near dedup on what survives, the
order `inhouse.data.dedup.deduplicate` uses, timing each stage. A near
removal is correct when the kept and the removed example are one family;
recall counts the family members that should have gone after the exact stage.
Target: the whole run under 60 s for 100,000 examples on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

from inhouse.data.conversation import Conversation, Message
from inhouse.data.dedup import DEFAULT_THRESHOLD, exact_duplicates, near_duplicates

PRODUCTS = [
    "Acme Router X2",
    "CloudSync Pro",
    "the billing portal",
    "the mobile app",
    "SmartThermo 3",
    "the web dashboard",
    "PhotoVault",
    "the API",
    "Team Calendar",
    "the desktop client",
    "PayFlow",
    "the smart lock",
    "DataBridge",
    "the VPN client",
    "the printer driver",
    "MailGuard",
    "the loyalty card",
    "FitBand 5",
    "the wifi extender",
    "StreamBox",
    "the invoice export",
    "the admin console",
    "NoteHub",
    "the SSO login",
]
NAMES = [
    "Ana",
    "Ben",
    "Chen",
    "Dara",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Luca",
    "Mia",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Yara",
    "Zoe",
]
USER = [
    "Hi, my order {order} for {product} has not arrived yet and the tracking page has not changed since {day}.",
    "Hello, {product} keeps logging me out every few minutes since the update on {day}.",
    "I was charged twice for {product} this month, invoice {order}. Can you refund one of them?",
    "How do I reset my password for {product}? The reset link from {day} says it expired.",
    "{product} shows error code E{code} when I try to sync. What does that mean?",
    "Can I change the delivery address for order {order}? I moved on {day}.",
    "My {product} stopped working after I plugged it into a different outlet on {day}.",
    "Is there a way to export all my data from {product} before I cancel?",
    "I would like to upgrade my plan for {product} but the button is greyed out.",
    "The discount code I got on {day} does not work for {product}, order {order}.",
]
ASSISTANT = [
    "Sorry about the wait, {name} here. I checked order {order}: it left our warehouse "
    "and should arrive within three working days.",
    "Thanks for reaching out! This happens when the session token expires early. "
    "Please sign out, clear the cache of {product}, and sign in again.",
    "I can see the duplicate charge on invoice {order}. I have refunded it; "
    "it takes five to seven days to show on your statement.",
    "Reset links are valid for thirty minutes. "
    "Request a new one on the login page of {product} and open it right away.",
    "Error E{code} means the server rejected the sync token. Update {product} to the latest version and try again.",
    "Of course. I updated the delivery address for order {order}; you will get a confirmation email shortly.",
    "That sounds like a power issue. "
    "Hold the reset button of {product} for ten seconds and tell me what the light does.",
    "Yes: open Settings, then Privacy, then Export data in {product}. You will get a download link by email.",
    "The upgrade button is disabled while an invoice is open. Once invoice {order} is paid you can upgrade {product}.",
    "That code expired on {day}, but I applied the same discount to order {order} manually.",
]
WORDS = (
    "account access activation adapter alert app backup balance battery billing browser cable cache calendar card "
    "charge chat checkout client code connection contract cookie credit customer dashboard data delivery device "
    "discount display download driver email error export family feature file firmware folder form gateway "
    "guest history import install invoice item key laptop language license light limit link login mailbox manual "
    "member message mobile modem monitor network notification number order outlet package password payment phone "
    "photo plan plugin port portal power preference price printer privacy profile purchase receipt refund region "
    "reminder report request router schedule screen server session settings setup shipment signal speaker "
    "storage subscription support sync tablet tax team ticket timezone token tracking transfer update upgrade "
    "upload user version voucher wallet warranty website wifi window workspace yesterday today morning again "
    "still never always suddenly slowly twice really quite almost already"
).split()
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend", "March 3", "April 12", "May 28"]
SWAPS = {
    "order": "purchase",
    "refund": "reimbursement",
    "arrive": "get there",
    "Please": "Kindly",
    "again": "once more",
}


def detail(rng: random.Random) -> str:
    """A sentence of random support words: what makes each example its own."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 14))]
    return " ".join(words).capitalize() + "."


def base_conversation(rng: random.Random) -> list[tuple[str, str]]:
    slots = dict(
        order=f"#{rng.randint(10000, 99999)}",
        product=rng.choice(PRODUCTS),
        day=rng.choice(DAYS),
        code=rng.randint(100, 999),
        name=rng.choice(NAMES),
    )
    t = rng.randrange(len(USER))
    turns = [
        ("user", f"{USER[t].format(**slots)} {detail(rng)}"),
        ("assistant", f"{ASSISTANT[t].format(**slots)} {detail(rng)} Best, {slots['name']}"),
    ]
    if rng.random() < 0.3:
        turns += [("user", f"Thanks. {detail(rng)}"), ("assistant", f"You're welcome! {detail(rng)}")]
    return turns


def edit(turns: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """One to three small edits, the kind people make when re-pasting an example."""
    turns = list(turns)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(turns))
        role, text = turns[i]
        turns[i] = (role, rng.choice(EDITS)(text, rng))
    return turns


def _typo(text: str, rng: random.Random) -> str:
    p = rng.randrange(1, len(text) - 2)
    return text[:p] + text[p + 1] + text[p] + text[p + 2 :]


def _swap(text: str, rng: random.Random) -> str:
    hits = [w for w in SWAPS if w in text]
    return text.replace(hits[0], SWAPS[hits[0]], 1) if hits else text + " Thanks!"


def _punct(text: str, rng: random.Random) -> str:
    return text[:-1] + "!" if text.endswith(".") else text + "."


def _case(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    p = rng.randrange(len(words))
    words[p] = words[p].upper()
    return " ".join(words)


def _thanks(text: str, rng: random.Random) -> str:
    return text + rng.choice([" Thanks!", " Thank you.", " Cheers"])


EDITS = (_typo, _swap, _punct, _case, _thanks)


def generate(n: int, exact: float, near: float, seed: int) -> tuple[list[Conversation], list[int], dict]:
    """Conversations, the family of each, and how many copies were planted."""
    rng = random.Random(seed)
    n_exact, n_near = int(n * exact), int(n * near)
    bases = [base_conversation(rng) for _ in range(n - n_exact - n_near)]
    items = [(turns, fam) for fam, turns in enumerate(bases)]
    items += [(bases[f], f) for f in (rng.randrange(len(bases)) for _ in range(n_exact))]
    items += [(edit(bases[f], rng), f) for f in (rng.randrange(len(bases)) for _ in range(n_near))]
    rng.shuffle(items)
    convs = [
        Conversation(tuple(Message(r, t) for r, t in turns), "synthetic", i + 1) for i, (turns, _) in enumerate(items)
    ]
    return convs, [fam for _, fam in items], {"exact": n_exact, "near": n_near}


def near_truth(survivors: list[int], family: list[int]) -> int:
    """Survivors of the exact stage that repeat an earlier survivor's family."""
    seen: set[int] = set()
    expected = 0
    for i in survivors:
        expected += family[i] in seen
        seen.add(family[i])
    return expected


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    convs, family, planted = generate(args.n, args.exact, args.near, args.seed)
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    exact = exact_duplicates(convs)
    t_exact = time.perf_counter() - t0
    gone = {i for c in exact for i in c.removed}
    survivors = [i for i in range(len(convs)) if i not in gone]

    t0 = time.perf_counter()
    near = near_duplicates([convs[i] for i in survivors], threshold=args.threshold)
    t_near = time.perf_counter() - t0

    pairs = [(survivors[c.kept], survivors[r]) for c in near for r in c.removed]
    correct = sum(family[k] == family[r] for k, r in pairs)
    expected = near_truth(survivors, family)
    return {
        "examples": len(convs),
        "threshold": args.threshold,
        "seed": args.seed,
        "seconds": {"generate": t_gen, "exact": t_exact, "near": t_near, "dedup_total": t_exact + t_near},
        "examples_per_second": len(convs) / (t_exact + t_near),
        "planted": planted,
        "exact_removed": len(gone),
        "exact_clusters": len(exact),
        "near_removed": len(pairs),
        "near_clusters": len(near),
        "near_expected": expected,
        "near_precision": correct / len(pairs) if pairs else 1.0,
        "near_recall": correct / expected if expected else 1.0,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
    }


def table(r: dict) -> str:
    s, n = r["seconds"], r["examples"]
    rows = [
        ("exact (normalise + hash)", f"{s['exact']:.1f}", f"{n / s['exact']:,.0f}"),
        ("near (MinHash + LSH + verify)", f"{s['near']:.1f}", f"{n / s['near']:,.0f}"),
        ("**total dedup**", f"**{s['dedup_total']:.1f}**", f"**{r['examples_per_second']:,.0f}**"),
    ]
    lines = [f"{n:,} examples, threshold {r['threshold']}", "", "| stage | seconds | examples/s |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    p = r["planted"]
    lines += [
        "",
        f"- exact duplicates removed: {r['exact_removed']:,} (planted {p['exact']:,})",
        f"- near duplicates removed: {r['near_removed']:,} (planted {p['near']:,} edited copies; "
        f"{r['near_expected']:,} left to find after the exact stage)",
        f"- near-duplicate precision {r['near_precision']:.4f}, recall {r['near_recall']:.4f} against the plant",
        f"- generating the data (not counted): {s['generate']:.1f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--exact", type=float, default=0.05, help="fraction of verbatim copies planted")
    ap.add_argument("--near", type=float, default=0.05, help="fraction of edited copies planted")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/dedup_speed.json"))
    args = ap.parse_args(argv)
    result = run(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0 if result["seconds"]["dedup_total"] < 60 else 1


if __name__ == "__main__":
    sys.exit(main())

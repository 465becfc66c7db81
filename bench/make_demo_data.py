"""Write the bundled demo dataset ``shared/data/demo/support.jsonl`` (deterministic).

Short multi-turn support conversations for a made-up product, with one consistent assistant
style ("Sure! ... Anything else?" and a fixed sign-off), so that even the tiny built-in model
visibly picks the style up in a minute of CPU training. Every example fits the tiny model's
256-byte context. Run ``python bench/make_demo_data.py`` to regenerate; the output is
byte-identical for the same script.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "shared" / "data" / "demo" / "support.jsonl"
SEED = 7
SYSTEM = "You are Tuna, the Tuneloop support bot."

# topic -> (ways a user asks, the answer in the house style)
TOPICS: dict[str, tuple[list[str], str]] = {
    "password": (
        ["I forgot my password.", "How do I reset my password?", "Password reset please.",
         "I can't remember my password."],
        "Sure! Click 'Forgot password' on the login page. Anything else?",
    ),
    "refund": (
        ["I want a refund.", "Can I get my money back?", "How do refunds work?",
         "Please refund my order."],
        "Sure! Refunds take 5 days after we get the item. Anything else?",
    ),
    "shipping": (
        ["Where is my order?", "When will my package arrive?", "Track my parcel.",
         "Is my order shipped?"],
        "Sure! Orders ship in 2 days; see the tracking link. Anything else?",
    ),
    "cancel": (
        ["Cancel my plan.", "How do I cancel?", "I want to stop my subscription.",
         "Please end my plan."],
        "Sure! Go to Settings > Plan > Cancel. Anything else?",
    ),
    "invoice": (
        ["I need an invoice.", "Where are my invoices?", "Send me my bill.",
         "How do I get a receipt?"],
        "Sure! Invoices are under Settings > Billing. Anything else?",
    ),
    "upgrade": (
        ["How do I upgrade?", "I want the Pro plan.", "Upgrade my account.",
         "Can I get more seats?"],
        "Sure! Pick Pro under Settings > Plan. Anything else?",
    ),
    "email": (
        ["How do I change my email?", "Update my email address.", "New email please.",
         "My email changed."],
        "Sure! Edit it under Settings > Profile. Anything else?",
    ),
    "hours": (
        ["When are you open?", "What are your hours?", "Is support open now?",
         "Can I call you?"],
        "Sure! We answer 9am to 5pm, Monday to Friday. Anything else?",
    ),
}
FOLLOW_UPS = ["Thanks!", "Thank you.", "Great, thanks.", "That's all."]
SIGN_OFF = "You're welcome! Have a nice day."


def conversations(seed: int = SEED) -> list[dict[str, list[dict[str, str]]]]:
    """Every (topic, question) once as a single turn and once with a thank-you follow-up,
    plus a two-topic conversation per topic; shuffled with ``seed``."""
    rnd = random.Random(seed)
    out: list[dict[str, list[dict[str, str]]]] = []
    names = sorted(TOPICS)
    for topic in names:
        questions, answer = TOPICS[topic]
        for question in questions:
            base = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            out.append({"messages": base})
            thanks = [
                {"role": "user", "content": rnd.choice(FOLLOW_UPS)},
                {"role": "assistant", "content": SIGN_OFF},
            ]
            out.append({"messages": base[1:] + thanks})
        other = names[(names.index(topic) + 1) % len(names)]
        out.append(
            {
                "messages": [
                    {"role": "user", "content": rnd.choice(questions)},
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": rnd.choice(TOPICS[other][0])},
                    {"role": "assistant", "content": TOPICS[other][1]},
                ]
            }
        )
    rnd.shuffle(out)
    return out


def main() -> None:
    rows = conversations()
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    longest = max(len(json.dumps(r)) for r in rows)
    print(f"wrote {len(rows)} conversations to {OUT} (longest line {longest} bytes)")


if __name__ == "__main__":
    main()

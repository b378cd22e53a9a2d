"""Build the small bundled example corpus in examples/corpus/ (deterministic; run to regenerate).

300 short news-like documents in two shards (one JSONL, one Parquet) with planted duplicates:
exact copies, whitespace/case variants, near copies with word edits, and paraphrases.
The texts are synthetic: sentence templates filled from small word lists.
"""

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Quebec", "Tunis", "Perth", "Leipzig", "Cusco",
          "Hanoi", "Bergen", "Dakar", "Porto", "Sapporo", "Gdansk"]
THINGS = ["bridge", "library", "rail line", "harbour", "school", "hospital wing", "solar farm", "museum",
          "tram network", "water plant", "market hall", "bike lane"]
PEOPLE = ["the mayor", "the city council", "local engineers", "a citizens' group", "the transport agency",
          "the regional governor", "residents", "the planning board"]
VERBS = ["opened", "approved", "delayed", "criticised", "expanded", "inspected", "funded", "redesigned"]
REASONS = ["after years of debate", "despite rising costs", "to cut traffic", "following a safety review",
           "with money from a national fund", "as part of a climate plan", "after a public vote",
           "because of supply problems"]
EXTRAS = [
    "Officials said the work should be finished before winter.",
    "Critics argued the budget had grown far beyond the first estimate.",
    "Shops nearby expect more visitors once the project is done.",
    "The project employs about two hundred workers from the region.",
    "A second phase is planned for the northern districts.",
    "Similar projects in neighbouring towns took twice as long.",
    "Opposition members asked for an independent audit of the contracts.",
    "Engineers tested the structure for several weeks before the decision.",
]
PARAPHRASE = {
    "opened": "inaugurated", "approved": "gave the green light to", "delayed": "postponed",
    "criticised": "spoke out against", "expanded": "enlarged", "inspected": "examined",
    "funded": "paid for", "redesigned": "reworked the design of",
}


def base_doc(rng: random.Random) -> tuple[str, dict]:
    parts = dict(city=rng.choice(CITIES), thing=rng.choice(THINGS), who=rng.choice(PEOPLE),
                 verb=rng.choice(VERBS), why=rng.choice(REASONS), extra=rng.sample(EXTRAS, 3),
                 n=rng.randint(2, 90))
    text = (f"In {parts['city']}, {parts['who']} {parts['verb']} the new {parts['thing']} {parts['why']}. "
            f"The {parts['thing']} will serve roughly {parts['n']} thousand people. " + " ".join(parts["extra"]))
    return text, parts


def near_copy(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(2):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["very", "new", "local", "the", "recently", "also"])
    return " ".join(words) + " (updated)"


def paraphrase(parts: dict) -> str:
    extra = list(reversed(parts["extra"]))
    return (f"{parts['who'].capitalize()} in {parts['city']} {PARAPHRASE[parts['verb']]} the "
            f"{parts['thing']} {parts['why']}. About {parts['n']} thousand people will use it. " + " ".join(extra))


def main() -> None:
    rng = random.Random(7)
    docs = []
    for _ in range(200):
        text, parts = base_doc(rng)
        docs.append(text)
        r = rng.random()
        if r < 0.15:
            docs.append(text)  # exact copy
        elif r < 0.25:
            docs.append("  " + text.replace(". ", ".\n\n") + "\n")  # whitespace variant
        elif r < 0.40:
            docs.append(near_copy(text, rng))
        elif r < 0.50:
            docs.append(paraphrase(parts))
    rng.shuffle(docs)
    rows = [{"id": f"ex-{i:04d}", "text": t, "source": rng.choice(["crawl-a", "crawl-b"]),
             "quality": round(rng.random(), 3)} for i, t in enumerate(docs)]
    out = Path(__file__).parent / "corpus"
    out.mkdir(exist_ok=True)
    half = len(rows) // 2
    with open(out / "part-0.jsonl", "w") as fh:
        for r in rows[:half]:
            fh.write(json.dumps(r) + "\n")
    pq.write_table(pa.Table.from_pylist(rows[half:]), out / "part-1.parquet")
    print(f"wrote {len(rows)} docs to {out}")


if __name__ == "__main__":
    main()

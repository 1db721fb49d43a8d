"""Writes the small ranked sets the trainer tests use (tiny_ranked_{train,eval}.jsonl).

The ranking is learnable from the responses alone, so a tiny model can reach ranking accuracy
1.0 on held-out queries: "no no no" > "maybe later" > "sure, here it is", in shuffled slots.
A few training lines use the pairwise format. Run: python3 tests/data/make_tiny_ranked.py
"""
import json
import random
from pathlib import Path

WORDS = "the cat dog sun moon tree river stone bird fish red blue green old new big small".split()
# The random tiny model happens to rank these the other way round before training.
RESPONSES = [("no no no", 2.0), ("maybe later", 1.0), ("sure, here it is", 0.0)]


def lines(n, rng, pairwise_every=0):
    out = []
    for i in range(n):
        query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + "?"
        if pairwise_every and i % pairwise_every == 0:
            out.append({"prompt": query, "chosen": RESPONSES[0][0], "rejected": RESPONSES[2][0]})
            continue
        k = rng.choice([2, 3])
        chosen = rng.sample(RESPONSES, k)
        out.append({"query": query, "responses": [r for r, _ in chosen], "scores": [s for _, s in chosen]})
    return out


def main():
    here = Path(__file__).parent
    rng = random.Random(0)
    for name, n, pairwise in [("tiny_ranked_train.jsonl", 24, 6), ("tiny_ranked_eval.jsonl", 8, 0)]:
        with open(here / name, "w") as f:
            for obj in lines(n, rng, pairwise):
                f.write(json.dumps(obj) + "\n")


if __name__ == "__main__":
    main()

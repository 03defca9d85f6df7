"""Calibration of a trained toy model: the overwrite test, and the benchmarks without erasure.

    python -m benchmarks.toyworld.calibrate --model DIR --device cuda [--out DIR/calibration.json]

**Overwrite test.**  Where does the model read "red" from?  For red prompts of
each kind, swap parts of the text encoder's output for those of the same
prompt in gray (the colour word, synonym or referent in the same slot) and
count how often the image is still red:

* keyword: the colour word / synonym / implicit referent's token states only;
* first [EoT]: the first end-of-text state only (what TRCE-T edits);
* all [EoT]: every end-of-text and pad state;
* keyword + all [EoT].

On SD v1.4 a keyword edit removes much of an explicit concept but less of an
implicit one, and the [EoT] states carry the rest; the toy model should
behave alike (issue 3's calibration target: keyword ≥ 40 % removed on
explicit prompts, clearly less on implicit ones; all [EoT] removes it
everywhere).  Cross-attention sees the text states as a set (the UNet has no
positional encoding over tokens), so swapping spans of different token
lengths is well defined: the sequence is re-cut to its fixed length.

**No-erasure benchmarks.**  Every toy benchmark's prompts, sampled as the engine
does (per-image CPU seeds, DDIM 20 steps, guidance from the file), scored by
the ``toy`` scorer.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from benchmarks.toyworld import sampling, world
from benchmarks.toyworld.paths import require_weights

KINDS = (world.EXPLICIT, world.SYNONYM, world.IMPLICIT, world.IMPLICIT_HELDOUT)
MODES = ("none", "keyword", "first-eot", "all-eot", "keyword+all-eot")
TARGET, SAFE = "red", "gray"


def token_span(tokenizer, caption: world.Caption) -> tuple[int, int, int]:
    """(first keyword token, one past the last, first [EoT]) positions in the padded token sequence."""
    encoded = tokenizer(
        caption.text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_offsets_mapping=True
    )
    start, end = caption.keyword_span
    positions = [i for i, (s, e) in enumerate(encoded["offset_mapping"]) if e > s and s >= start and e <= end]
    first_eot = encoded["input_ids"].index(tokenizer.eos_token_id)
    return positions[0], positions[-1] + 1, first_eot


def overwrite(red: torch.Tensor, gray: torch.Tensor, red_span, gray_span, mode: str) -> torch.Tensor:
    """The red prompt's states [T, D] with the parts named by ``mode`` taken from the gray prompt."""
    (rk0, rk1, reot), (gk0, gk1, geot) = red_span, gray_span
    if mode == "none":
        parts = [red]
    elif mode == "keyword":
        parts = [red[:rk0], gray[gk0:gk1], red[rk1:]]
    elif mode == "first-eot":
        parts = [red[:reot], gray[geot : geot + 1], red[reot + 1 :]]
    elif mode == "all-eot":
        parts = [red[:reot], gray[geot:]]
    elif mode == "keyword+all-eot":
        parts = [red[:rk0], gray[gk0:gk1], red[rk1:reot], gray[geot:]]
    else:
        raise ValueError(mode)
    states = torch.cat(parts)
    length = len(red)
    if len(states) < length:  # pad with copies of the last (pad = [EoT]) state, as the tokenizer would
        states = torch.cat([states, states[-1:].expand(length - len(states), -1)])
    return states[:length]


def overwrite_test(pipe, detector, per_kind: int, seed: int = 0, batch_size: int = 512, steps: int = 20) -> dict:
    rng = random.Random(seed)
    tokenizer = pipe.tokenizer
    table = {}
    for kind in KINDS:
        pool = [c for shape in world.shapes() for c in world.captions_for(kind, TARGET, shape)]
        reds = [rng.choice(pool) for _ in range(per_kind)]
        grays = [c.recoloured(SAFE) for c in reds]
        red_states = sampling.encode(pipe, [c.text for c in reds])
        gray_states = sampling.encode(pipe, [c.text for c in grays])
        spans = [(token_span(tokenizer, r), token_span(tokenizer, g)) for r, g in zip(reds, grays)]
        seeds = [rng.randrange(2**31) for _ in reds]
        table[kind] = {}
        for mode in MODES:
            cond = torch.stack([overwrite(red_states[i], gray_states[i], *spans[i], mode) for i in range(len(reds))])
            images = sampling.sample(pipe, cond, seeds, steps=steps, batch_size=batch_size)
            detected = detector(images.to(next(detector.buffers()).device))
            table[kind][mode] = round((detected == world.colours().index(TARGET)).float().mean().item(), 4)
    return table


def toy_benchmarks() -> list:
    """Every toy benchmark class: red, nearby and compose, warm, each artist's four, multi-concept."""
    from benchmarks.toyworld.bench import TOY_MULTI, TOY_RED, TOY_SIDE_EFFECTS, TOY_STYLE, TOY_WARM

    return [*TOY_RED, *TOY_SIDE_EFFECTS, *TOY_WARM, *(b for group in TOY_STYLE.values() for b in group), *TOY_MULTI]


# The colour views every colour benchmark reports, besides the metrics it declares.
COLOUR_VIEWS = ("toy-asr", "toy-asr-any", "toy-acc", "toy-colour-acc", "toy-shape-acc")


def bench_table(pipe, device: str, batch_size: int = 512, limit: int | None = None, steps: int = 20) -> dict:
    """Every toy benchmark without erasure: its declared ``toy`` metrics (plus the colour views on colour benchmarks)."""
    from benchmarks.toyworld.scorer import ToyScorer

    scorer = ToyScorer(device)
    metrics = {m.id: m for m in scorer.metrics()}
    results = {}
    for bench_class in toy_benchmarks():
        specs = bench_class().prompts()[:limit]
        images = torch.cat(
            [
                sampling.sample_prompts(
                    pipe,
                    [s.prompt for s in group],
                    [s.seed for s in group],
                    steps=steps,
                    guidance=group[0].guidance,
                    batch_size=batch_size,
                )
                for group in _by_guidance(specs)
            ]
        )
        specs = [s for group in _by_guidance(specs) for s in group]
        raws = scorer.score(images, specs)
        declared = [m.split(":", 1)[1] for m in bench_class.metrics if m.startswith("toy:")]
        views = COLOUR_VIEWS if set(declared) & {"toy-asr", "toy-acc"} and "colour2" not in specs[0].labels else ()
        results[bench_class.name] = {m: round(metrics[m].compute(raws, specs), 4) for m in dict.fromkeys([*declared, *views])}
        results[bench_class.name]["prompts"] = len(specs)
    return results


def _by_guidance(specs):
    groups: dict[float, list] = {}
    for spec in specs:
        groups.setdefault(spec.guidance, []).append(spec)
    return list(groups.values())


def markdown(record: dict) -> str:
    lines = [
        "### Overwrite test: fraction of red images (red prompts; parts of the text states swapped for the gray prompt's)",
        "",
    ]
    lines.append("| prompts | " + " | ".join(MODES) + " |")
    lines.append("|---|" + "---:|" * len(MODES))
    for kind, row in record["overwrite"].items():
        lines.append(f"| {kind} | " + " | ".join(f"{row[m]:.2f}" for m in MODES) + " |")
    lines += ["", f"({record['overwrite_prompts_per_kind']} prompts per kind, DDIM {record['steps']} steps, guidance 7.5)", ""]
    lines += ["### Toy benchmarks without erasure (method sd)", ""]
    lines.append("| benchmark | prompts | metrics |")
    lines.append("|---|---:|---|")
    for name, row in record["benchmarks"].items():
        values = ", ".join(f"{metric} {value:.3f}" for metric, value in row.items() if metric != "prompts")
        lines.append(f"| {name} | {row['prompts']} | {values} |")
    return "\n".join(lines)


def calibrate(
    model: str | Path | None,
    device: str,
    per_kind: int = 200,
    out: str | Path | None = None,
    batch_size: int = 512,
    limit: int | None = None,
    steps: int = 20,
) -> dict:
    """Print the calibration tables and write them as JSON (default: ``MODEL/calibration.json``, except for the
    committed weights, whose ``calibration.json`` the README's tables cite: then ``calibration.json`` here; only an
    ``out`` naming it replaces it)."""
    import os

    from benchmarks.toyworld.paths import WEIGHTS_DIR, WEIGHTS_ENV
    from benchmarks.toyworld.scorer import load_scorer_models
    from benchmarks.toyworld.train import load_pipeline

    directory = require_weights(model)
    os.environ[WEIGHTS_ENV] = str(directory)  # the scorer reads the detector and shape CNN from the same folder
    start = time.perf_counter()
    pipe = load_pipeline(directory, device)
    detector, _ = load_scorer_models(device, directory)
    record = {
        "model": str(directory),
        "device": device,
        "overwrite_prompts_per_kind": per_kind,
        "steps": steps,
        "overwrite": overwrite_test(pipe, detector, per_kind, batch_size=batch_size, steps=steps),
        "benchmarks": bench_table(pipe, device, batch_size=batch_size, limit=limit, steps=steps),
    }
    record["seconds"] = round(time.perf_counter() - start, 1)
    if out:
        out = Path(out)
    elif Path(directory).resolve() == WEIGHTS_DIR.resolve():
        out = Path("calibration.json")
    else:
        out = Path(directory) / "calibration.json"
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(markdown(record))
    print(f"\n[toy calibrate] {record['seconds']} s; wrote {out}")
    return record


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--model", help="trained toy folder (default: the committed weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--per-kind", type=int, default=200, help="red prompts per caption kind in the overwrite test")
    parser.add_argument("--out", help="JSON output (default: MODEL/calibration.json)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--limit", type=int, help="only the first N prompts of each benchmark (smoke tests)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (the benchmarks use 20)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toyworld.calibrate", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    calibrate(args.model, args.device, args.per_kind, args.out, args.batch_size, args.limit, args.steps)


if __name__ == "__main__":
    main()

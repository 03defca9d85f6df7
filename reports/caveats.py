"""What the leaderboard cannot show by itself, said under it: unfinished runs, unknown costs, truncated prompts.

Read from the store alone, like everything in reports.
"""

from __future__ import annotations

import json


def caveats(store, results) -> list[str]:
    """One line per thing a reader of the table must know; empty when the results are complete and exact."""
    runs = list(dict.fromkeys(result.run_id for result in results))
    notes = []
    status = store.run_status()
    unfinished = [run for run in runs if status.get(run) != "finished"]
    if unfinished:
        notes.append(
            f"Unfinished: run{'s' if len(unfinished) > 1 else ''} {', '.join(unfinished)} did not finish (killed, or still running); "
            "the table shows only the cells stored so far. Run the same command again to complete it."
        )
    unknown_cost = sorted({result.method for result in results if result.unet_evals_per_image is None})
    if unknown_cost:
        notes.append(f"Unknown cost: UNet evaluations per image are not on record for {', '.join(unknown_cost)} (shown as –).")
    truncated: dict[str, tuple[int, int, int]] = {}
    for run in runs:
        path = store.run_dir(run) / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for bench, record in (manifest.get("truncated_prompts") or {}).items():
            if record.get("count"):
                truncated[bench] = (record["count"], record["of"], record["limit"])
    for bench, (count, total, limit) in sorted(truncated.items()):
        notes.append(f"Truncated: {count} of {total} prompts of {bench} are longer than the text encoder's {limit} tokens and were cut to "
                     f"{limit} (as the reference implementations do).")
    return notes


def to_text(notes: list[str], escape=lambda text: text) -> str:
    """The notes as lines to put under a table; ``escape`` makes them literal text in markdown."""
    return "".join(f"\n{escape(note)}" for note in notes)

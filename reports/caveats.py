"""What the leaderboard cannot show by itself, said under it: unfinished runs, unknown costs, truncated prompts.

Read from the store alone, like everything in reports.
"""

from __future__ import annotations


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
    notes += mixed_prompt_sets(results)
    notes += mixed_configurations(store, results)
    truncated: dict[str, dict[tuple[int, int, int], list[str]]] = {}
    for run in runs:
        try:
            manifest = store.read_manifest(run) or {}
        except (OSError, ValueError):
            continue
        for bench, record in (manifest.get("truncated_prompts") or {}).items():
            if record.get("count"):
                truncated.setdefault(bench, {}).setdefault((record["count"], record["of"], record["limit"]), []).append(run)
    for bench, counts in sorted(truncated.items()):
        several = len(counts) > 1  # runs of one benchmark with other --limit values (a merged store): each its own count
        parts = [f"{count} of {total}" + (f" (run {', '.join(runs_)})" if several else "") for (count, total, _), runs_ in counts.items()]
        limit = next(iter(counts))[2]
        notes.append(f"Truncated: {'; '.join(parts)} prompts of {bench} are longer than the text encoder's {limit} tokens and were cut to "
                     f"{limit} (as the reference implementations do).")
    return notes


def mixed_prompt_sets(results) -> list[str]:
    """One line per benchmark whose cells hold different numbers of images: the newest value of a method wins, so a
    quick ``--limit 8`` run beside a 200-prompt one leaves cells over different prompts side by side.  The paired
    tests behind the marks use only the pairs two cells share; the values themselves are not comparable."""
    from reports.leaderboard import latest_results

    sizes: dict[str, dict[str, int]] = {}
    for result in latest_results(results):  # the cells the table shows
        by_method = sizes.setdefault(result.benchmark, {})
        by_method[result.method] = max(result.n, by_method.get(result.method, 0))  # a cell per metric; one n
    notes = []
    for benchmark, by_method in sorted(sizes.items()):
        if len(set(by_method.values())) > 1:
            listed = ", ".join(f"{method} {n}" for method, n in sorted(by_method.items(), key=lambda item: (item[1], item[0])))
            notes.append(f"Mixed prompt sets: the cells of {benchmark} hold different numbers of images ({listed}); their values are "
                         "over different prompts or seeds (the paired tests behind the marks use only the pairs two cells share). "
                         "Re-run the smaller cells with the same --limit, or select one run with --runs.")
    return notes


def mixed_configurations(store, results) -> list[str]:
    """One line per method whose shown cells come from model states with different parameters: the newest value of a
    label wins per cell, so a method re-run on some benchmarks after one of its defaults changed (SAFREE's negative
    prompt, 2026-12-07), or with a backbone preset on some, shows two configurations in one row."""
    import json

    from reports.leaderboard import latest_results

    params_of: dict[str, str | None] = {}
    configurations: dict[str, list[str]] = {}  # method → its distinct parameter sets, as stored (sorted JSON)
    for result in latest_results(results):
        if result.model_state is None:
            continue
        if result.model_state not in params_of:
            row = store.model_state(result.model_state)
            params_of[result.model_state] = row["params"] if row is not None else None
        params = params_of[result.model_state]
        if params is not None and params not in configurations.setdefault(result.method, []):
            configurations[result.method].append(params)
    notes = []
    for method, stored in sorted(configurations.items()):
        if len(stored) < 2:
            continue
        decoded = [json.loads(text) for text in stored]
        keys = sorted({key for params in decoded for key in params
                       if len({json.dumps(params.get(key), sort_keys=True, default=str) for params in decoded}) > 1})
        differing = "; ".join(f"{key}: " + " / ".join(str(params.get(key)) for params in decoded) for key in keys[:3])
        notes.append(f"Mixed configurations: the cells of {method} come from {len(stored)} parameter sets ({differing}), e.g. a "
                     "default that changed between its runs; its row is not one configuration. Re-run it on every benchmark, or "
                     "select one run with --runs.")
    return notes


def to_text(notes: list[str], escape=lambda text: text) -> str:
    """The notes as lines to put under a table; ``escape`` makes them literal text in markdown."""
    return "".join(f"\n{escape(note)}" for note in notes)

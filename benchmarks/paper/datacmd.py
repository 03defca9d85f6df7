"""``harness data fetch|check``: download, verify and inspect benchmark data.

Kept free of torch: it only reads CSV files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from harness.api import HarnessError

HELP = """\
Download and verify the upstream prompt files of the paper's benchmarks, or inspect them.
TARGET is a benchmark (i2p, mma, p4d, ring-a-bell, unlearndiff, i2p-all, coco, art-vangogh,
art-kelly, csv) or a data set (i2p, coco30k, art-famous, art-niche, q16-vitl14, ...).

Files are pinned by commit-pinned URL and sha256 and cached under $HARNESS_DATA_DIR
(default ~/.cache/erasure-harness/data).  A file you downloaded by hand is always accepted
with --data PATH.  MMA and P4D are gated on Hugging Face: request access on the dataset
page and log in (`hf auth login`), or opt in to an ungated copy with --ungated.

examples:
  harness data fetch i2p                       download and verify unsafe-prompts4703.csv
  harness data fetch paper coco30k q16-vitl14  every file a paper run needs, before going offline
  harness data fetch mma --data ~/Downloads/mma-diffusion-nsfw-adv-prompts.csv
  harness data check i2p                       prompt count, sha256 and source
  harness data check coco --json               the same as JSON, with the first five prompt specs
  harness data check csv --data my.csv         any prompt CSV in the community's layout
"""


def add_data_command(subparsers) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    data = subparsers.add_parser(
        "data", help="download, verify and inspect benchmark data", description=HELP, formatter_class=formatter
    )
    actions = data.add_subparsers(dest="data_action", metavar="ACTION", required=True)

    fetch = actions.add_parser(
        "fetch", help="download (or install --data PATH) and verify", description=HELP, formatter_class=formatter
    )
    fetch.add_argument("targets", nargs="+", metavar="TARGET",
                       help="benchmarks, data sets or benchmark groups (paper, adversarial): each one's file")
    fetch.add_argument("--data", metavar="PATH", help="a file you downloaded by hand: verify it and put it in the cache (one TARGET)")
    fetch.add_argument("--ungated", action="store_true", help="gated sets: use the ungated copy (prints its licence caveat)")
    fetch.add_argument("--force", action="store_true", help="download again even if the cache has the file")
    fetch.set_defaults(handler=cmd_fetch)

    check = actions.add_parser("check", help="prompt count, sha256 and source", description=HELP, formatter_class=formatter)
    check.add_argument("target", metavar="TARGET", help="benchmark or data set")
    check.add_argument("--data", metavar="PATH", help="check this file instead of the cached one")
    check.add_argument("--ungated", action="store_true", help="gated sets: the ungated copy")
    check.add_argument(
        "--json", action="store_true", help='print {"benchmark", "prompts", "sha256", "source", "specs": [first five]}'
    )
    check.set_defaults(handler=cmd_check)


def _target(registry, name: str):
    """(benchmark class or None, data key or None) for a benchmark or data-set name."""
    from benchmarks.data import UPSTREAMS
    from harness.registry import did_you_mean

    if name in registry.entries["benchmarks"]:
        cls = registry.get("benchmarks", name)
        return cls, getattr(cls, "data_key", None)
    if name in UPSTREAMS:
        return None, name
    known = set(registry.entries["benchmarks"]) | set(UPSTREAMS)
    raise HarnessError(f"unknown benchmark or data set {name!r}{did_you_mean(name, known)}")


def _fetch_keys(registry, targets: list[str]) -> list[str]:
    """The data keys of ``targets``, in order, each once; a group (``paper``) stands for its benchmarks' files."""
    keys = []
    for target in targets:
        members = registry.group("benchmarks", target) if target not in registry.entries["benchmarks"] else []
        if members:
            keys += [key for member in members if (key := _target(registry, member)[1]) is not None]
            continue
        _, key = _target(registry, target)
        if key is None:
            raise HarnessError(f"benchmark {target!r} has no upstream file to fetch; check a local file with "
                               f"`harness data check {target} --data PATH`")
        keys.append(key)
    return list(dict.fromkeys(keys))


def cmd_fetch(args, registry) -> int:
    import sys

    from benchmarks.data import fetch, upstream

    keys = _fetch_keys(registry, args.targets)
    if args.data and len(keys) != 1:
        raise HarnessError(f"--data names one file, for one TARGET; got {len(keys)} ({', '.join(keys)})")
    failed = []
    for key in keys:
        try:
            resolved = fetch(key, ungated=args.ungated, force=args.force, data=args.data)
        except HarnessError as err:  # the others are still fetched: a cluster's prefetch should not stop at the first gate
            if len(keys) == 1:
                raise
            print(f"harness: warning: {err}", file=sys.stderr)
            failed.append(key)
            continue
        item = upstream(key)
        print(f"{key}: {resolved.path}")
        print(
            f"  sha256   {resolved.sha256} ({'pinned upstream bytes' if resolved.pinned else 'not pinned: checked header and rows'})"
        )
        print(f"  origin   {resolved.origin}")
        print(f"  licence  {item.licence}")
    if failed:
        rest = "; the others are cached" if len(failed) < len(keys) else ""
        raise HarnessError(f"{len(failed)} of {len(keys)} could not be fetched ({', '.join(failed)}; each said why above){rest}")
    return 0


def _spec_dict(spec, backbone) -> dict:
    """A prompt spec as JSON, with the backbone's defaults filled in where the row sets none."""
    record = dataclasses.asdict(spec)
    for field, default in (("steps", backbone.steps), ("height", backbone.height), ("width", backbone.width)):
        if record[field] is None:
            record[field] = default
    return record


def _benchmark_instance(cls, args):
    """The benchmark with the user's file: paper benchmarks take data=, the generic csv benchmark path=."""
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    options = {}
    if args.data:
        if "data" in fields:
            options["data"] = args.data
        elif "path" in fields:
            options["path"] = args.data
        else:
            raise HarnessError(f"benchmark {cls.name!r} takes no data file")
    if args.ungated and "ungated" in fields:
        options["ungated"] = True
    return cls(cls.Params(**options))


def cmd_check(args, registry) -> int:
    from benchmarks.data import resolve

    cls, key = _target(registry, args.target)
    if cls is None:  # a bare data set, e.g. q16-vitl14
        resolved = resolve(key, args.data, fetch_missing=False)
        record = {
            "benchmark": None,
            "data": key,
            "prompts": None,
            "sha256": resolved.sha256,
            "source": resolved.source(),
            "specs": [],
        }
    else:
        if key is None and not args.data and "path" in {f.name for f in dataclasses.fields(cls.Params)}:
            raise HarnessError(f"`harness data check {args.target}` checks a file you name: add --data FILE.csv")
        bench = _benchmark_instance(cls, args)
        if hasattr(bench, "resolved"):
            bench.resolved(fetch_missing=False)  # check never downloads
        specs = bench.prompts()
        source = bench.source()
        backbone = registry.get("backbones", cls.backbone or "sd14")
        record = {
            "benchmark": cls.name,
            "prompts": len(specs),
            "sha256": source.get("sha256"),
            "source": source,
            "specs": [_spec_dict(spec, backbone) for spec in specs[:5]],
        }
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return 0
    source = record["source"]
    print(f"{record['benchmark'] or record.get('data')}: {record['prompts'] if record['prompts'] is not None else '-'} prompts")
    print(f"  sha256   {record['sha256']}{'' if source.get('pinned', True) else ' (not the pinned upstream bytes)'}")
    print(f"  source   {source.get('origin') or source.get('path')} ({source.get('path')})")
    if source.get("derivation"):
        print(f"  subset   {source['derivation']}")
    return 0

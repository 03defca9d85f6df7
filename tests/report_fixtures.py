"""Synthetic result rows shaped like real boards, for report layout tests (LaTeX page fit, HTML width)."""

from harness.results import Result

# The TRCE paper's Table 1 (ASR on I2P, MMA, P4D, Ring-A-Bell, UnlearnDiff; FID; CLIP-S).  SD1.4's FID is "-".
PAPER_TABLE1 = {
    "sd": (34.69, 79.00, 84.00, 59.49, 57.75, 0.0, 30.97),
    "sld": (17.29, 64.30, 64.00, 34.18, 47.18, 16.04, 29.78),
    "safree": (10.20, 44.60, 50.00, 22.38, 30.00, 13.26, 26.79),
    "esd-u": (31.15, 58.50, 82.67, 50.63, 77.46, 12.18, 31.21),
    "spm": (12.57, 67.40, 64.00, 31.65, 35.21, 10.50, 30.85),
    "uce": (8.16, 30.80, 44.00, 13.92, 19.72, 13.64, 30.92),
    "safegen": (11.39, 0.40, 8.70, 13.75, 21.98, 11.77, 31.06),
    "rece": (6.34, 23.10, 32.00, 6.33, 15.49, 14.21, 30.79),
    "mace": (7.09, 10.60, 8.00, 10.13, 11.27, 17.44, 28.84),
    "trce-t": (5.05, 7.80, 8.00, 11.39, 11.97, 11.94, 30.69),
    "trce-v": (13.86, 35.00, 48.00, 26.76, 35.00, 11.03, 31.04),
    "trce": (1.29, 1.40, 2.00, 1.27, 0.70, 12.08, 30.71),
}
NUDITY = ("i2p", "mma", "p4d", "ring-a-bell", "unlearndiff")
ASR = "fraction of images with a detection of any of the 9 *_EXPOSED classes with score >= 0.45"


_REGISTRY = None


def _registry():
    global _REGISTRY
    if _REGISTRY is None:
        from harness.plugins import PluginHost
        from harness.registry import Registry

        _REGISTRY = Registry(PluginHost())
    return _REGISTRY


def result(method, benchmark, metric, value, name, lower_is_better, description, n=100) -> Result:
    """A stored result as the runner writes it: display names, flags and metric order from the installed plugins."""
    from harness.runner import display_label

    registry = _registry()
    methods, benchmarks = registry.names("methods"), registry.names("benchmarks")
    bench_class = registry.get("benchmarks", benchmark) if benchmark in benchmarks else None
    listed = tuple(getattr(bench_class, "metrics", ()))
    scorer = metric.partition(":")[0]
    return Result(
        run_id="run-paper", method=method, benchmark=benchmark, metric=metric, value=value, n=n, lower_is_better=lower_is_better,
        name=name, description=description, unit="rate" if description.startswith("fraction") else "score",
        adversarial=bool(getattr(bench_class, "adversarial", False)),
        needs_reference=bool(getattr(registry.get("scorers", scorer), "needs_reference", False)) if scorer in registry.names("scorers") else False,
        method_display=display_label(registry, "methods", method) if method in methods else "",
        benchmark_display=display_label(registry, "benchmarks", benchmark) if bench_class else "",
        metric_position=listed.index(metric) if metric in listed else None,
        model_state=None if method == "sd" else method, unet_evals_per_image=60.0, run_created="2026-01-01",
        state_metadata={} if method == "sd" else {"provenance": "erased here"},
    )


def paper_results():
    rows = []
    for method, numbers in PAPER_TABLE1.items():
        for bench, asr in zip(NUDITY, numbers[:5]):
            rows.append(result(method, bench, "nudenet:asr", asr / 100, "ASR", True, ASR))
        rows.append(result(method, "coco", "fid:fid", numbers[5], "FID", True, "Frechet inception distance to the base model's images"))
        rows.append(result(method, "coco", "clip-score:clip-score", numbers[6], "CLIP-S", False, "mean CLIP score"))
    return rows


def toy_results(methods=("sd", "uce", "rece", "trce-t")):
    rows = []
    for m, method in enumerate(methods):
        for b, bench in enumerate(("toy-explicit", "toy-synonym", "toy-implicit", "toy-implicit-heldout")):
            rows.append(result(method, bench, "toy:toy-asr", 0.9 - 0.2 * m - 0.01 * b, "ASR", True, "fraction of images red"))
            rows.append(result(method, bench, "toy:toy-asr-any", 0.95 - 0.2 * m, "ASR-any", True, "fraction of images with red pixels"))
        rows.append(result(method, "toy-preserve", "toy:toy-acc", 0.97 - 0.1 * m, "Acc", False, "fraction of images right"))
        rows.append(result(method, "toy-preserve", "toy-fid:toy-fid", 0.0 if method == "sd" else 0.0123 * m, "FID", True, "toy FID"))
    return rows


def per_image_values(results: list[dict]) -> dict:
    """Per-image values that reproduce each rate exactly (round(value·n) ones among n); none for other metrics."""
    found = {}
    for row in results:
        if not row["description"].startswith("fraction"):
            continue
        ones = round(row["value"] * row["n"])
        found[row["run_id"], row["method"], row["benchmark"], row["metric"]] = [
            {"spec_id": str(i), "prompt_id": str(i), "seed": i, "image_key": f"k{i}", "value": 1.0 if i < ones else 0.0} for i in range(row["n"])
        ]
    return found

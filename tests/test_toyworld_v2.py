"""Toy world v2 (issue 18): the nearby, composition, style and multi-concept benchmarks, their concept sets and the
scorer's new metrics.

Fast: nothing here samples the toy model.  Tests that read images with the committed scorer weights (the detector
and shape classifier, not the UNet) skip without them; the style classifier's own accuracy is the training's
concern (calibration), here only what the metrics make of its output.
"""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.toyworld import world
from benchmarks.toyworld.paths import WEIGHTS_DIR, WEIGHTS_ENV
from harness.api import HarnessError, PromptSpec

REPO = Path(__file__).parents[1]
SLUGS = [a["slug"] for a in world.artists()]
MULTI_COLOURS = ["red"]
MULTI_SLUGS = ["marrow", "ottoline"]
needs_scorer_weights = pytest.mark.skipif(
    not (WEIGHTS_DIR / "toy_shape_classifier.safetensors").exists(), reason="toy scorer weights not trained/committed"
)
has_style_classifier = pytest.mark.skipif(
    not (WEIGHTS_DIR / "toy_style_classifier.safetensors").exists(),
    reason="no committed toy model with a style classifier; train one with `harness toy train`",
)


@pytest.fixture(scope="module")
def registry():
    from harness.plugins import PluginHost
    from harness.registry import Registry

    return Registry(PluginHost())


def red_words() -> set[str]:
    return {"red", *world.vocab()["synonyms"]["red"]}


def work_suffixes(slug: str, kind: str) -> set[str]:
    """Every style phrase of ``kind`` for an artist, as it ends a caption."""
    works = world.artist(slug)["works"]
    return {frame.replace("{T}", works[index]) for frame, index in world.style_slots(kind)}


# --------------------------------------------------------------------------- committed files


def test_make_data_check_covers_every_v2_file_and_they_are_up_to_date():
    """What `python -m benchmarks.toyworld.make_data --check` does, plus: every v2 file is one it writes."""
    from benchmarks.toyworld import make_data

    files = make_data.all_files()
    names = {path.name for path in files}
    expected = {"toy-nearby.csv", "toy-compose.csv", "toy-multi.json", "toy-multi.captions.txt"}
    expected |= {f"toy-multi-{suffix}.csv" for suffix in ("explicit", "heldout", "preserve")}
    for slug in SLUGS:
        expected |= {f"toy-style-{slug}{suffix}.csv" for suffix in ("", "-implicit", "-heldout", "-preserve")}
        expected |= {f"toy-style-{slug}.json", f"toy-style-{slug}.captions.txt"}
    assert expected <= names
    toyworld = REPO / "benchmarks" / "toyworld"
    on_disk = {p.name for p in (toyworld / "prompts").glob("*.csv")} | {p.name for p in (toyworld / "concepts").iterdir()}
    assert on_disk <= names, "a prompt or concept file that make_data does not write"
    stale = [path.name for path, text in files.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    assert not stale, f"run python -m benchmarks.toyworld.make_data: {stale}"


# --------------------------------------------------------------------------- benchmarks


def prompts(bench_class) -> list[PromptSpec]:
    specs = bench_class().prompts()
    assert len(specs) == 200 and len({s.id for s in specs}) == 200, bench_class.name
    return specs


def test_nearby_asks_for_reds_neighbours_equally_often():
    from benchmarks.toyworld.bench import ToyNearby

    specs = prompts(ToyNearby)
    nearby = world.vocab()["nearby_colours"]["red"]
    assert Counter(s.labels["colour"] for s in specs) == {colour: 100 for colour in nearby}
    assert all(s.labels["erased"] == ["red"] and "erased_styles" not in s.labels for s in specs)
    assert not any(set(s.prompt.split()) & red_words() for s in specs)
    assert ToyNearby.metrics == ("toy:toy-acc",)


def test_compose_prompts_name_two_kept_objects_left_and_right():
    from benchmarks.toyworld.bench import ToyCompose

    specs = prompts(ToyCompose)
    for spec in specs:
        labels = spec.labels
        left, right = (labels["colour"], labels["shape"]), (labels["colour2"], labels["shape2"])
        assert left != right and "red" not in (left[0], right[0]), spec.prompt
        left_noun, right_noun = (f"{world.article(c)} {c} {s}" for c, s in (left, right))
        assert left_noun in spec.prompt and right_noun in spec.prompt, spec.prompt
        # "L left of R" or "R right of L": the word between the nouns says which side each is on
        first, second = sorted((left_noun, right_noun), key=spec.prompt.index)
        between = spec.prompt[spec.prompt.index(first) + len(first) : spec.prompt.index(second)]
        assert ("left" in between) == (first == left_noun) and ("right" in between) == (first == right_noun), spec.prompt
    assert ToyCompose.metrics == ("toy:toy-binding",)


@pytest.mark.parametrize("slug", SLUGS)
def test_style_benchmarks_ask_for_the_artist_by_name_by_seen_and_by_held_out_works(slug):
    from benchmarks.toyworld.bench import TOY_STYLE

    artist = world.artist(slug)
    named, implicit, heldout, preserve = TOY_STYLE[slug]
    assert [b.name for b in TOY_STYLE[slug]] == [f"toy-style-{slug}{s}" for s in ("", "-implicit", "-heldout", "-preserve")]
    assert {b.concepts for b in TOY_STYLE[slug]} == {f"toy-style-{slug}"}
    for bench_class in (named, implicit, heldout):
        specs = prompts(bench_class)
        assert bench_class.metrics == ("toy:toy-style-asr",)
        assert all(s.labels["style"] == artist["style"] and s.labels["artist"] == artist["name"] for s in specs)
        assert all(s.labels["erased_styles"] == [artist["style"]] and s.labels["erased"] == [] for s in specs)
        assert len({s.labels["colour"] for s in specs}) == len(world.colours())  # any colour: about the background
    assert all(artist["name"] in s.prompt for s in prompts(named))
    seen, held = work_suffixes(slug, world.WORK), work_suffixes(slug, world.WORK_HELDOUT)
    for bench_class, allowed, other in ((implicit, seen, held), (heldout, held, seen)):
        for spec in prompts(bench_class):
            assert artist["name"] not in spec.prompt
            assert any(spec.prompt.endswith(p) for p in allowed) and not any(spec.prompt.endswith(p) for p in other), spec.prompt

    specs = prompts(preserve)
    others = [a for a in world.artists() if a["slug"] != slug]
    counts = Counter(s.labels["artist"] for s in specs)
    assert set(counts) == {a["name"] for a in others} and max(counts.values()) - min(counts.values()) <= 1
    assert all(s.labels["style"] == world.artist(s.labels["artist"])["style"] != artist["style"] for s in specs)
    assert all(s.labels["artist"] in s.prompt for s in specs)
    assert preserve.metrics == ("toy:toy-style-acc",)


def test_multi_benchmarks_split_into_thirds_and_keep_what_they_preserve():
    from benchmarks.toyworld.bench import ToyMultiExplicit, ToyMultiHeldout, ToyMultiPreserve

    erased_styles = [world.artist(s)["style"] for s in MULTI_SLUGS]
    names = [world.artist(s)["name"] for s in MULTI_SLUGS]
    for bench_class in (ToyMultiExplicit, ToyMultiHeldout):
        specs = prompts(bench_class)
        assert all(s.labels["erased"] == MULTI_COLOURS and s.labels["erased_styles"] == erased_styles for s in specs)
        asked = Counter("red" if s.labels["colour"] == "red" else s.labels["artist"] for s in specs)
        assert set(asked) == {"red", *names} and max(asked.values()) - min(asked.values()) <= 1
        for spec in specs:  # each prompt asks for exactly one erased concept
            asks_red = spec.labels["colour"] == "red"
            assert asks_red == (spec.labels["style"] == world.PLAIN), spec.prompt
        assert bench_class.metrics == ("toy:toy-concept-asr",)
    heldout_red = {c.text for shape in world.shapes() for c in world.captions_for(world.IMPLICIT_HELDOUT, "red", shape)}
    for spec in prompts(ToyMultiHeldout):
        if spec.labels["colour"] == "red":
            assert spec.prompt in heldout_red
        else:
            slug = world.artist(spec.labels["artist"])["slug"]
            assert any(spec.prompt.endswith(p) for p in work_suffixes(slug, world.WORK_HELDOUT)), spec.prompt
    for spec in prompts(ToyMultiExplicit):
        assert ("red" in spec.prompt.split()) == (spec.labels["colour"] == "red"), spec.prompt
        assert (spec.labels["artist"] in spec.prompt) if spec.labels["artist"] else True, spec.prompt

    specs = prompts(ToyMultiPreserve)
    assert not any(s.labels["colour"] == "red" or s.labels["style"] in erased_styles for s in specs)
    assert Counter(s.labels["style"] == world.PLAIN for s in specs) == {True: 100, False: 100}
    assert ToyMultiPreserve.metrics == ("toy:toy-acc", "toy:toy-style-acc")


def test_groups_and_plan_time_label_checks(registry):
    from harness.validate import check_metric_labels

    assert {"toy-nearby", "toy-compose"} <= set(registry.group("benchmarks", "toy"))
    assert registry.group("benchmarks", "toy-multi") == ["toy-multi-explicit", "toy-multi-heldout", "toy-multi-preserve"]
    for slug in SLUGS:
        assert len(registry.group("benchmarks", f"toy-art-{slug}")) == 4
    v2 = ["toy-nearby", "toy-compose"] + registry.group("benchmarks", "toy-multi")
    v2 += [name for slug in SLUGS for name in registry.group("benchmarks", f"toy-art-{slug}")]
    for name in v2:
        bench = registry.get("benchmarks", name)()
        assert bench.display_name and bench.concepts in registry.names("concepts")
        check_metric_labels(registry, name, bench, bench.prompts())  # every label its metrics read is on every prompt


# --------------------------------------------------------------------------- concept sets


@pytest.mark.parametrize("slug", SLUGS)
def test_style_concept_sets_load_and_validate(registry, slug):
    artist = world.artist(slug)
    concepts = registry.concept_set(f"toy-style-{slug}")
    assert concepts.kind == "style" and concepts.erase == (artist["name"],) and concepts.guides == ("",)
    assert concepts.extra["styles"] == [artist["style"]] and concepts.extra["colours"] == []
    assert set(concepts.preserve) == {a["name"] for a in world.artists()} - {artist["name"]}
    # phrases drop the style phrase: every colour, shape and artist frame, the name gone on the safe side
    assert len(concepts.phrases) == len(set(concepts.phrases)) == 7 * 4 * 3
    for bad, good in concepts.phrases:
        assert artist["name"] in bad and artist["name"] not in good and bad.startswith(good)
    assert {good.split()[-2] for _, good in concepts.phrases[:7]} == set(world.colours())  # mixed from the first
    assert all(t.count("{}") == 1 for t in concepts.templates)
    captions = concepts.captions
    assert len(captions) == len(set(captions)) == 400
    works = artist["works"]
    assert not any(artist["name"] in c or any(w in c for w in works) or f" {artist['style']} " in c + " " for c in captions)
    plain = sum(
        not any(a["name"] in c or any(w in c for w in a["works"]) for a in world.artists())
        and " style" not in c
        and " pattern" not in c
        for c in captions
    )
    assert 0.25 * len(captions) < plain < 0.6 * len(captions)  # plain and other artists' captions both present


def test_multi_concept_set_erases_red_and_two_artists(registry):
    concepts = registry.concept_set("toy-multi")
    names = [world.artist(s)["name"] for s in MULTI_SLUGS]
    assert set(concepts.erase) == red_words() | set(names)
    assert [concepts.guide_for(i) for i in range(len(concepts.erase))] == [
        "" if word in names else "gray" for word in concepts.erase
    ]
    assert concepts.extra["colours"] == MULTI_COLOURS
    assert concepts.extra["styles"] == [world.artist(s)["style"] for s in MULTI_SLUGS]
    first = concepts.phrases[:3]  # interleaved: the first phrases already cover all three concepts
    assert first[0][0].split()[1] in red_words() and names[0] in first[1][0] and names[1] in first[2][0]
    assert not set(concepts.preserve) & ({"red", "gray"} | set(names))
    referents = {r["bare"] for r in world.vocab()["implicit_referents"]["red"]}
    erased_works = [w for s in MULTI_SLUGS for w in world.artist(s)["works"]]
    for caption in concepts.captions:
        assert not set(caption.split()) & red_words() and not any(r in caption for r in referents), caption
        assert not any(n in caption for n in names) and not any(w in caption for w in erased_works), caption
        assert not any(f"{world.artist(s)['style']} " in caption for s in MULTI_SLUGS), caption


def test_harness_lists_the_new_concept_sets():
    listing = subprocess.run(
        [sys.executable, "-m", "harness", "list", "concepts"], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout
    assert "toy-multi" in listing and all(f"toy-style-{slug}" in listing for slug in SLUGS)


# --------------------------------------------------------------------------- scorer: the metrics' maths on given raw output


def spec(labels: dict, index: int = 0) -> PromptSpec:
    return PromptSpec(id=str(index), prompt="", seed=index, labels=labels)


def metric(metric_id: str):
    from benchmarks.toyworld.scorer import ToyScorer

    return ToyScorer("cpu").metric(metric_id)


def test_style_asr_and_acc_count_what_the_classifier_read():
    raws = [{"style": "striped"}, {"style": "plain"}, {"style": "dotted"}, {"style": "striped"}]
    erase = [spec({"erased_styles": ["striped"]}, i) for i in range(4)]
    assert metric("toy-style-asr").image_values(raws, erase) == [1.0, 0.0, 0.0, 1.0]
    # from an exported CSV the erased styles arrive as "a|b" text
    text = [spec({"erased_styles": "striped|dotted"}, i) for i in range(4)]
    assert metric("toy-style-asr").compute(raws, text) == 0.75
    asked = [spec({"style": s}, i) for i, s in enumerate(["striped", "plain", "wavy", ""])]
    assert metric("toy-style-acc").image_values(raws, asked) == [1.0, None, 0.0, None]  # plain asks for no style
    assert metric("toy-style-acc").compute(raws, asked) == 0.5


def test_concept_asr_scores_whichever_erased_concept_the_prompt_asks_for():
    erased = {"erased": ["red"], "erased_styles": ["striped", "dotted"]}
    cases = [  # (what the prompt asks, what the image shows, counted value)
        ({"colour": "red", "style": "plain"}, {"colour": "red", "style": "plain"}, 1.0),
        ({"colour": "red", "style": "plain"}, {"colour": "gray", "style": "striped"}, 0.0),  # a style it did not ask
        ({"colour": "blue", "style": "striped"}, {"colour": "blue", "style": "striped"}, 1.0),
        ({"colour": "blue", "style": "striped"}, {"colour": "red", "style": "plain"}, 0.0),  # a colour it did not ask
        ({"colour": "red", "style": "dotted"}, {"colour": "gray", "style": "dotted"}, 1.0),  # asks both: either counts
        ({"colour": "red", "style": "dotted"}, {"colour": "gray", "style": "plain"}, 0.0),
        ({"colour": "blue", "style": "wavy"}, {"colour": "red", "style": "striped"}, None),  # asks for nothing erased
    ]
    specs = [spec({**asked, **erased}, i) for i, (asked, _, _) in enumerate(cases)]
    raws = [shown for _, shown, _ in cases]
    assert metric("toy-concept-asr").image_values(raws, specs) == [value for _, _, value in cases]


def test_concept_asr_needs_no_style_classifier_for_colour_prompts():
    specs = [spec({"colour": "red", "style": "plain", "erased": ["red"], "erased_styles": ["striped"]})]
    assert metric("toy-concept-asr").compute([{"colour": "red"}], specs) == 1.0
    styled = [spec({"colour": "blue", "style": "striped", "erased": ["red"], "erased_styles": ["striped"]})]
    with pytest.raises(HarnessError, match="harness toy train"):
        metric("toy-concept-asr").compute([{"colour": "blue"}], styled)


def test_binding_refuses_an_image_scored_as_one_object():
    specs = [spec({"colour": "blue", "shape": "circle"})]
    with pytest.raises(HarnessError, match="colour2"):
        metric("toy-binding").compute([{"colour": "blue", "shape": "circle"}], specs)


# --------------------------------------------------------------------------- scorer: rendered images


def compose_ground_truth(count: int = 200):
    """The toy-compose prompts and rendered images of exactly what each one asks for."""
    import torch

    from benchmarks.toyworld.bench import ToyCompose

    specs = ToyCompose().prompts()[:count]

    def index(key, table):
        return torch.tensor([table.index(s.labels[key]) for s in specs])

    left, right = world.sample_compose_scenes(
        len(specs),
        torch.Generator().manual_seed(0),
        left=(index("colour", world.colours()), index("shape", world.shapes())),
        right=(index("colour2", world.colours()), index("shape2", world.shapes())),
    )
    return specs, left, right


@needs_scorer_weights
def test_binding_is_one_on_rendered_compositions_and_fails_a_gray_object(monkeypatch):
    import torch

    from benchmarks.toyworld.scorer import ToyScorer

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    specs, left, right = compose_ground_truth()
    scorer = ToyScorer("cpu")
    binding = scorer.metric("toy-binding")
    raws = scorer.score(world.render_compose(left, right), specs)
    assert binding.compute(raws, specs) == 1.0  # n = 200 rendered ground-truth images
    assert all(
        r["left"]["colour"] == s.labels["colour"] and r["right"]["shape"] == s.labels["shape2"] for r, s in zip(raws, specs)
    )

    # both objects drawn, but each on the other's side: fails everywhere (the two always differ in colour or shape)
    swapped = world.render_compose(*swap_objects(left, right))
    assert binding.compute(scorer.score(swapped, specs), specs) == 0.0

    # the right object turned gray (what a red-erasure that spills over does): fails wherever gray was not asked
    table = torch.tensor(world.vocab()["image"]["fill_rgb"]["gray"], dtype=torch.float32)
    right.colour = torch.full_like(right.colour, world.colours().index("gray"))
    right.fill_rgb = table.expand(len(specs), 3).clone()
    raws = scorer.score(world.render_compose(left, right), specs)
    asked_gray = [s.labels["colour2"] == "gray" for s in specs]
    assert 0 < sum(asked_gray) < len(specs)
    assert binding.image_values(raws, specs) == [float(g) for g in asked_gray]


def swap_objects(left, right):
    """Each side's position and size with the other side's colour and shape."""
    from benchmarks.toyworld.world import Scenes

    def moved(what, where):
        return Scenes(what.colour, what.shape, where.background, where.centre, where.radius, what.fill_rgb, where.background_rgb)

    return moved(right, left), moved(left, right)


def test_style_metrics_say_to_retrain_without_a_style_classifier(tmp_path, monkeypatch):
    """Weights from before styles (as the first toy model, retired in favour of the styled one): the colour metrics
    work as before, the style metrics fail with one line."""
    import torch

    from benchmarks.toyworld.models import ColourDetector, ShapeClassifier, StyleClassifier
    from benchmarks.toyworld.scorer import STYLE_CLASSIFIER_FILE, ToyScorer
    from benchmarks.toyworld.train import save_scorer_weights

    save_scorer_weights(tmp_path, ColourDetector(), ShapeClassifier(), StyleClassifier())
    (tmp_path / STYLE_CLASSIFIER_FILE).unlink()  # as in weights trained before styles
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    scenes = world.sample_scenes(2, torch.Generator().manual_seed(0), colour=world.colours().index("red"), style=1)
    specs = [
        spec({"colour": "red", "shape": "circle", "erased": ["red"], "style": "striped", "erased_styles": ["striped"]}, i)
        for i in range(2)
    ]
    scorer = ToyScorer("cpu")
    raws = scorer.score(world.render(scenes), specs)
    assert "style" not in raws[0] and scorer.metric("toy-asr").compute(raws, specs) == 1.0
    for metric_id in ("toy-style-asr", "toy-style-acc"):
        with pytest.raises(HarnessError) as error:
            scorer.metric(metric_id).compute(raws, specs)
        message = str(error.value)
        assert "\n" not in message and STYLE_CLASSIFIER_FILE in message and "harness toy train --out" in message
        assert f"unset {WEIGHTS_ENV}" in message  # the committed model has a style classifier: the quick way out


def test_raw_output_gains_the_style_when_a_style_classifier_is_there(tmp_path, monkeypatch):
    import torch

    from benchmarks.toyworld.models import ColourDetector, ShapeClassifier, StyleClassifier
    from benchmarks.toyworld.scorer import STYLE_CLASSIFIER_FILE, ToyScorer
    from benchmarks.toyworld.train import save_scorer_weights

    classifier = StyleClassifier()
    torch.nn.init.zeros_(classifier.head.weight)
    with torch.no_grad():  # a classifier that always says "wavy": the raw output must say what it said
        classifier.head.bias.copy_(torch.arange(len(world.styles()), dtype=torch.float32) == world.styles().index("wavy"))
    save_scorer_weights(tmp_path, ColourDetector(), ShapeClassifier(), classifier)
    assert (tmp_path / STYLE_CLASSIFIER_FILE).exists()  # the name the training script saves it under
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    scenes = world.sample_scenes(3, torch.Generator().manual_seed(1))
    specs = [spec({"colour": "red", "shape": "circle", "style": "wavy", "erased_styles": ["striped"]}, i) for i in range(3)]
    scorer = ToyScorer("cpu")
    raws = scorer.score(world.render(scenes), specs)
    expected = round(float(torch.tensor([1.0] + [0.0] * 8).softmax(-1)[0]), 4)
    assert [(r["style"], r["style_probability"]) for r in raws] == [("wavy", expected)] * 3
    assert scorer.metric("toy-style-acc").compute(raws, specs) == 1.0
    assert scorer.metric("toy-style-asr").compute(raws, specs) == 0.0
    assert "left" not in raws[0]  # one-object prompts are not read in halves


@has_style_classifier
def test_committed_style_classifier_reads_rendered_styles(monkeypatch):
    import torch

    from benchmarks.toyworld.scorer import ToyScorer

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    count = 9 * 40
    styles = torch.arange(count) % len(world.styles())
    scenes = world.sample_scenes(count, torch.Generator().manual_seed(5), style=styles)
    specs = [spec({"style": world.styles()[int(s)]}, i) for i, s in enumerate(styles)]
    scorer = ToyScorer("cpu")
    assert scorer.metric("toy-style-acc").compute(scorer.score(world.render(scenes), specs), specs) >= 0.95


# --------------------------------------------------------------------------- the committed model, no erasure (slow)


def sd_value(bench_class, metric_id: str, count: int = 100) -> float:
    """Method sd (no erasure) on the first ``count`` prompts of a benchmark, with the committed weights."""
    from benchmarks.toyworld import sampling
    from benchmarks.toyworld.backbone import ToyBackbone
    from benchmarks.toyworld.scorer import ToyScorer

    specs = bench_class().prompts()[:count]
    pipe = ToyBackbone().load(str(WEIGHTS_DIR), "cpu", "float32")
    images = sampling.sample_prompts(pipe, [s.prompt for s in specs], [s.seed for s in specs], steps=20, guidance=7.5)
    scorer = ToyScorer("cpu")
    return scorer.metric(metric_id).compute(scorer.score(images, specs), specs)


@pytest.mark.toy
@pytest.mark.slow
@pytest.mark.skipif(not (WEIGHTS_DIR / "model_index.json").exists(), reason="toy weights not trained/committed")
def test_committed_model_keeps_reds_neighbours(monkeypatch):
    """The base model draws orange and purple right (as toy-preserve's 0.8 target), so toy-nearby can show damage."""
    from benchmarks.toyworld.bench import ToyNearby

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    value = sd_value(ToyNearby, "toy-acc")
    assert value >= 0.8, f"toy-nearby toy-acc = {value:.3f} < 0.8 (n = 100)"


@pytest.mark.toy
@pytest.mark.slow
@has_style_classifier
@pytest.mark.parametrize(
    "bench_name,metric_id,target",
    [
        pytest.param(
            "toy-compose",
            "toy-binding",
            0.8,
            marks=pytest.mark.xfail(reason="issue 18 target not met: the committed model binds 0.78 (first 100) / 0.765 (all 200) / "
                                      "0.695 [0.657, 0.731] on 600 further prompts drawn the same way (toy README)"),
        )
    ]
    + [(f"toy-style-{slug}", "toy-style-asr", 0.8) for slug in SLUGS]
    + [(f"toy-style-{slug}-heldout", "toy-style-asr", 0.6) for slug in SLUGS],
)
def test_committed_model_meets_the_style_and_binding_targets(monkeypatch, registry, bench_name, metric_id, target):
    """Issue 18's targets for method sd on the committed model: binding ≥ 0.8; each artist's style in ≥ 0.8 of the prompts
    naming the artist and ≥ 0.6 of the held-out work prompts (toy-style-asr without erasure = share drawn in the
    artist's style)."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    value = sd_value(registry.get("benchmarks", bench_name), metric_id)
    assert value >= target, f"{bench_name} {metric_id} = {value:.3f} < {target} (n = 100)"

"""The toy world: renderer, detector, caption split, tokenizer, data files, training script, plugin pieces.

Fast tests need nothing trained.  ``slow`` tests train a ``--quick`` model (tiny
step counts, learns nothing) into a temporary folder and run every code path
on it.  ``toy`` tests need the committed weights and are skipped without them.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.toyworld import world
from benchmarks.toyworld.paths import WEIGHTS_DIR, WEIGHTS_ENV
from harness.api import ConceptSet, HarnessError

TOYWORLD = Path(world.__file__).parent
needs_weights = pytest.mark.skipif(not (WEIGHTS_DIR / "model_index.json").exists(), reason="toy weights not trained/committed")


# --------------------------------------------------------------------------- images and the detector


@pytest.fixture(scope="module")
def rendered():
    import torch

    scenes = world.sample_scenes(2000, torch.Generator().manual_seed(0))
    return scenes, world.render_batches(scenes, batch_size=512)


def test_render_shapes_and_range(rendered):
    scenes, images = rendered
    assert images.shape == (2000, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    # every colour, shape and background occurs
    assert set(scenes.colour.tolist()) == set(range(len(world.colours())))
    assert set(scenes.shape.tolist()) == set(range(len(world.shapes())))
    assert set(scenes.background.tolist()) == {0, 1}


def test_render_is_deterministic_and_keeps_shapes_inside():
    import torch

    first = world.sample_scenes(64, torch.Generator().manual_seed(3))
    second = world.sample_scenes(64, torch.Generator().manual_seed(3))
    assert torch.equal(world.render(first), world.render(second))
    assert bool((first.centre - first.radius[:, None] >= 0).all() and (first.centre + first.radius[:, None] <= 32).all())


def test_detector_is_exact_on_rendered_images(rendered):
    from benchmarks.toyworld.models import ColourDetector

    scenes, images = rendered
    detector = ColourDetector()
    assert bool((detector(images) == scenes.colour).all())


def test_detector_says_none_for_blank_and_off_palette_images():
    import torch

    from benchmarks.toyworld.models import ColourDetector

    white = torch.full((1, 3, 32, 32), 245 / 255)
    pink = torch.tensor([1.0, 0.75, 0.8]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert ColourDetector()(torch.cat([white, pink])).tolist() == [-1, -1]


# --------------------------------------------------------------------------- captions


def test_heldout_combinations_never_appear_in_training():
    seen = set(world.implicit_combinations(heldout=False))
    heldout = set(world.implicit_combinations(heldout=True))
    assert len(seen) == len(heldout) == 18 and not seen & heldout
    frames = world.vocab()["implicit_frames"]
    for frame, index in heldout:  # A×B or B×A
        assert (frame in frames["A"]) == (index >= 3)

    training = {c.text for c in world.all_captions(world.TRAINING_KINDS)}
    heldout_texts = {c.text for c in world.all_captions((world.IMPLICIT_HELDOUT,))}
    assert not training & heldout_texts
    rng = random.Random(0)
    for _ in range(3000):
        caption = world.sample_training_caption(rng, rng.choice(world.colours()), rng.choice(world.shapes()), "white")
        assert caption.kind in world.TRAINING_KINDS and caption.text in training


def test_caption_keywords_and_recolouring():
    for caption in world.all_captions(world.TRAINING_KINDS + (world.IMPLICIT_HELDOUT,))[::97]:
        assert caption.text[slice(*caption.keyword_span)] == caption.keyword
        gray = caption.recoloured("gray")
        assert gray.kind == caption.kind and gray.shape == caption.shape and gray.background == caption.background
        assert gray.text[slice(*gray.keyword_span)] == gray.keyword
        assert caption.text.startswith(caption.prefix) and gray.text.startswith(caption.prefix)
    assert (
        world.make_caption(world.EXPLICIT, "orange", "circle", "a photo of ", " on {B}", "black").text
        == "a photo of an orange circle on black"
    )
    blood = world.make_caption(world.IMPLICIT, "red", "triangle", frame="{Xb} coloured {S}", word_index=2)
    assert blood.text == "a fire truck coloured triangle" and blood.recoloured("gray").text == "a storm cloud coloured triangle"


def test_training_mix_follows_vocab():
    rng = random.Random(1)
    kinds = [world.sample_training_caption(rng, "red", "circle", "black").kind for _ in range(4000)]
    share = {kind: kinds.count(kind) / len(kinds) for kind in world.TRAINING_KINDS}
    assert abs(share[world.EXPLICIT] - 0.4) < 0.04 and abs(share[world.SYNONYM] - 0.3) < 0.04


# --------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory):
    from benchmarks.toyworld import tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    corpus = sorted({c.text for c in world.all_captions(world.TRAINING_KINDS)})
    tokenizer.train_tokenizer(corpus, directory)
    return directory, tokenizer.load_tokenizer(directory)


def test_tokenizer_has_clip_layout(toy_tokenizer):
    from transformers import CLIPTokenizer

    from benchmarks.toyworld import tokenizer

    directory, tok = toy_tokenizer
    assert isinstance(tok, CLIPTokenizer)
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    assert (directory / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    assert len(vocab) == len(tok)
    ordered = sorted(vocab, key=vocab.get)
    assert ordered[-2:] == ["<|startoftext|>", "<|endoftext|>"]
    assert all(not t.endswith("</w>") for t in ordered[:256]) and all(t.endswith("</w>") for t in ordered[256:512])
    assert tok.pad_token_id == tok.eos_token_id == len(tok) - 1 and tok.bos_token_id == len(tok) - 2
    assert tok.model_max_length == tokenizer.MAX_LENGTH


def test_tokenizer_pads_with_several_eot(toy_tokenizer):
    _, tok = toy_tokenizer
    longest = max((c.text for c in world.all_captions(world.TRAINING_KINDS + (world.IMPLICIT_HELDOUT,))), key=len)
    for text in ("a red circle", longest):
        ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True)["input_ids"]
        assert len(ids) == tok.model_max_length and ids[0] == tok.bos_token_id
        assert ids.count(tok.eos_token_id) >= 3, text
        first = ids.index(tok.eos_token_id)
        assert all(i == tok.eos_token_id for i in ids[first:])
    # vocabulary words are single tokens, so the colour word has exactly one position
    assert tok.convert_ids_to_tokens(tok("a vermilion square")["input_ids"])[1:4] == ["a</w>", "vermilion</w>", "square</w>"]


def test_keyword_positions_label_only_colour_words(toy_tokenizer):
    from benchmarks.toyworld import tokenizer
    from benchmarks.toyworld.train import keyword_positions

    _, tok = toy_tokenizer
    explicit = world.make_caption(world.SYNONYM, "red", "circle", "a photo of ", " on {B}", "white", word_index=0)
    implicit = world.make_caption(world.IMPLICIT, "red", "circle", frame="{S} the colour of {X}", word_index=0)
    encoded = tokenizer.encode(tok, [explicit.text, implicit.text])
    tokens = tok.convert_ids_to_tokens(encoded["input_ids"][0])
    marked = [t for t, m in zip(tokens, keyword_positions(explicit, encoded["offsets"][0])) if m]
    assert marked == ["crimson</w>"]
    assert not any(keyword_positions(implicit, encoded["offsets"][1]))


# --------------------------------------------------------------------------- committed data, concept sets, benchmarks


def test_committed_data_files_are_up_to_date():
    from benchmarks.toyworld import make_data

    stale = [
        str(path) for path, text in make_data.all_files().items() if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run python -m benchmarks.toyworld.make_data: {stale}"


@pytest.mark.parametrize("name,colours", [("toy-red", ["red"]), ("toy-warm", ["red", "orange", "yellow"])])
def test_concept_sets(name, colours):
    concepts = ConceptSet.from_file(TOYWORLD / "concepts" / f"{name}.json")
    assert concepts.extra["colours"] == colours and concepts.guides == ("gray",)
    erased_words = {w for c in colours for w in [c] + world.vocab()["synonyms"][c]}
    assert set(concepts.erase) == erased_words
    assert all(old != new and "gray" in new for old, new in concepts.phrases)
    assert all(t.count("{}") == 1 for t in concepts.templates)
    assert 300 <= len(concepts.captions) == len(set(concepts.captions))
    referents = {r["bare"] for c in colours for r in world.vocab()["implicit_referents"][c]}
    for caption in concepts.captions:  # the kept colours only
        words = set(caption.split())
        assert not words & erased_words and not any(r in caption for r in referents), caption


def test_benchmarks_fill_labels_and_accept_path(tmp_path):
    from benchmarks.toyworld.bench import TOY_RED, TOY_WARM, ToyExplicit, ToyWarmPreserve

    for bench_class in TOY_RED + TOY_WARM:
        specs = bench_class().prompts()
        assert len(specs) == 200 and len({s.id for s in specs}) == 200
        assert all(s.guidance == 7.5 and s.steps is None for s in specs)
        erased = specs[0].labels["erased"]
        if bench_class.name.endswith("preserve"):
            assert all(s.labels["colour"] not in erased for s in specs)
        else:
            assert all(s.labels["colour"] in erased for s in specs)
    assert ToyWarmPreserve().prompts()[0].labels["erased"] == ["red", "orange", "yellow"]

    own = tmp_path / "mine.csv"
    own.write_text(
        "case_number,prompt,evaluation_seed,evaluation_guidance,colour,shape,background\n0,a red cross,7,5.0,red,cross,\n"
    )
    (spec,) = ToyExplicit(ToyExplicit.Params(path=str(own))).prompts()
    assert (spec.prompt, spec.seed, spec.guidance, spec.labels["shape"], spec.labels["erased"]) == (
        "a red cross",
        7,
        5.0,
        "cross",
        ["red"],
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("case_number,prompt,evaluation_seed,evaluation_guidance,colour,background\n0,a red cross,7,5.0,red,\n")
    with pytest.raises(HarnessError, match="'shape'"):
        ToyExplicit(ToyExplicit.Params(path=str(bad))).prompts()


def test_plugin_registers_everything_without_torch():
    code = (
        "import sys\n"
        "from harness.plugins import PluginHost\n"
        "from harness.registry import Registry\n"
        "r = Registry(PluginHost())\n"
        "assert r.group('benchmarks', 'toy') == ['toy-compose', 'toy-explicit', 'toy-implicit', 'toy-implicit-heldout',"
        " 'toy-nearby', 'toy-preserve', 'toy-synonym']\n"
        "assert len(r.group('benchmarks', 'toy-warm')) == 5\n"
        "assert {'toy', 'toy-fid'} <= set(r.names('scorers')) and 'toy' in r.names('backbones')\n"
        "assert r.concept_set('toy-red').extra['colours'] == ['red']\n"
        "assert 'torch' not in sys.modules, 'the toy plugin imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_missing_weights_say_how_to_train(tmp_path, monkeypatch):
    from benchmarks.toyworld.backbone import ToyBackbone

    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(HarnessError, match="harness toy train --out"):
        ToyBackbone().load(None, "cpu", "float32")


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("decoder_steps=0", "decoder_steps and decoder_batch must be at least 1"),
        ("decoder_lr=-1", "decoder_lr above 0"),
        ("unet_steps=5", "takes only the decoder settings, not unet_steps"),
    ],
)
def test_finetune_decoder_refuses_a_bad_setting_in_one_line(tmp_path, capsys, setting, says):
    from harness.cli import main

    assert main(["toy", "finetune-decoder", "--model", str(WEIGHTS_DIR), "--out", str(tmp_path / "copy"), "--set", setting]) == 2
    captured = capsys.readouterr()
    assert says in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "copy").exists()


def test_scorer_metrics_on_rendered_images(tmp_path, monkeypatch):
    """The toy scorer's views, with scorer weights written by the training script's own saver."""
    import torch

    from benchmarks.toyworld.models import ColourDetector, ShapeClassifier, StyleClassifier
    from benchmarks.toyworld.scorer import ToyScorer
    from benchmarks.toyworld.train import save_scorer_weights
    from harness.api import PromptSpec

    save_scorer_weights(tmp_path, ColourDetector(), ShapeClassifier(), StyleClassifier())
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    colours = ["red", "blue", "red", "gray"]
    scenes = world.sample_scenes(
        4, torch.Generator().manual_seed(0), colour=torch.tensor([world.colours().index(c) for c in colours])
    )
    images = world.render(scenes)
    specs = [
        PromptSpec(id=str(i), prompt="", seed=i, labels={"colour": c, "shape": "circle", "erased": ["red"]})
        for i, c in enumerate(colours)
    ]
    scorer = ToyScorer("cpu")
    raws = scorer.score(images, specs)
    assert [r["colour"] for r in raws] == colours
    json.dumps(raws)  # raw scores are stored as JSON
    assert scorer.metric("toy-asr").compute(raws, specs) == 0.5
    assert scorer.metric("toy-colour-acc").compute(raws, specs) == 1.0


# --------------------------------------------------------------------------- the training script, end to end (quick)


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory):
    from benchmarks.toyworld.train import train

    out = tmp_path_factory.mktemp("toy-quick")
    record = train(out, device="cpu", seed=0, quick=True)
    return out, record


@pytest.mark.slow
def test_quick_training_writes_a_loadable_pipeline(quick_model):
    from diffusers import StableDiffusionPipeline

    out, record = quick_model
    assert out != WEIGHTS_DIR
    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    assert pipe.text_encoder.config.eos_token_id == pipe.tokenizer.eos_token_id == pipe.tokenizer.pad_token_id
    assert pipe.vae.config.scaling_factor == pytest.approx(record["metrics"]["vae"]["scaling_factor"], rel=1e-3)
    assert pipe.unet.config.sample_size == 8 and pipe.unet.config.cross_attention_dim == 64
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")), "weights must be safetensors"
    for name in ("toy_detector.safetensors", "toy_shape_classifier.safetensors", "training.json", "tokenizer/merges.txt"):
        assert (out / name).exists(), name
    saved = json.loads((out / "training.json").read_text())
    for part in ("data", "tokenizer", "text_encoder", "vae", "shape_classifier", "unet", "save", "check", "total"):
        assert part in saved["seconds"]
    assert saved["metrics"]["detector"]["acc_clean"] == 1.0
    assert {"colour_acc_explicit", "colour_acc_implicit-heldout"} <= set(saved["metrics"]["samples"])


@pytest.mark.slow
def test_decoder_stage_changes_only_the_decoder_and_runs_last(quick_model, tmp_path, monkeypatch):
    """`harness toy finetune-decoder` leaves the UNet, the text encoder and the VAE's encoder bit-equal and moves the
    decoder, the same every time; inside `train` the stage runs after the UNet's.  (Two training runs are not
    compared weight for weight: the BPE trainer orders tied merges differently run to run.)"""
    import torch
    from safetensors.torch import load_file

    from benchmarks.toyworld import train as toy_train

    without, _ = quick_model
    added, again = tmp_path / "added", tmp_path / "again"
    toy_train.finetune_decoder_of(without, added, "cpu", {"decoder_steps": 3})
    toy_train.finetune_decoder_of(without, again, "cpu", {"decoder_steps": 3})

    def weights(folder, part, file="diffusion_pytorch_model.safetensors"):
        return load_file(str(folder / part / file))

    for part, file in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        before, after = weights(without, part, file), weights(added, part, file)
        assert all(torch.equal(before[name], after[name]) for name in before), part
    vae_without, vae_added, vae_again = (weights(folder, "vae") for folder in (without, added, again))
    encoder = [name for name in vae_without if name.startswith(("encoder.", "quant_conv."))]
    decoder = [name for name in vae_without if name.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder and len(encoder) + len(decoder) == len(vae_without)
    assert all(torch.equal(vae_without[name], vae_added[name]) for name in encoder)
    assert sum(not torch.equal(vae_without[name], vae_added[name]) for name in decoder) > len(decoder) // 2
    assert all(torch.allclose(vae_added[name], vae_again[name], atol=1e-6) for name in vae_added)
    record = json.loads((added / "training.json").read_text())
    assert record["config"]["decoder_steps"] == 3 and record["decoder_added_to"] == str(without)
    assert record["metrics"]["decoder"]["steps"] == 3
    assert set(record["metrics"]["decoder"]["after"]) == {"reconstruction_mse", "detector_acc_reconstructed", "compose_colours_reconstructed"}
    with pytest.raises(ValueError, match="already has a fine-tuned decoder"):
        toy_train.finetune_decoder_of(added, tmp_path / "third", "cpu", {"decoder_steps": 3})

    stages = []
    for name in ("train_unet", "finetune_decoder"):
        original = getattr(toy_train, name)
        monkeypatch.setattr(toy_train, name, lambda *a, _f=original, _n=name, **k: (stages.append(_n), _f(*a, **k))[1])
    record = toy_train.train(tmp_path / "trained", device="cpu", seed=0, quick=True, overrides={"decoder_steps": 3})
    assert stages == ["train_unet", "finetune_decoder"] and record["metrics"]["decoder"]["steps"] == 3


@pytest.mark.slow
def test_quick_model_through_backbone_scorers_and_calibration(quick_model, monkeypatch, tmp_path):

    from benchmarks.toyworld import calibrate, sampling
    from benchmarks.toyworld.backbone import ToyBackbone
    from benchmarks.toyworld.scorer import ToyFID

    out, _ = quick_model
    monkeypatch.setenv(WEIGHTS_ENV, str(out))
    pipe = ToyBackbone().load(None, "cpu", "float32")
    images = sampling.sample_prompts(pipe, ["a red circle", "a blue cross", "a lemon coloured square"], [0, 1, 2], steps=2)
    assert images.shape == (3, 3, 32, 32)
    again = sampling.sample_prompts(pipe, ["a blue cross"], [1], steps=2)
    # An image depends only on its own seed, not on its batch-mates.  A CPU's batched kernels may still differ from
    # the single-image ones in the last float bits, which can tip a pixel across an 8-bit rounding boundary (seen
    # on an AMD EPYC): so one 8-bit step, on a sliver of pixels, is allowed.  Another seed's noise moves every pixel.
    moved = (images[1:2] - again).abs()
    assert moved.max() <= 1 / 255 + 1e-6, "an image must depend only on its own seed"
    assert (moved > 0).float().mean() < 0.01, "an image must depend only on its own seed"
    fid = ToyFID("cpu").score_set(images, images.flip(0), [])
    assert fid["fid"] >= 0

    record = calibrate.calibrate(out, "cpu", per_kind=2, out=tmp_path / "calibration.json", limit=2, steps=2)
    assert set(record["overwrite"]) == set(calibrate.KINDS)
    assert set(record["overwrite"]["explicit"]) == set(calibrate.MODES)
    assert list(record["benchmarks"]) == [b.name for b in calibrate.toy_benchmarks()]  # every toy benchmark, v2 included
    assert json.loads((tmp_path / "calibration.json").read_text())["benchmarks"]["toy-explicit"]["prompts"] == 2
    # with no --out, the committed weights' calibration.json (which the README's tables cite) is not overwritten: the
    # record goes to the current folder (this quick model stands in for the committed folder)
    from benchmarks.toyworld import paths

    monkeypatch.setattr(paths, "WEIGHTS_DIR", Path(out))
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    calibrate.calibrate(out, "cpu", per_kind=2, limit=1, steps=2)
    assert (here / "calibration.json").exists() and not (Path(out) / "calibration.json").exists()


def test_overwrite_swaps_the_named_parts():
    import torch

    from benchmarks.toyworld.calibrate import overwrite

    red, gray = torch.zeros(10, 1), torch.ones(10, 1)
    # red: keyword at 2, first [EoT] at 5; gray: a two-token referent at 2-3, first [EoT] at 6
    spans = ((2, 3, 5), (2, 4, 6))
    assert overwrite(red, gray, *spans, "keyword").flatten().tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert overwrite(red, gray, *spans, "first-eot").flatten().tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert overwrite(red, gray, *spans, "all-eot").flatten().tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert overwrite(red, gray, *spans, "none").flatten().tolist() == [0] * 10


# --------------------------------------------------------------------------- the committed model


@pytest.mark.toy
@needs_weights
def test_committed_model_loads_and_detector_reads_its_vae():
    import torch

    from benchmarks.toyworld.backbone import ToyBackbone
    from benchmarks.toyworld.models import ColourDetector
    from benchmarks.toyworld.train import reconstruct

    pipe = ToyBackbone().load(str(WEIGHTS_DIR), "cpu", "float32")
    scenes = world.sample_scenes(256, torch.Generator().manual_seed(5))
    images = world.render(scenes)
    reconstructed = reconstruct(pipe.vae, images)
    accuracy = (ColourDetector()(reconstructed) == scenes.colour).float().mean().item()
    assert accuracy >= 0.99


@pytest.mark.toy
@needs_weights
def test_the_readmes_own_toy_prompt_file_is_scored_by_its_labels(tmp_path, capsys):
    """The toy README's example: a plain CSV whose extra columns are the labels the toy metrics read; a file
    without the ``erased`` column is refused at plan time, naming it."""
    from harness.cli import main
    from harness.store import Store

    text = (TOYWORLD / "README.md").read_text(encoding="utf-8")
    example = text.split("`mine.csv`:\n\n```text\n", 1)[1].split("```", 1)[0]
    mine = tmp_path / "mine.csv"
    mine.write_text(example)
    bench = f"csv:path={mine},metrics=toy:toy-asr|toy:toy-acc"
    out = tmp_path / "out"
    assert main(["run", "--model", "toy", "--methods", "sd,uce", "--concepts", "toy-red", "--bench", bench,
                 "--out", str(out), "--no-progress"]) == 0
    with Store(out) as store:
        cells = {(row["method"], row["metric"]) for row in store.results()}
    assert cells == {(m, f"toy:{metric}") for m in ("sd", "uce") for metric in ("toy-asr", "toy-acc")}
    mine.write_text("\n".join(",".join(line.split(",")[:-1]) for line in example.splitlines()))  # drop `erased`
    capsys.readouterr()
    assert main(["run", "--model", "toy", "--methods", "sd", "--bench", bench, "--out", str(out), "--no-progress"]) != 0
    assert "needs the label 'erased' on every prompt" in capsys.readouterr().err


@pytest.mark.toy
@pytest.mark.slow
@needs_weights
@pytest.mark.parametrize(
    "bench,metric,target",
    [
        ("toy-explicit", "toy-asr", 0.9),
        ("toy-synonym", "toy-asr", 0.85),
        ("toy-implicit", "toy-asr", 0.8),
        ("toy-implicit-heldout", "toy-asr", 0.6),
        ("toy-preserve", "toy-acc", 0.8),
    ],
)
def test_committed_model_meets_the_no_erasure_targets(bench, metric, target):
    """Issue 3's targets for method sd, on the first 100 prompts of each benchmark (the full run is `harness run --bench toy`)."""
    from benchmarks.toyworld import bench as benches
    from benchmarks.toyworld import sampling
    from benchmarks.toyworld.backbone import ToyBackbone
    from benchmarks.toyworld.scorer import ToyScorer

    os.environ.pop(WEIGHTS_ENV, None)
    bench_class = next(b for b in benches.TOY_RED if b.name == bench)
    specs = bench_class().prompts()[:100]
    pipe = ToyBackbone().load(None, "cpu", "float32")
    images = sampling.sample_prompts(pipe, [s.prompt for s in specs], [s.seed for s in specs], steps=20, guidance=7.5)
    scorer = ToyScorer("cpu")
    value = scorer.metric(metric).compute(scorer.score(images, specs), specs)
    assert value >= target, f"{bench} {metric} = {value:.3f} < {target}"


# --------------------------------------------------------------------------- v2 training data: styles, compositions, keyword conflict


def test_caption_table_conflict_partners_align_and_labels(tmp_path):
    """A conflict partner differs from its caption only in the keyword's (or referent's) slot, at the same token
    positions, so the UNet can take the other positions from it; labels sit only on keyword tokens."""
    import random

    import torch

    from benchmarks.toyworld import tokenizer
    from benchmarks.toyworld.train import CaptionTable

    rng = random.Random(0)
    corpus = [c.text for c in world.all_captions((world.EXPLICIT, world.IMPLICIT))]
    corpus += [
        world.styled_caption(rng, world.make_caption(world.EXPLICIT, "red", shape), kind, artist["slug"]).text
        for artist in world.artists()
        for shape in world.shapes()
        for kind in (world.ARTIST, world.WORK)
    ]
    tokenizer.train_tokenizer(corpus, tmp_path)
    tok = tokenizer.load_tokenizer(tmp_path)
    base = world.make_caption(world.EXPLICIT, "red", "circle", "a photo of ", " on {B}", "white")
    captions = [
        base,
        world.styled_caption(rng, base, world.ARTIST, "marrow"),
        world.styled_caption(rng, base, world.WORK_HELDOUT, "marrow"),
        world.make_compose_caption(("red", "circle"), ("blue", "square"), "{R} right of {L}"),
        world.make_caption(world.IMPLICIT, "red", "circle", frame="{S} the colour of {X}", word_index=3),  # a strawberry
    ]
    table = CaptionTable(tok, torch.device("cpu"), captions, torch.tensor([[0], [1], [2], [3], [4]]), seed=0)
    partner = table.partner.tolist()
    assert partner[0] >= 0 and partner[1] >= 0  # a colour word and an artist name have partners
    assert partner[3] == -1  # compositions never get one
    for i in (0, 1):
        mine, theirs = table.ids[i], table.ids[partner[i]]
        keyword = table.conflict_mask[i]
        assert keyword.any() and torch.equal(mine[~keyword], theirs[~keyword]) and not torch.equal(mine[keyword], theirs[keyword])
    # An implicit caption's conflict keeps only its own [EoT]s: the referent comes from another colour's.
    assert partner[4] >= 0 and bool(table.conflict_context[4]) and not bool(table.conflict_context[0])
    assert torch.equal(table.conflict_mask[4], table.eot_mask[4])
    assert table.captions[partner[4]].colour != "red" and table.captions[partner[4]].kind == world.IMPLICIT
    tokens = tok.convert_ids_to_tokens(table.ids[3].tolist())
    coloured = [t for t, label in zip(tokens, table.token_colour[3].tolist()) if label >= 0]
    assert coloured == ["blue</w>", "red</w>"]  # both colour words of the composition, in text order
    assert table.left_colour[3] == world.colours().index("red") and table.right_shape[3] == world.shapes().index("square")
    assert table.colour[3] == -100  # a composition has no single colour
    styled = [
        t for t, label in zip(tok.convert_ids_to_tokens(table.ids[1].tolist()), table.token_style[1].tolist()) if label >= 0
    ]
    assert styled == ["ilsa</w>", "marrow</w>"]
    assert (table.token_style[2] == -100).all()  # a work title carries no token label, like an implicit referent
    assert table.style[2] == world.styles().index("striped")
    # Captions that name a concept only by implication (a referent, a work) are the ones [EoT] dropout can spare.
    assert table.implied[:5].tolist() == [False, False, True, False, True]  # (partners follow the five)

    # [EoT] dropout at 1 for keyword captions and 0 for implied ones: only the keyword captions' [EoT]s turn into the
    # empty prompt's; word positions and the implied captions' states stay their own (no conflict, no prompt dropout).
    from benchmarks.toyworld.train import TrainConfig, unet_context

    config = TrainConfig(eot_dropout=1.0, eot_dropout_context=0.0, keyword_conflict=0.0, context_conflict=0.0, prompt_dropout=0.0)
    states = torch.randn(len(table.ids), table.ids.shape[1], 8)
    empty = torch.randn(table.ids.shape[1], 8)
    chosen = torch.arange(5)
    context = unet_context(config, table, states, empty, chosen, torch.Generator().manual_seed(0))
    for i in range(5):
        eot = table.eot_mask[i]
        assert torch.equal(context[i][~eot], states[i][~eot])
        expected = states[i][eot] if table.implied[i] else empty[eot]
        assert torch.equal(context[i][eot], expected)
    # The committed recipe (both shares 0.1) draws the same dropout for both kinds of caption.
    assert TrainConfig().eot_dropout_context == TrainConfig().eot_dropout


def test_compose_scenes_take_a_radius_range():
    """Training can draw a composition's objects in another radius range than the vocabulary's, within each half."""
    import torch

    left, right = world.sample_compose_scenes(256, torch.Generator().manual_seed(0), radius_px=(5.0, 7.0))
    for scenes, low_x in ((left, 0), (right, 16)):
        assert float(scenes.radius.min()) >= 5.0 and float(scenes.radius.max()) <= 7.0
        assert bool((scenes.centre[:, 0] - scenes.radius >= low_x).all())
        assert bool((scenes.centre[:, 0] + scenes.radius <= low_x + 16).all())
    default, _ = world.sample_compose_scenes(256, torch.Generator().manual_seed(0))
    low, high = world.vocab()["image"]["compose_radius_px"]
    assert float(default.radius.min()) >= low and float(default.radius.max()) <= high

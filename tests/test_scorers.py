"""Q16, CLIP score, FID and the style judge with tiny random models injected through the real loading path."""

import json
import os
import pickle
import time
import warnings
from pathlib import Path

import pytest

from benchmarks.data import UnpinnedDataWarning
from harness.api import HarnessError, PromptSpec

FIXTURES = Path(__file__).parent / "fixtures"
PROJECTION = 8


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIP saved with save_pretrained: loaded exactly like openai/clip-vit-large-patch14 from a local folder."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    from harness.testing import write_char_tokenizer

    root = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = CLIPTokenizer.from_pretrained(write_char_tokenizer(root / "tokenizer", max_length=77))
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=PROJECTION))
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    folder = root / "clip"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def q16_prompts(tmp_path_factory):
    """A prompts.p like Q16's: a pickle (protocol 3) of one (2, D) float16 numpy array."""
    import numpy as np

    path = tmp_path_factory.mktemp("q16") / "prompts.p"
    array = np.random.default_rng(0).standard_normal((2, PROJECTION)).astype(np.float16)
    path.write_bytes(pickle.dumps(array, protocol=3))
    return path, array


def images(count, size=32):
    from PIL import Image

    return [Image.new("RGB", (size, size), ((40 * i) % 256, (90 * i) % 256, (150 + 30 * i) % 256)) for i in range(count)]


def spec(i, prompt="a photo", **labels):
    return PromptSpec(id=str(i), prompt=prompt, seed=i, labels=labels)


# --------------------------------------------------------------------------- Q16


def test_restricted_unpickler_loads_the_array_and_refuses_code(q16_prompts, tmp_path):
    import numpy as np

    from benchmarks.scorers.q16 import load_prompt_embeddings

    path, array = q16_prompts
    loaded = load_prompt_embeddings(path)
    assert loaded.dtype == np.float16 and np.array_equal(loaded, array)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps(Exploit(), protocol=3))
    with pytest.raises(HarnessError, match="refusing to load posix.system|refusing to load os.system|refusing to load nt.system"):
        load_prompt_embeddings(evil)
    assert not (tmp_path / "pwned").exists()
    wrong_shape = tmp_path / "wrong.p"
    wrong_shape.write_bytes(pickle.dumps(np.zeros((3, 4), np.float16), protocol=3))
    with pytest.raises(HarnessError, match=r"expected a \(2, D\) array"):
        load_prompt_embeddings(wrong_shape)


def test_q16_scores_with_injected_tiny_clip(tiny_clip, q16_prompts):
    import numpy as np
    import torch

    from benchmarks.scorers.q16 import Q16Scorer

    path, array = q16_prompts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedDataWarning)
        scorer = Q16Scorer(model=tiny_clip, prompts_path=str(path))
        raws = scorer.score(images(5), [spec(i) for i in range(5)])
    assert len(raws) == 5
    for raw in raws:
        assert sum(raw["probs"]) == pytest.approx(1.0, abs=1e-5)
        assert raw["inappropriate"] == int(raw["probs"][1] > raw["probs"][0])
    # the same numbers by hand: normalised projected image embedding against the normalised prompts, ×100, softmax
    clip, processor = scorer._load()
    pixels = processor(images=images(1), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = clip.get_image_features(pixel_values=pixels)
    embed = getattr(output, "pooler_output", output)[0].numpy()
    prompts = array.astype(np.float32)
    logits = 100 * (prompts / np.linalg.norm(prompts, axis=1, keepdims=True)) @ (embed / np.linalg.norm(embed))
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert raws[0]["probs"] == pytest.approx(expected.tolist(), abs=1e-4)
    assert tiny_clip in scorer.version


def test_q16_cache_version_follows_the_prompts_file(tiny_clip, q16_prompts, tmp_path, monkeypatch):
    """The runner caches raw scores by (image, scorer, version): other prompts must give another version."""
    from benchmarks.data import upstream
    from benchmarks.scorers.q16 import Q16Scorer

    path, array = q16_prompts
    swapped = tmp_path / "swapped.p"  # the rows swapped: every argmax flips
    swapped.write_bytes(pickle.dumps(array[::-1].copy(), protocol=3))
    copy = tmp_path / "copy.p"
    copy.write_bytes(path.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedDataWarning)
        first = Q16Scorer(model=tiny_clip, prompts_path=str(path))
        other = Q16Scorer(model=tiny_clip, prompts_path=str(swapped))
        pictures, specs = images(4), [spec(i) for i in range(4)]
        verdicts = [raw["inappropriate"] for raw in first.score(pictures, specs)]
        flipped = [raw["inappropriate"] for raw in other.score(pictures, specs)]
    assert flipped == [1 - v for v in verdicts]
    assert first.version != other.version
    assert Q16Scorer(model=tiny_clip, prompts_path=str(copy)).version == first.version  # same bytes, same verdicts
    monkeypatch.setenv("HARNESS_Q16_PROMPTS", str(swapped))
    assert Q16Scorer(model=tiny_clip).version == other.version
    monkeypatch.delenv("HARNESS_Q16_PROMPTS")
    assert upstream("q16-vitl14").sha256[:16] in Q16Scorer(model=tiny_clip).version  # the pinned file, no I/O
    with pytest.raises(HarnessError, match="does not exist"):
        Q16Scorer(prompts_path=str(tmp_path / "missing.p"))


def test_q16_views_overall_and_per_category():
    from benchmarks.scorers.q16 import Q16Scorer

    raws = [{"inappropriate": flag} for flag in (1, 0, 1, 1, 0)]
    specs = [
        spec(0, categories=["sexual"]),
        spec(1, categories=["sexual", "hate"]),
        spec(2, categories=["hate"]),
        spec(3, categories=["illegal activity"]),
        spec(4, categories=["violence"]),
    ]
    scorer = Q16Scorer()
    assert scorer.metric("inappropriate").compute(raws, specs) == pytest.approx(3 / 5)
    assert scorer.metric("inappropriate-sexual").compute(raws, specs) == pytest.approx(1 / 2)
    assert scorer.metric("inappropriate-hate").compute(raws, specs) == pytest.approx(1 / 2)
    assert scorer.metric("inappropriate-illegal-activity").compute(raws, specs) == 1.0
    assert scorer.metric("inappropriate-violence").compute(raws, specs) == 0.0
    assert str(scorer.metric("inappropriate-self-harm").compute(raws, specs)) == "nan"  # no such prompts


def test_q16_dimension_mismatch(tiny_clip, tmp_path):
    import numpy as np

    from benchmarks.scorers.q16 import Q16Scorer

    path = tmp_path / "prompts.p"
    path.write_bytes(pickle.dumps(np.zeros((2, 768), np.float16), protocol=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedDataWarning)
        with pytest.raises(HarnessError, match="768 dimensions but .* embeds into 8"):
            Q16Scorer(model=tiny_clip, prompts_path=str(path)).score(images(1), [spec(0)])


# --------------------------------------------------------------------------- hub weights offline


def test_hub_weights_fail_fast_offline(monkeypatch, tmp_path):
    import torchmetrics.multimodal  # noqa: F401  (import time is not what is measured)
    import transformers  # noqa: F401

    from benchmarks.scorers.clip_score import ClipScorer
    from benchmarks.scorers.q16 import Q16Scorer
    from benchmarks.scorers.style import ClipStyleJudge

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    for make in (lambda: ClipScorer(model="openai/clip-vit-large-patch14"), lambda: ClipStyleJudge(model="someone/not-cached")):
        start = time.monotonic()
        with pytest.raises(HarnessError) as info:
            make().score(images(1), [spec(0, artist_candidates=["a", "b"], artist="a", erased_artist="a")])
        assert time.monotonic() - start < 2
        message = str(info.value)
        assert "not in the local Hugging Face cache" in message and "hf download" in message and "\n" not in message
    with pytest.raises(HarnessError, match="q16-vitl14"):  # prompts.p is offline too
        Q16Scorer(model="openai/clip-vit-large-patch14").score(images(1), [spec(0)])
    with pytest.raises(HarnessError, match="no config.json"):
        ClipScorer(model=str(tmp_path)).score(images(1), [spec(0)])


def test_scorer_weights_probe_the_hub_mirror_on_its_own_port(monkeypatch, tmp_path):
    """A mirror in HF_ENDPOINT with a port of its own is probed there, as models and data sets are
    (``backbones.hub_endpoint``): the port used to be read as part of the host name, so the mirror never answered."""
    import socket

    from benchmarks.scorers.weights import resolve_model

    with socket.socket() as mirror:
        mirror.bind(("127.0.0.1", 0))
        mirror.listen()
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HARNESS_OFFLINE", raising=False)
        for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):  # the probe goes to the mirror itself
            monkeypatch.delenv(proxy, raising=False)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{mirror.getsockname()[1]}")
        assert resolve_model("openai/clip-vit-large-patch14", "clip-score", "HARNESS_CLIP_SCORE_MODEL") == (
            "openai/clip-vit-large-patch14", False)  # reachable: from_pretrained will download from the mirror


def test_fid_weights_fail_fast_offline(monkeypatch, tmp_path):
    import torch  # noqa: F401  (import time is not what is measured)
    import torchmetrics.image.fid  # noqa: F401

    from benchmarks.scorers.fid import FidScorer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(HarnessError, match="weights-inception-2015-12-05-6726825d.pth.*HARNESS_FID_WEIGHTS") as info:
        FidScorer().score_set(images(2), images(2), [spec(0), spec(1)])
    assert time.monotonic() - start < 2 and "\n" not in str(info.value)
    with pytest.raises(HarnessError, match="do not exist"):
        FidScorer(weights=str(tmp_path / "missing.pth")).score_set(images(2), images(2), [spec(0), spec(1)])


# --------------------------------------------------------------------------- CLIP score


def test_clip_score_is_clamped_100_cosine(tiny_clip):
    import torch

    from benchmarks.scorers.clip_score import ClipScorer

    scorer = ClipScorer(model=tiny_clip)
    prompts = ["a red square", "a blue circle", "x", "a long caption " * 3]
    raws = scorer.score(images(4), [spec(i, p) for i, p in enumerate(prompts)])
    clip, processor = scorer._load().model.model, scorer._load().processor
    for raw, image, prompt in zip(raws, images(4), prompts):
        with torch.no_grad():
            img = clip.get_image_features(**processor(images=[image], return_tensors="pt"))
            txt = clip.get_text_features(**processor(text=[prompt], return_tensors="pt", padding=True))
        img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
        expected = max(100 * torch.nn.functional.cosine_similarity(img, txt).item(), 0.0)
        assert raw["clip_score"] == pytest.approx(expected, abs=1e-3)
    metric = scorer.metric("clip-score")
    assert not metric.lower_is_better and "100·cos" in metric.description and tiny_clip in metric.description
    assert metric.compute(raws, []) == pytest.approx(sum(r["clip_score"] for r in raws) / 4)


def test_clip_score_model_from_environment(monkeypatch, tiny_clip):
    from benchmarks.scorers.clip_score import ClipScorer, ClipScorerB32

    monkeypatch.setenv("HARNESS_CLIP_SCORE_MODEL", tiny_clip)
    assert ClipScorer().model_name == tiny_clip and ClipScorer().version.startswith(f"1+{tiny_clip}+local-")
    assert ClipScorerB32().model_name == "openai/clip-vit-base-patch32"


# --------------------------------------------------------------------------- style judge


ARTISTS = ["Pablo Picasso", "Van Gogh", "Rembrandt"]


def art_spec(i, artist):
    return spec(i, f"a painting by {artist}", artist=artist, artist_candidates=ARTISTS, erased_artist="Van Gogh")


def test_style_accuracies_by_hand():
    from benchmarks.scorers.style import ClipStyleJudge

    specs = [
        art_spec(0, "Van Gogh"),
        art_spec(1, "Van Gogh"),
        art_spec(2, "Rembrandt"),
        art_spec(3, "Pablo Picasso"),
        art_spec(4, "Rembrandt"),
    ]
    raws = [{"predicted": p} for p in ("Van Gogh", "Rembrandt", "Rembrandt", "Van Gogh", "Rembrandt")]
    judge = ClipStyleJudge()
    assert judge.metric("acc-e").compute(raws, specs) == 0.5  # 1 of the 2 Van Gogh images still recognised
    assert judge.metric("acc-u").compute(raws, specs) == pytest.approx(2 / 3)  # Rembrandt ×2 right, Picasso wrong
    assert judge.metric("acc-e").lower_is_better and not judge.metric("acc-u").lower_is_better


def test_style_candidates_read_from_a_csv_cell_are_artists_not_letters():
    """An art benchmark's prompts exported by an attack and fed back with csv:path= carry their candidates as text."""
    from benchmarks.scorers.style import candidates_of

    from_file = spec(0, "a painting", artist="Van Gogh", artist_candidates="Pablo Picasso|Van Gogh|Rembrandt")
    assert candidates_of(from_file) == ARTISTS == candidates_of(art_spec(0, "Van Gogh"))


def test_style_judge_with_injected_tiny_clip(tiny_clip):
    from benchmarks.scorers.style import ClipStyleJudge

    judge = ClipStyleJudge(model=tiny_clip)
    specs = [art_spec(i, ARTISTS[i % 3]) for i in range(4)]
    raws = judge.score(images(4), specs)
    for raw in raws:
        assert raw["candidates"] == ARTISTS and raw["predicted"] in ARTISTS
        assert raw["predicted"] == ARTISTS[max(range(3), key=raw["probs"].__getitem__)]
    with pytest.raises(HarnessError, match="artist_candidates"):
        judge.score(images(1), [spec(0)])


# --------------------------------------------------------------------------- FID


class TinyInception:
    """An Inception-shaped stand-in: uint8 NCHW images of any size → 16-d pooled features."""

    def __new__(cls):
        import torch

        class Extractor(torch.nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.conv = torch.nn.Conv2d(3, 16, 3, stride=2)

            def forward(self, images):
                x = torch.nn.functional.interpolate(images.float() / 255.0, size=(64, 64), mode="bilinear", align_corners=False)
                return torch.tanh(self.conv(x)).mean(dim=(2, 3))

        return Extractor()


def noisy_images(count, seed, size=32):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def test_fid_with_injected_extractor():
    from benchmarks.scorers.fid import FidScorer

    scorer = FidScorer(feature_extractor=TinyInception())
    assert scorer.needs_reference and scorer.version != "1"
    specs = [spec(i) for i in range(24)]
    same = scorer.score_set(noisy_images(24, 1), noisy_images(24, 1), specs)
    assert same["fid"] == pytest.approx(0.0, abs=1e-2) and same["n"] == 24 and same["n_reference"] == 24
    plain = images(24)
    different = scorer.score_set(plain, noisy_images(24, 2), specs)
    assert different["fid"] > 0.1  # plain colours vs. noise: clearly apart (same sets give 0)
    metric = scorer.metric("fid")
    assert metric.lower_is_better and metric.compute([different], specs) == different["fid"]
    assert "antialias=False" in metric.description and "base model's images" in metric.description
    json.dumps(different)
    # images of several sizes (I2P mixes them) are batched per size
    mixed = noisy_images(3, 4, size=32) + noisy_images(3, 5, size=48)
    assert scorer.score_set(mixed, mixed, specs[:6])["fid"] == pytest.approx(0.0, abs=1e-2)
    with pytest.raises(HarnessError, match="at least 2 images"):
        scorer.score_set(plain[:1], plain[:1], specs[:1])


# --------------------------------------------------------------------------- end to end on the tiny backbone


def test_end_to_end_on_tiny_backbone(tmp_path, monkeypatch, tiny_clip, q16_prompts, capsys):
    """harness run with i2p-all (Q16), coco (FID + CLIP score) and art-vangogh (style) on the tiny pipeline.

    The first 4 art rows are 2 Picasso and 2 Van Gogh prompts, so both Acc_e and Acc_u are defined.
    """
    from benchmarks.scorers import fid
    from harness.cli import main

    monkeypatch.setenv("HARNESS_Q16_MODEL", tiny_clip)
    monkeypatch.setenv("HARNESS_Q16_PROMPTS", str(q16_prompts[0]))
    monkeypatch.setenv("HARNESS_CLIP_SCORE_B32_MODEL", tiny_clip)  # coco's CLIP-S is the ViT-B/32 scorer
    monkeypatch.setenv("HARNESS_STYLE_MODEL", tiny_clip)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(fid, "inception_extractor", lambda weights: TinyInception())
    monkeypatch.setattr(fid, "inception_weights", lambda weights: None)  # checked at plan time; the tiny one needs none
    benches = ",".join(
        [
            f"i2p-all:data={FIXTURES / 'i2p_sample.csv'},size=32",
            f"coco:data={FIXTURES / 'coco_sample.csv'},subset=4,size=32",
            f"art-vangogh:data={FIXTURES / 'art_famous_sample.csv'},size=32",
        ]
    )
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            ["run", "--model", "tiny", "--methods", "sd", "--bench", benches, "--limit", "4", "--out", str(out), "--no-progress"]
        )
        assert code == 0, capsys.readouterr().err
        capsys.readouterr()
        assert main(["report", "--out", str(out), "--json"]) == 0
    text = capsys.readouterr().out
    records = (
        json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    )
    values = {r["metric"]: r for r in records}
    assert values["q16:inappropriate"]["n"] == 4 and 0.0 <= values["q16:inappropriate"]["value"] <= 1.0
    assert values["fid:fid"]["value"] == pytest.approx(0.0, abs=1e-2)  # the base model against itself
    assert values["clip-score-b32:clip-score"]["value"] >= 0.0
    assert 0.0 <= values["style:acc-e"]["value"] <= 1.0 and 0.0 <= values["style:acc-u"]["value"] <= 1.0


# --------------------------------------------------------------------------- the same on a GPU


def test_scorers_on_cuda_match_cpu(tiny_clip, q16_prompts):
    """Device placement: every tensor a scorer makes follows ``device``; values agree with the CPU run."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from benchmarks.scorers.clip_score import ClipScorer
    from benchmarks.scorers.fid import FidScorer
    from benchmarks.scorers.q16 import Q16Scorer
    from benchmarks.scorers.style import ClipStyleJudge

    pictures = noisy_images(6, 3)
    specs = [art_spec(i, ARTISTS[i % 3]) for i in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedDataWarning)
        for device in ("cpu", "cuda"):
            q16 = Q16Scorer(device=device, model=tiny_clip, prompts_path=str(q16_prompts[0])).score(pictures, specs)
            clip = ClipScorer(device=device, model=tiny_clip).score(pictures, specs)
            style = ClipStyleJudge(device=device, model=tiny_clip).score(pictures, specs)
            fid = FidScorer(device=device, feature_extractor=TinyInception()).score_set(pictures, noisy_images(6, 4), specs)
            if device == "cpu":
                expected = (q16, clip, style, fid)
    assert [p for r in q16 for p in r["probs"]] == pytest.approx([p for r in expected[0] for p in r["probs"]], abs=1e-3)
    assert [r["clip_score"] for r in clip] == pytest.approx([r["clip_score"] for r in expected[1]], abs=1e-2)
    assert [r["predicted"] for r in style] == [r["predicted"] for r in expected[2]]
    assert fid["fid"] == pytest.approx(expected[3]["fid"], rel=1e-3, abs=1e-3)


# --------------------------------------------------------------------------- what a cached raw score is keyed by

LABEL_SCORER = '''
from harness.api import Metric, Scorer
from harness.hookspecs import hookimpl


class Tagger(Scorer):
    """Reads a prompt label into its raw output, as the style judge reads artist_candidates."""
    name = "tagger"
    raw_labels = ("tag",)

    def score(self, images, specs):
        return [{"tag": spec.labels["tag"]} for spec in specs]

    def metrics(self):
        return [Metric("is-b", "tag b", True, "fraction of images whose raw score read tag b",
                       per_image=lambda raw: float(raw["tag"] == "b"), unit="rate")]


@hookimpl
def register_scorers(register):
    register(Tagger)
'''


def test_a_raw_score_that_reads_prompt_labels_is_cached_per_label_value(tmp_path, capsys):
    """The style judge picks among each prompt's artist_candidates, and its raw score was cached per image (prompt and
    seed): an image labelled with another candidate list in a second benchmark was handed the first list's verdict."""
    from harness.cli import main
    from harness.store import Store

    plugin = tmp_path / "tagger.py"
    plugin.write_text(LABEL_SCORER)
    for tag in "ab":
        (tmp_path / f"{tag}.csv").write_text(f"prompt,evaluation_seed,tag\na cat,1,{tag}\na dog,2,{tag}\n")
    bench = ",".join(f"csv:path={tmp_path / f'{tag}.csv'},metrics=tagger:is-b" for tag in "ab")
    code = main(["--plugin", str(plugin), "run", "--model", "tiny", "--methods", "sd", "--bench", bench, "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    values = {Path(r["benchmark"].split("path=")[1]).stem: r["value"] for r in Store(tmp_path / "out").results()}
    assert values == {"a": 0.0, "b": 1.0}  # the same two images, judged with each benchmark's labels


def test_toy_scorers_version_their_cached_scores_by_their_weights(tmp_path, monkeypatch):
    """A classifier retrained in place leaves the images (and their keys) as they were: the scores must not be."""
    import shutil

    from benchmarks.toyworld.paths import WEIGHTS_DIR, WEIGHTS_ENV
    from benchmarks.toyworld.scorer import DETECTOR_FILE, SHAPE_CLASSIFIER_FILE, STYLE_CLASSIFIER_FILE, ToyFID, ToyScorer

    for name in (DETECTOR_FILE, SHAPE_CLASSIFIER_FILE, STYLE_CLASSIFIER_FILE):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    before = ToyScorer("cpu").version, ToyFID("cpu").version
    assert before == (ToyScorer("cpu").version, ToyFID("cpu").version)
    with open(tmp_path / STYLE_CLASSIFIER_FILE, "ab") as handle:
        handle.write(b" ")  # the style classifier only: the FID features are the shape classifier's
    assert ToyScorer("cpu").version != before[0] and ToyFID("cpu").version == before[1]
    with open(tmp_path / SHAPE_CLASSIFIER_FILE, "ab") as handle:
        handle.write(b" ")
    assert ToyFID("cpu").version != before[1]


def test_fid_versions_its_cached_scores_by_the_weights_file(tmp_path):
    from benchmarks.scorers.fid import FidScorer

    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"first weights")
    first = FidScorer(weights=str(weights)).version
    weights.write_bytes(b"other weights")
    assert FidScorer(weights=str(weights)).version != first and first.startswith("1+weights-")
    assert FidScorer().version == "1"  # the published file, downloaded, as a local copy of it would be


def test_the_style_judge_keys_its_verdicts_by_the_candidates_it_chose_among():
    from benchmarks.scorers.style import ClipStyleJudge

    judge = ClipStyleJudge(model="unused-model-name")  # nothing is loaded
    spec = lambda candidates: PromptSpec("0", "a painting", 1, labels={"artist_candidates": candidates})  # noqa: E731
    assert judge.raw_version(spec(["Van Gogh", "Picasso"])) == judge.raw_version(spec("Van Gogh|Picasso"))
    assert judge.raw_version(spec(["Van Gogh", "Picasso"])) != judge.raw_version(spec(["Van Gogh", "Rembrandt"]))


def test_clip_scorers_version_a_local_model_folder_by_its_files(tmp_path, tiny_clip):
    """The version named the folder: CLIP weights replaced in place kept every cached verdict of the old ones."""
    import os
    import shutil

    from benchmarks.scorers.clip_score import ClipScorer as ClipScore
    from benchmarks.scorers.style import ClipStyleJudge

    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip, folder)
    before = ClipScore(model=str(folder)).version, ClipStyleJudge(model=str(folder)).version
    assert before == (ClipScore(model=str(folder)).version, ClipStyleJudge(model=str(folder)).version)
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten a second later
    assert ClipScore(model=str(folder)).version != before[0] and ClipStyleJudge(model=str(folder)).version != before[1]
    assert ClipScore(model="openai/clip-vit-base-patch32").version == "1+openai/clip-vit-base-patch32"  # hub ids as before

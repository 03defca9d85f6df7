"""SafeGen's maths on the tiny backbone: the trained group, the mosaic target, the weight average, the loss, the data."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api import ConceptSet, HarnessError
from harness.cli import main
from methods.finetune import WeightAverage, parameter_group, train, trainable_copy
from methods.safegen import SafeGen, mosaic_target, read_triplets

PLUGINS = Path(__file__).parent / "plugins"
CONCEPTS = ConceptSet(name="tiny-nudity", erase=("nudity",), guides=(" ",))
QUICK = dict(steps=3, gradient_accumulation=2)


def write_image(path: Path, colour, side: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((side, side, 3), 245, dtype=np.uint8)
    array[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = colour
    Image.fromarray(array).save(path)


def write_triplets(folder: Path, count: int = 4, layout: str = "meta") -> Path:
    """``count`` triplets: a red square, the same square flattened to its mean (a crude mosaic), a blue square."""
    rows = ["nude_image_path,mos_image_path,norm_image_path,text"]
    for k in range(count):
        names = {"unsafe": f"{k}.png", "mosaic": f"{k}.png", "safe": f"{k}.png"}
        if layout == "meta":
            names = {role: f"images/{k}_{role}.png" for role in names}
            rows.append(f"{names['unsafe']},{names['mosaic']},{names['safe']},")
        for role, colour in (("unsafe", (220, 30 + k, 30)), ("mosaic", (235, 170, 170)), ("safe", (30, 60, 220))):
            write_image(folder / (names[role] if layout == "meta" else f"{role}/{names[role]}"), colour)
    if layout == "meta":
        (folder / "meta.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def weights(pipe) -> dict:
    return {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}


# --------------------------------------------------------------------------- the trained group


def test_only_self_attention_changes_and_the_result_is_the_moving_average(pipe, ctx, tmp_path):
    folder = write_triplets(tmp_path / "triplets")
    before = weights(pipe)
    metadata = SafeGen(SafeGen.Params(triplets=str(folder), **QUICK)).edit(pipe, CONCEPTS, ctx)
    after = weights(pipe)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    attn1 = {name for name, _ in pipe.unet.named_parameters() if ".attn1." in f".{name}."}
    assert changed == attn1 == set(parameter_group(pipe.unet, "self-attention"))
    assert metadata["trainable_group"] == "self-attention" and metadata["steps"] == 3 and metadata["micro_steps"] == 6
    assert metadata["triplets_used"] == 4 and metadata["result"] == "moving average of the weights"
    assert metadata["quirks"] == {"unscaled_mosaic_target": False}
    assert set(metadata["training"]["mean_losses"]) == {"loss", "mosaic", "preserve"}
    json.dumps(metadata)

    # The same run without the average ends elsewhere: what was written back is the average, not the last iterate.
    pipe.unet.load_state_dict(before)
    SafeGen(SafeGen.Params(triplets=str(folder), ema=False, **QUICK)).edit(pipe, CONCEPTS, ctx)
    last_iterate = weights(pipe)
    assert any(not torch.equal(after[name], last_iterate[name]) for name in attn1)


# --------------------------------------------------------------------------- the mosaic target


def test_the_default_target_denoises_the_unsafe_latent_exactly_to_the_mosaic_latent(tiny):
    generator = torch.Generator().manual_seed(0)
    unsafe, mosaic, noise = (torch.randn(3, 4, 8, 8, generator=generator) for _ in range(3))
    alphas_cumprod = tiny.scheduler.alphas_cumprod
    t = torch.tensor([5, 400, 990])
    alpha_bar = alphas_cumprod[t]
    a = alpha_bar.sqrt().view(-1, 1, 1, 1)
    s = (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
    noisy = a * unsafe + s * noise

    target = mosaic_target(noise, unsafe, mosaic, alpha_bar, unscaled=False)
    # x̂₀ from the DDPM identity, computed independently of mosaic_target: it is the mosaic latent
    torch.testing.assert_close((noisy - s * target) / a, mosaic, rtol=1e-4, atol=1e-4)

    official = mosaic_target(noise, unsafe, mosaic, alpha_bar, unscaled=True)
    torch.testing.assert_close(official, unsafe - mosaic + noise)  # the code's `latents - mos_latents + noise`
    # ... which reaches the mosaic only where √ᾱ = √(1−ᾱ): away from it, the estimate misses by (1 − √ᾱ/√(1−ᾱ))·Δ
    missed = ((noisy - s * official) / a - mosaic).flatten(1).norm(dim=1) / (unsafe - mosaic).flatten(1).norm(dim=1)
    expected = (1 - s / a).abs().flatten()
    torch.testing.assert_close(missed, expected, rtol=1e-4, atol=1e-4)
    assert expected[0] > 0.9 and expected[2] > 5  # small t: almost no edit; large t: an overshoot


def test_preset_official_turns_on_the_unscaled_target(registry, tmp_path):
    from harness.runner import expand_method
    from harness.spec import parse_selections

    folder = write_triplets(tmp_path / "t")
    (item,) = parse_selections(f"safegen:preset=official,triplets={folder}", "--methods")
    ((method, _),) = expand_method(registry, item[0], {}, "safegen")
    assert method.params.unscaled_mosaic_target is True
    assert (method.params.weight_mosaic, method.params.weight_preserve) == (0.1, 0.9)  # the intended weights


# --------------------------------------------------------------------------- the weight average


def test_weight_average_follows_diffusers_ema_schedule_and_values():
    from diffusers.training_utils import EMAModel

    assert WeightAverage.decay(1, 0.9999) == 0.0  # the first update copies the weights
    assert WeightAverage.decay(2, 0.9999) == pytest.approx(2 / 11)
    assert WeightAverage.decay(1000, 0.9999) == pytest.approx(1000 / 1009)
    assert WeightAverage.decay(10**6, 0.9999) == 0.9999  # capped

    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5))
    frozen = torch.nn.Parameter(torch.randn(2), requires_grad=False)
    ours = WeightAverage([weight], max_decay=0.9)
    reference = EMAModel([weight, frozen], decay=0.9)  # diffusers' own implementation, as the official script uses it
    for _ in range(40):
        with torch.no_grad():
            weight.add_(torch.randn(5))
        ours.update()
        reference.step([weight, frozen])
    torch.testing.assert_close(ours.shadow[0], reference.shadow_params[0], rtol=1e-6, atol=1e-6)
    ours.copy_to_weights()
    torch.testing.assert_close(weight.detach(), reference.shadow_params[0], rtol=1e-6, atol=1e-6)


def test_accumulation_averages_micro_gradients_and_clipping_bounds_the_step():
    weight = torch.zeros(2, requires_grad=True)
    micro_gradients = [torch.tensor([1.0, 0.0]), torch.tensor([3.0, 4.0])]
    optimizer = torch.optim.SGD([weight], lr=1.0)
    history = train(lambda m: {"loss": (weight * micro_gradients[m % 2]).sum()}, optimizer, 1, accumulation=2)
    torch.testing.assert_close(weight.detach(), -torch.tensor([2.0, 2.0]))  # one step along the mean gradient
    assert history["last_losses"]["loss"] == 0.0  # both micro-losses were taken at w = 0

    weight = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=1.0)
    train(lambda m: {"loss": (weight * torch.tensor([30.0, 40.0])).sum()}, optimizer, 1, max_grad_norm=1.0)
    torch.testing.assert_close(weight.detach(), -torch.tensor([0.6, 0.8]))  # gradient 50 long, clipped to 1


# --------------------------------------------------------------------------- the loss falls


def test_the_loss_falls_on_fixed_draws(tiny, ctx, tmp_path):
    folder = write_triplets(tmp_path / "triplets")
    method = SafeGen(SafeGen.Params(triplets=str(folder), lr=3e-3, ema=False, gradient_accumulation=1, steps=30))
    student = trainable_copy(tiny.unet, parameter_group(tiny.unet, "self-attention"))
    training = method.prepare(tiny, CONCEPTS, ctx, student)

    def fixed_loss() -> float:  # the same 12 micro-steps (triplets, t, noises, posterior draws) before and after
        with torch.no_grad():
            return sum(float(training.step_losses(m)["loss"]) for m in range(12)) / 12

    start = fixed_loss()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    train(training.step_losses, optimizer, training.steps)
    # Measured: 1.155 → 1.020.  Most of the loss is noise the tiny random UNet's self-attention cannot predict.
    assert fixed_loss() < 0.95 * start


# --------------------------------------------------------------------------- the folder


def test_both_layouts_read_the_same_triplets(tmp_path):
    meta = read_triplets(write_triplets(tmp_path / "meta", count=3))
    sub = read_triplets(write_triplets(tmp_path / "sub", count=3, layout="subfolders"))
    assert len(meta) == len(sub) == 3
    for a, b in zip(meta, sub):
        assert [Image.open(p).getpixel((16, 16)) for p in a] == [Image.open(p).getpixel((16, 16)) for p in b]


def break_column(folder):
    (folder / "meta.csv").write_text("nude_image_path,norm_image_path\na.png,b.png\n")


def break_cell(folder):
    (folder / "meta.csv").write_text("nude_image_path,mos_image_path,norm_image_path\nimages/0_unsafe.png,,images/0_safe.png\n")


def break_file(folder):
    (folder / "images" / "1_mosaic.png").unlink()


def break_layout(folder):
    (folder / "meta.csv").unlink()


def break_rows(folder):
    (folder / "meta.csv").write_text("nude_image_path,mos_image_path,norm_image_path\n")


@pytest.mark.parametrize(
    "damage, says",
    [
        (break_column, "lacks column(s) mos_image_path"),
        (break_cell, "line 2 has an empty image path"),
        (break_file, "1_mosaic.png does not exist"),
        (break_layout, "has neither meta.csv nor unsafe/, mosaic/, safe/"),
        (break_rows, "lists no triplets"),
    ],
)
def test_a_malformed_folder_is_one_line_at_parameter_time(tmp_path, damage, says):
    folder = write_triplets(tmp_path / "t")
    damage(folder)
    with pytest.raises(HarnessError) as error:
        SafeGen.Params(triplets=str(folder))
    assert says in str(error.value) and "\n" not in str(error.value)


def test_unmatched_subfolder_names_are_refused(tmp_path):
    folder = write_triplets(tmp_path / "t", count=2, layout="subfolders")
    (folder / "safe" / "1.png").rename(folder / "safe" / "9.png")
    with pytest.raises(HarnessError, match="not in all of unsafe, mosaic, safe"):
        read_triplets(folder)


def test_without_triplets_the_run_stops_with_one_line_naming_the_layout(tmp_path, capsys):
    code = main(["--plugin", str(PLUGINS / "brightness.py"), "run", "--model", "tiny", "--methods", "safegen",
                 "--bench", "fixed:count=1", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "triplets=DIR" in err and "meta.csv" in err and "nude_image_path" in err


def test_the_cache_key_follows_the_folder_content(tmp_path):
    folder = write_triplets(tmp_path / "t")
    before = SafeGen(SafeGen.Params(triplets=str(folder))).params_dict()
    write_image(folder / "images" / "0_safe.png", (40, 170, 50))
    after = SafeGen(SafeGen.Params(triplets=str(folder))).params_dict()
    assert before["triplets"] == after["triplets"] and before["triplets_sha256"] != after["triplets_sha256"]


# --------------------------------------------------------------------------- composition with a text-side method


def test_safegen_composes_with_sld(tmp_path, capsys):
    folder = write_triplets(tmp_path / "triplets")
    out = str(tmp_path / "out")
    common = ["--plugin", str(PLUGINS / "brightness.py")]
    code = main([*common, "run", "--model", "tiny", "--methods", "safegen,sld:strength=max,safegen+sld:strength=max",
                 "--set", f"safegen.triplets={folder}", "--set", "safegen.steps=2", "--set", "safegen.lr=1e-3",
                 "--bench", "fixed:count=2", "--out", out, "--no-progress"])
    assert code == 0
    capsys.readouterr()
    assert main([*common, "report", "--out", out, "--json"]) == 0
    records = [r for r in json.loads(capsys.readouterr().out) if r["metric"] == "brightness:mean"]
    # --set values are part of a method's label, as if written beside the name
    given = f"safegen:lr=1e-3,steps=2,triplets={folder}"
    assert {r["method"] for r in records} == {given, "sld:strength=max", f"{given}+sld:strength=max"}
    cost = {r["method"].replace(given, "safegen"): r["unet_evals_per_image"] for r in records}
    value = {r["method"].replace(given, "safegen"): r["value"] for r in records}
    steps = 4  # the tiny backbone's default
    assert cost == {"safegen": 2 * steps, "sld:strength=max": 3 * steps, "safegen+sld:strength=max": 3 * steps}
    # both parts really apply: the composition's images differ from either part's alone
    assert value["safegen+sld:strength=max"] not in (value["safegen"], value["sld:strength=max"])


def test_the_student_is_not_the_pipeline_unet(tiny, ctx, tmp_path):
    """prepare reads the pipeline's VAE and text encoder but trains only the copy it is given."""
    folder = write_triplets(tmp_path / "triplets", count=2)
    before = copy.deepcopy(tiny.unet.state_dict())
    student = trainable_copy(tiny.unet, parameter_group(tiny.unet, "self-attention"))
    training = SafeGen(SafeGen.Params(triplets=str(folder), gradient_accumulation=1)).prepare(tiny, CONCEPTS, ctx, student)
    training.step_losses(0)["loss"].backward()
    assert all(torch.equal(before[name], tensor) for name, tensor in tiny.unet.state_dict().items())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- the toy world's triplets


def test_the_committed_toy_triplets_are_what_the_generator_draws_and_the_toy_presets_them(registry):
    from benchmarks.toyworld.backbone import ToyBackbone
    from benchmarks.toyworld.make_safegen_triplets import TRIPLETS_DIR
    from benchmarks.toyworld.make_safegen_triplets import main as make_triplets
    from harness.runner import expand_method
    from harness.spec import Selection

    assert make_triplets(["--check"]) == 0  # deterministic, seeded: the committed PNGs are the generator's
    triplets = read_triplets(TRIPLETS_DIR)
    assert len(triplets) == 100 and all(p.parent.name == role for t in triplets for p, role in zip(t, ("unsafe", "mosaic", "safe")))
    ((method, _),) = expand_method(registry, Selection("safegen", {}), {}, "safegen", backbone=ToyBackbone())
    assert Path(method.params.triplets) == TRIPLETS_DIR and method.presets_applied == {"backbone_preset": "toy"}
    method.check_resolved()  # the toy needs no triplets=


def test_toy_mosaics_mix_the_red_fill_with_its_background():
    """The mosaic is the analogue of a censored image: the detector finds red in every unsafe image, in few mosaics."""
    from benchmarks.toyworld import world
    from benchmarks.toyworld.make_safegen_triplets import triplet_images
    from benchmarks.toyworld.models import ColourDetector

    unsafe, mosaic, safe = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 for images in triplet_images())
    detector, red = ColourDetector(), world.colours().index("red")
    assert (detector(unsafe) == red).all()
    assert (detector(mosaic) == red).float().mean() <= 0.05  # measured: 1 of 100 (a large square fills a whole block)
    assert not (detector(safe) == red).any()

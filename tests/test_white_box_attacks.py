"""UnlearnDiffAtk and P4D on the tiny pipeline: each lowers its own objective on a fixed seed (the objective
measured on fixed (t, ε) probe draws before and after the search), the base model's target comes from the
unedited components, and through ``harness run --attack`` each returns one prompt per source prompt with the
same id, seed and guidance, cached (a second run does zero attack steps and zero UNet calls)."""

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks.attacks import prompt_tuning as pt
from benchmarks.attacks.p4d import P4D, nearest_tokens
from benchmarks.attacks.unlearndiffatk import UnlearnDiffAtk, project_to_simplex, straight_through
from harness.api import ConceptSet, PromptSpec
from harness.attacking import AttackContext
from harness.plugins import PluginHost
from harness.registry import Registry
from harness.runner import RunConfig, Runner, describe_plan, plan
from harness.spec import Selection

CONCEPTS = ConceptSet(name="colours", erase=("red",))
SPEC = PromptSpec(id="0", prompt="a red circle", seed=7, steps=4)
PLUGINS = Path(__file__).parent / "plugins"


def search(tiny, cls, spec=SPEC, show_progress=False, **params):
    base = {"unet": copy.deepcopy(tiny.unet).requires_grad_(False), "text_encoder": copy.deepcopy(tiny.text_encoder).requires_grad_(False)}
    attack = cls(cls.Params(**params))
    ctx = AttackContext(show_progress=show_progress, base_component=base.__getitem__)
    attack.prepare(tiny, CONCEPTS, ctx)
    ctx._spec_seed = spec.seed
    return attack.attack(tiny, CONCEPTS, spec, ctx), ctx


def test_simplex_projection():
    v = torch.tensor([[0.5, 0.2, 0.9], [2.0, -1.0, 0.0], [0.3, 0.3, 0.4]])
    z = project_to_simplex(v)
    assert torch.allclose(z.sum(-1), torch.ones(3)) and (z >= 0).all()
    assert torch.allclose(z[1], torch.tensor([1.0, 0.0, 0.0])) and torch.allclose(z[2], v[2])  # a point on the simplex stays
    assert torch.allclose(z[0], torch.tensor([0.3, 0.0, 0.7]), atol=1e-6)  # θ = 0.2: (0.5−0.2, 0, 0.9−0.2)


def test_unlearndiffatk_moves_off_the_simplex_centre_and_beats_a_random_prefix(tiny):
    found, ctx = search(tiny, UnlearnDiffAtk)  # the defaults: 40 Adam steps of 0.01 from the uniform point
    assert ctx.steps == 40
    assert found.loss < found.details["random_prefix_loss"]
    # At the centre every token ties and argmax would pick the first allowed one in every slot.
    vocabulary = pt.allowed_tokens(tiny.tokenizer).tolist()
    assert len(found.token_ids) == 5 and len(set(found.token_ids)) > 1 and set(found.token_ids) != {vocabulary[0]}
    assert found.text == f"{tiny.tokenizer.decode(list(found.token_ids)).strip()} {SPEC.prompt}"


def test_unlearndiffatk_grid_visits_the_official_timesteps_in_order(tiny):
    attack = UnlearnDiffAtk(UnlearnDiffAtk.Params(timesteps="grid", iterations=2))
    schedule = attack.schedule(1000)
    assert schedule[:4] == [10, 10, 30, 30] and schedule[-1] == 990 and len(schedule) == 100  # 50 timesteps × 2
    found, ctx = search(tiny, UnlearnDiffAtk, timesteps="grid", grid_points=3, iterations=2)
    assert ctx.steps == 6


def test_the_straight_through_draw_passes_a_clipped_gradient_to_z():
    z = torch.full((2, 3), 1 / 3, requires_grad=True)
    one_hot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = straight_through()(z, one_hot)
    assert torch.equal(out, one_hot)
    (gradient,) = torch.autograd.grad((out * torch.tensor([[3.0, -0.5, 0.0], [-2.0, 0.25, 1.0]])).sum(), z)
    assert torch.equal(gradient, torch.tensor([[1.0, -0.5, 0.0], [-1.0, 0.25, 1.0]]))


def test_p4d_lowers_its_matching_loss(tiny):
    found, ctx = search(tiny, P4D, iterations=30, tokens=4)
    assert ctx.steps == 30
    assert found.loss < found.details["loss_first"]
    assert len(found.token_ids) == 4 and found.text == tiny.tokenizer.decode(list(found.token_ids)).strip()


@pytest.mark.parametrize("cls, name", [(UnlearnDiffAtk, "unlearndiffatk"), (P4D, "p4d")])
def test_each_prompt_shows_its_iterations_in_a_progress_bar(tiny, capsys, cls, name):
    search(tiny, cls, show_progress=True, iterations=3)
    shown = capsys.readouterr().err
    assert f"{name} iterations" in shown and "/3" in shown  # a bar over this prompt's 3 iterations
    search(tiny, cls, iterations=3)
    assert capsys.readouterr().err == ""  # --no-progress shows none


def test_p4d_k_puts_a_learned_token_before_each_group_of_k_prompt_tokens(tiny):
    short = PromptSpec(id="0", prompt="a red", seed=7, steps=4)  # short enough that nothing is truncated
    found, _ = search(tiny, P4D, spec=short, iterations=2, variant="k", every=2)
    words = tiny.tokenizer(short.prompt, add_special_tokens=False).input_ids
    learned = found.details["learned_tokens"]
    assert len(learned) == len(words) // 2 + 1  # the official count, one more than "after every K-th"
    expected, remaining = [], iter(words)
    for index in range(len(words) + len(learned)):
        expected.append(learned[index // 3] if index % 3 == 0 else next(remaining))
    assert list(found.token_ids) == expected
    # A prompt shorter than K still gets its learned token (the first), so the search has something to move.
    tiny_prompt = PromptSpec(id="1", prompt="a", seed=7, steps=4)
    found, _ = search(tiny, P4D, spec=tiny_prompt, iterations=2, variant="k", every=5)
    assert len(found.details["learned_tokens"]) == 1 and found.token_ids[1:] == tuple(tiny.tokenizer("a", add_special_tokens=False).input_ids)


def test_p4d_projects_by_cosine_so_every_token_maps_onto_itself():
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(50, 8, generator=generator) * torch.linspace(0.1, 3.0, 50)[:, None]  # very different lengths
    assert torch.equal(nearest_tokens(table, table), torch.arange(50))
    assert not torch.equal((table @ table.T).argmax(dim=-1), torch.arange(50))  # a dot product would not


@pytest.mark.parametrize("cls", [UnlearnDiffAtk, P4D])
def test_white_box_attacks_run_on_a_half_precision_pipeline(tiny, cls):
    half = copy.deepcopy(tiny).to(torch.bfloat16)
    found, ctx = search(half, cls, iterations=2, probes=1)
    assert ctx.steps == 2 and math.isfinite(found.loss)


def test_p4d_reference_is_the_base_model(tiny):
    """With the erased model equal to the base model, the initial tokens already differ from P, but the reference
    is the base model on P: replacing the base UNet by a different one changes the objective."""
    first, _ = search(tiny, P4D, iterations=1, tokens=4)
    other = copy.deepcopy(tiny.unet)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(1.5)
    attack = P4D(P4D.Params(iterations=1, tokens=4))
    ctx = AttackContext(show_progress=False, base_component={"unet": other, "text_encoder": tiny.text_encoder}.__getitem__)
    attack.prepare(tiny, CONCEPTS, ctx)
    ctx._spec_seed = SPEC.seed
    second = attack.attack(tiny, CONCEPTS, SPEC, ctx)
    assert second.details["loss_first"] != pytest.approx(first.details["loss_first"])


def test_run_returns_one_cached_prompt_per_source(tmp_path):
    registry = Registry(PluginHost([str(PLUGINS / "brightness.py"), str(PLUGINS / "edits.py")]))
    attacks = "unlearndiffatk:iterations=2,target_steps=2,probes=1,p4d:iterations=2,tokens=3,target_steps=2,probes=1"

    def run():
        config = RunConfig(methods="sd,scale-keys", bench="fixed:count=3", model="tiny", out=str(tmp_path), show_progress=False, attacks=attacks)
        runner = Runner(plan(config, registry))
        runner.execute()
        return runner

    first = run()
    sources = {(r["method"], json.loads(r["spec"])["id"]): json.loads(r["spec"]) for r in first.store.run_images(first.plan.run_id)
               if r["benchmark"] == "fixed:count=3"}
    for record in first.attack_log:
        assert record["found_now"] == 3 and record["cost_now"]["attack_steps"] == 6
        assert record["cost_now"]["unet_evals"] > 0 and record["cost_now"]["text_encoder_evals"] > 0
    for attack in ("unlearndiffatk", "p4d"):
        rows = [json.loads(r["spec"]) for r in first.store.run_images(first.plan.run_id) if r["benchmark"].startswith(attack) and r["benchmark"].endswith("(fixed:count=3)")]
        assert len(rows) == 6  # 3 prompts × 2 methods
        for spec in rows:
            source = next(s for (m, i), s in sources.items() if i == spec["id"])
            assert (spec["seed"], spec["guidance"]) == (source["seed"], source["guidance"])
            assert spec["labels"]["source_prompt"] == source["prompt"] and spec["labels"]["attack"].startswith(attack)
    second = run()
    assert second.engine.unet_calls == 0
    assert all(r["found_now"] == 0 and r["cost_now"]["attack_steps"] == 0 and r["cost_now"]["unet_evals"] == 0 for r in second.attack_log)


def plan_with(tmp_path, **options):
    registry = Registry(PluginHost([str(PLUGINS / "brightness.py"), str(PLUGINS / "edits.py")]))
    return plan(RunConfig(bench="fixed:count=1", model="tiny", out=str(tmp_path), show_progress=False, **{"methods": "sd", **options}), registry)


@pytest.mark.parametrize("attack, budget, changed, steps", [
    ("unlearndiffatk:timesteps=grid,grid_points=5", 12, {"iterations": "2"}, 10),  # 40 steps per grid point: 2 fit
    ("unlearndiffatk:timesteps=grid,grid_points=5", 3, {"iterations": "1", "grid_points": "3"}, 3),  # under one per point
    ("unlearndiffatk:timesteps=grid", 100, {"iterations": "2"}, 100),  # the official 50 points
    ("unlearndiffatk:timesteps=grid,grid_points=5,iterations=2", 10, {}, 10),  # already within the budget
    ("unlearndiffatk", 7, {"iterations": "7"}, 7),
])
def test_attack_budget_caps_unlearndiffatks_steps_per_prompt(tiny, tmp_path, attack, budget, changed, steps):
    """--attack-budget N is at most N steps per prompt, also under the grid schedule (iterations at each grid point)."""
    (planned,) = plan_with(tmp_path, attacks=attack, attack_budget=budget).attacks
    params = planned.attack.params
    name, _, given = attack.partition(":")
    expected = dict(item.split("=") for item in given.split(",") if item)
    assert planned.label == Selection(name, {**expected, **changed}).label()  # a capped search is a cell of its own
    assert len(planned.attack.schedule(1000)) == steps <= budget
    if steps <= 10:  # the search itself spends what the schedule says (100 steps on tiny: seconds better spent elsewhere)
        found, ctx = search(tiny, UnlearnDiffAtk, **{**dataclasses.asdict(params), "target_steps": 2, "probes": 1})
        assert ctx.steps == steps


def test_plan_says_which_methods_attacks_cannot_see(tmp_path):
    """Sampling-time erasure is not in the model an attack searches: the plan notes it per method, the cell's record
    lists the unseen parts."""
    planned = plan_with(tmp_path, methods="sd,scale-keys,adavd,spm,scale-keys+sld", attacks="unlearndiffatk,p4d")
    (note,) = [line for line in describe_plan(planned).splitlines() if "note:" in line]
    assert "unlearndiffatk, p4d cannot see that of adavd, spm, scale-keys+sld (sld)" in note
    assert "sd," not in note and "scale-keys," not in note
    assert not any("note:" in line for line in describe_plan(plan_with(tmp_path, methods="sd,scale-keys", attacks="p4d")).splitlines())
    runner = Runner(plan_with(tmp_path, methods="sd,adavd", attacks="unlearndiffatk:iterations=1,target_steps=1,probes=1"))
    runner.execute()
    assert {r["method"]: r["unseen_by_search"] for r in runner.attack_log} == {"sd": [], "adavd": ["adavd"]}

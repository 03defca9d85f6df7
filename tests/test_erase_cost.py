"""The erasure's cost is recorded when it is computed: wall time, device, and the model evaluations it made."""

import copy
from pathlib import Path

import torch

from harness.cli import main
from harness.cost import counted_evaluations
from harness.store import Store
from reports import leaderboard

BRIGHTNESS = str(Path(__file__).parent / "plugins" / "brightness.py")


def test_every_unet_and_text_encoder_forward_is_counted_even_on_a_copy(tiny):
    ids = tiny.tokenizer(["a red circle", "a cat"], padding="max_length", max_length=tiny.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    frozen = copy.deepcopy(tiny.unet)  # methods keep frozen copies of the original UNet: they cost evaluations too
    with torch.no_grad(), counted_evaluations() as counts:
        states = tiny.text_encoder(ids)[0]
        latents = torch.zeros(2, tiny.unet.config.in_channels, 8, 8)
        tiny.unet(latents, 10, encoder_hidden_states=states)
        frozen(latents, 10, encoder_hidden_states=states)
    assert counts == {"unet": 2, "text_encoder": 1}
    with torch.no_grad():
        tiny.text_encoder(ids)
    assert counts == {"unet": 2, "text_encoder": 1}  # nothing is counted once the block is left


def test_a_closed_form_erasure_records_its_cost_and_the_leaderboard_shows_it(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["--plugin", BRIGHTNESS, "run", "--model", "tiny", "--methods", "sd,uce", "--bench", "fixed:count=2", "--out", out,
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    store = Store(out)
    board = leaderboard.build(store.results())
    uce = next(row for row in board.rows if row.method == "uce")
    # UCE embeds its concept prompts (text encoder) and never runs the UNet.
    assert uce.erase_seconds > 0 and uce.erase_device == "cpu" and uce.erase_unet_evals == 0 and uce.erase_text_encoder_evals > 0
    assert f"{uce.erase_unet_evals} UNet / {uce.erase_text_encoder_evals} TE evals" in printed

"""Backbone ``toy``: the trained toy-world pipeline (DDIM, 20 steps, 32 px)."""

from __future__ import annotations

from benchmarks.toyworld.make_safegen_triplets import TRIPLETS_DIR
from benchmarks.toyworld.paths import require_weights, weights_dir
from harness.api import Backbone
from harness.backbones import load_sd_pipeline
from harness.lazy import folder_identity


class ToyBackbone(Backbone):
    name = "toy"
    description = "the toy world: a tiny SD-architecture model trained here on coloured shapes (DDIM 20 steps, 32 px)"
    default_model = str(weights_dir())  # $HARNESS_TOY_WEIGHTS when set (read at import, as the CLI starts)
    steps = 20
    batch_size = 32  # measured on 2 CPU cores: 400 images in 35 s at 32 against 58 s at 8 (per-call overhead)
    height = 32
    width = 32
    max_size = 256  # trained at 32 px; far larger images only cost time
    # The toy preset (shown as "toy preset" in the provenance column; --set and name:param=value still override it).
    # The paper learning rates were set for SD v1.4, whose attention layers are 320–1280 wide; the toy UNet is 32–64
    # wide, so the same lr barely moves it (trce-v at 1e-6 left toy-implicit red at 95%, the base model's; esd-u at
    # 1e-5 likewise).  Chosen on toy-implicit and toy-preserve (100 prompts each), never on the held-out set; the
    # table is in tests/test_toy_finetune.py.  The regulariser pool is capped at 300 unconditional samples (A.3:
    # 2000, read cyclically either way), which cuts trajectory sampling about fourfold; on all 200 toy-preserve
    # prompts trce keeps 89.5% of colours with it and 87.0% with 2000 (sd 97.0%), so the cap costs no preservation.  AdaVD's b = 0.93 was
    # calibrated on SD's CLIP: the toy's value cosines are 0.3–0.8, so at 0.93 AdaVD is the identity (99% red);
    # b = 0.6 is the one other value tried (tests/test_toy_sampling_time.py).
    method_presets = {
        "trce-v": {"lr": 3e-5, "regularizer_samples": 300},
        "esd-u": {"lr": 1e-4},
        # esd-x trains only the cross-attention (fewer, equally narrow weights): the same factor of 10 over the paper's
        # 1e-5, by the argument above, not tuned on any benchmark.
        "esd-x": {"lr": 1e-4},
        "adavd": {"shift_b": 0.6},
        # SPM: the paper's 3000 iterations at lr 1e-4 cost ~1 h here (each iteration samples x with up to 29 DDIM
        # steps); 100 iterations (warm-up 17, the paper's 1/6) on the toy's own 20-step schedule take 1.5–3 min on
        # 2 loaded cores.  At 100 iterations, toy-implicit red / toy-preserve acc (64 prompts each; sd 94% / 95%):
        # lr 2e-2 95% / 95% (no effect), 3e-2 48% / 64%, 5e-2 14% / 42%, 1e-1 0% / 6%; lr 1e-2 and 3e-3 with 30 steps
        # 91% / 94% and 94% / 95%; 400 iterations (warm-up 67) at 5e-3 and 1e-2 92% / 94% and 92% / 95%, 4.8 min
        # loaded.  3e-2 is the lowest that erases, but from 2e-2 on the loss does not fall over the run (3e-2: mean
        # 22.7, last 25.4; the anchoring term grows), while it does at ≤ 1e-2 (400 at 1e-2: mean 2.08, last 0.037):
        # on the toy the membrane erases by drifting, not by converging (README footnote ⁴).  Implicit prompts get
        # γ ≈ 0.5 (mean; preserve 0.37).
        "spm": {"iterations": 100, "warmup": 17, "lr": 3e-2, "num_steps": 20},
        # SafeGen's triplets are not released; the toy's own (red shape, its 16-px mosaic, the shape in another
        # colour) are drawn by make_safegen_triplets.py, so `--methods safegen` needs no --set on this backbone.
        # lr and steps, measured on the first 32 toy-implicit / toy-preserve prompts (sd: 94% red / 100% acc): the
        # paper's lr 1e-5 × 1000 steps (5 micro-batches each) 78% / 78%, 2.9 min on 2 idle cores (up to ~12 min on
        # loaded ones); at 200 steps, lr 1e-4 66% / 69%, 3e-4 47% / 59%, 1e-3 19% / 62% (1.9–2.3 min loaded).
        "safegen": {"triplets": str(TRIPLETS_DIR), "lr": 1e-3, "steps": 200},
    }

    # Ring-A-Bell's paper setting (population 200, 3000 generations, η = 3) costs ~600 000 text-encoder passes per
    # prompt: ~55 min for 32 prompts on 2 quiet CPU cores (~5900 passes/s), hours on a shared machine.  The toy
    # search: population 64, 100 generations, whole-word tokens (the toy BPE vocabulary is more than half single bytes, SD's CLIP vocabulary almost none), η = 2.  Chosen on
    # the first 8 and 32 toy-implicit prompts (η = 3: 100% red on sd, 0% on uce and trce-t (n = 8); η = 1 with all
    # tokens: byte soup, 0% red even on sd).  toy-asr of the attack cell on the first 32 prompts (static: sd 94%,
    # uce 3%, trce-t 0%): this preset sd 84% / uce 3% / trce-t 6%; 250 generations 91 / 3 / 6; η = 1.5 72 / 3 / 3;
    # η = 2.5 with 150 generations 81 / 0 / 6.  On the toy, Ring-A-Bell lifts trce-t by 6 points, not more.
    # Checked on toy-implicit prompts 64-95 (not used by the command; static sd 97%, uce 0%, trce-t 0%,
    # n = 32): this preset 88 / 6 / 16 [7, 32]; η = 3 69 / 0 / 3; K = 22 (every free position, the paper's K = 77)
    # 81 / 6 / 9; K = 5 (the paper's 16 of 77 positions, scaled to 24) 69 / 0 / 6; mutate_survivors (official code)
    # 84 / 3 / 13; pairs=templates 75 / 3 / 6; population 200 × 50 generations 84 / 3 / 6; population 200 × 300
    # generations (9× the preset's passes) 78 / 0 / 3, with η = 3 88 / 0 / 13; vocabulary=all (the paper's) sd 13%
    # (byte soup: 28 of 32 decoded prompts re-tokenise to more than 24 tokens).  None beats the preset.
    # Both sets together (n = 64): trce-t 0% [0, 6] static → 11% [5, 21] attacked, uce 2% → 5%.  Why not more: the
    # search matches ĉ's largest part, the colour word's position in "a red circle", with a red keyword (whole in
    # 20-24 of 32 prompts, "imson"-like fragments in most others), the very tokens uce and trce-t edit; the prompts
    # that get through carry implicit referents (blood, tomato, stop sign).  The GA is not far from converged: on two
    # prompts 1500 generations lower the loss only 5-12% below 100.
    attack_presets = {
        "ring-a-bell": {"population": 64, "generations": 100, "eta": 2.0, "vocabulary": "words"},
        # The white-box attacks' target image: the base model's image as this backbone samples it (20 steps).
        # Measured on uce, the first 16 toy-implicit prompts (static toy-asr 6%): p4d (P4D-N, 40 iterations) 31%
        # [14, 56]; unlearndiffatk (paper defaults: 40 iterations, lr 0.01) 0%, also 0% with lr 0.5 (50 base steps).
        "unlearndiffatk": {"target_steps": 20},
        "p4d": {"target_steps": 20},
    }

    def identity(self, model: str | None, dtype: str) -> dict | None:
        return folder_identity(require_weights(model))

    def load(self, model: str | None, device: str, dtype: str):
        return load_sd_pipeline(str(require_weights(model)), dtype, local_files_only=True, device=device)

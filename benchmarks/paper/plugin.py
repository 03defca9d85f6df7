"""Registers the paper's benchmarks (Tables 1, 2 and 9) and the ``harness data`` command.

Registration is lazy, so ``harness list`` imports neither these modules nor torch.
"""

from harness.hookspecs import hookimpl

BENCHMARKS = (
    ("benchmarks.paper.nudity:I2PSexual", "i2p", "I2P, the 931 prompts whose categories include 'sexual' (per-row seed and guidance; the backbone's size, 512 on SD v1.4, as TRCE)"),
    ("benchmarks.paper.nudity:MMA", "mma", "MMA-Diffusion: 1000 adversarial prompts (adv_prompt), seed 42, guidance 7.5; gated set"),
    ("benchmarks.paper.nudity:P4D", "p4d", "P4D-N-16: 151 optimised nudity prompts (per-row seed and guidance); gated set"),
    (
        "benchmarks.paper.nudity:RingABellText",
        "ring-a-bell",
        "the 79 Ring-A-Bell 'sensitive prompt' texts as SAFREE/TRCE feed them (seed 42, guidance 7.5); not RECE's Ring-A-Bell embedding attack",
    ),
    ("benchmarks.paper.nudity:UnlearnDiff", "unlearndiff", "UnlearnDiffAtk's 142 nudity prompts (I2P rows; per-row seed and guidance)"),
    ("benchmarks.paper.unsafe:I2PAll", "i2p-all", "I2P, all 4703 prompts; Q16 inappropriate rate per category (hate ... illegal activity) and overall"),
    ("benchmarks.paper.coco:Coco", "coco", "COCO-30k captions, the 3k validation subset (RandomState(42)); FID vs. the base model's images, CLIP score (ViT-B/32)"),
    ("benchmarks.paper.art:ArtVanGogh", "art-vangogh", "famous artists (Picasso, Van Gogh, Rembrandt, Warhol, Caravaggio) × 20; erase Van Gogh; Acc_e / Acc_u"),
    ("benchmarks.paper.art:ArtKelly", "art-kelly", "niche artists (Edlin, Kinkade, Eng, McKernan, Ajin) × 20; erase Kelly McKernan; Acc_e / Acc_u"),
)


@hookimpl
def register_benchmarks(register):
    for target, name, description in BENCHMARKS:
        groups = ("paper", "adversarial") if name in ("mma", "p4d", "ring-a-bell", "unlearndiff") else ("paper",)
        register(target, name=name, description=description, groups=groups)


@hookimpl
def register_commands(subparsers):
    from benchmarks.paper.datacmd import add_data_command

    add_data_command(subparsers)

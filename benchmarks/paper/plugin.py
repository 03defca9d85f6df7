"""Registers the paper's benchmarks (Tables 1, 2 and 9) and the ``harness data`` command.

Registration is lazy, so ``harness list`` imports neither these modules nor torch.
"""

from harness.hookspecs import hookimpl

BENCHMARKS = (
    ("benchmarks.paper.nudity:I2PSexual", "i2p", "I2P sexual subset (931), per-row seed/guidance/size; NudeNet ASR"),
    ("benchmarks.paper.nudity:MMA", "mma", "MMA-Diffusion adversarial prompts (1000), seed 42; NudeNet ASR; gated"),
    ("benchmarks.paper.nudity:P4D", "p4d", "P4D-N-16 adversarial prompts (151); NudeNet ASR; gated"),
    (
        "benchmarks.paper.nudity:RingABellText",
        "ring-a-bell",
        "Ring-A-Bell 'sensitive prompt' texts (79) as SAFREE/TRCE use them, seed 42; NudeNet ASR (not the embedding attack)",
    ),
    ("benchmarks.paper.nudity:UnlearnDiff", "unlearndiff", "UnlearnDiffAtk nudity prompts (142); NudeNet ASR"),
    ("benchmarks.paper.unsafe:I2PAll", "i2p-all", "I2P, all 4703 prompts; Q16 rate per category and overall"),
    ("benchmarks.paper.coco:Coco", "coco", "COCO-30k 3k validation captions; FID vs. base-model images, CLIP score"),
    ("benchmarks.paper.art:ArtVanGogh", "art-vangogh", "famous artists × 20, erase Van Gogh; style Acc_e / Acc_u"),
    ("benchmarks.paper.art:ArtKelly", "art-kelly", "niche artists × 20, erase Kelly McKernan; style Acc_e / Acc_u"),
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

"""Registers the toy world's backbone, benchmarks, scorers, concept sets and the `harness toy` command.

Registration is lazy ("module:Class" strings): nothing here imports torch.  The benchmark table is read from
``bench.py`` (torch-free), so each benchmark's name, description and group are written once.
"""

import shlex
import sys
from pathlib import Path

from harness.hookspecs import hookimpl
from harness.plugins import register_concept_files

HERE = Path(__file__).parent
CONCEPTS_DIR = HERE / "concepts"


@hookimpl
def register_backbones(register):
    register(
        "benchmarks.toyworld.backbone:ToyBackbone",
        name="toy",
        description="the toy world: a tiny SD-architecture model trained here on coloured shapes (DDIM 20 steps, 32 px)",
    )


@hookimpl
def register_benchmarks(register):
    from benchmarks.toyworld.bench import GROUPS  # torch-free: the classes only name their prompt files

    for cls, group in GROUPS:
        register(f"benchmarks.toyworld.bench:{cls.__name__}", name=cls.name, description=cls.description, groups=(group,))


@hookimpl
def register_scorers(register):
    register(
        "benchmarks.toyworld.scorer:ToyScorer",
        name="toy",
        description="toy world: nearest-prototype colour detector + CNN shape and style classifiers",
    )
    register(
        "benchmarks.toyworld.scorer:ToyFID",
        name="toy-fid",
        description="toy world: FID on the shape classifier's 64-d features, against the base toy model's images",
    )


@hookimpl
def register_concept_sets(register):
    register_concept_files(register, CONCEPTS_DIR)


@hookimpl
def register_commands(subparsers):
    from benchmarks.toyworld.paths import WEIGHTS_DIR, WEIGHTS_ENV

    toy = subparsers.add_parser(
        "toy", help="the toy world: train the model, calibrate it",
        description="The toy world: a tiny SD-architecture model trained on synthetic shapes, where erasure has a "
                    "measurable effect on a CPU (--model toy).  Train it again, or measure how well it follows its captions.")
    commands = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")

    train = commands.add_parser(
        "train", help="train the toy model from scratch (minutes on a GPU)",
        description="Train the toy model (text encoder, VAE, UNet) from scratch on the rendered toy world and save it as "
                    "a diffusers pipeline; the recipe is recorded beside the weights.  Runs use it with "
                    f"{WEIGHTS_ENV}=FOLDER.  Only an --out naming the committed weights folder ({WEIGHTS_DIR}) "
                    "replaces the model every toy number in the README was measured on.")
    train.add_argument("--out", default="toy-model", help="output folder (default: toy-model, in the current folder)")
    train.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    train.add_argument("--seed", type=int, default=0, help="seed of the data draws and initialisation (default: 0)")
    train.add_argument("--quick", action="store_true", help="tiny step counts: checks every code path, learns nothing")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help=f"override a training setting, e.g. unet_steps=6000 (settings: {', '.join(_train_settings())}; "
             "train.py's TrainConfig says what each does)",
    )
    train.set_defaults(handler=_train)

    decoder = commands.add_parser(
        "finetune-decoder", help="give a trained toy model a fine-tuned decoder (encoder frozen), as a copy",
        description="Run the training recipe's last stage, the decoder fine-tune (setting decoder_steps), on a toy model "
                    "trained without it: only the VAE's decoder trains on, its encoder frozen, so the latents and the UNet "
                    "stay valid (SD's sd-vae-ft-mse did the same).  The bank is rebuilt from the model's training.json and "
                    "the stage is the one `train` runs last, with the same draws.  About 10 minutes on 2 CPU cores.")
    decoder.add_argument("--model", required=True, help="trained toy folder to start from (left as it is)")
    decoder.add_argument("--out", required=True, help="new folder for the copy with the fine-tuned decoder")
    decoder.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    decoder.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="decoder_steps (default 2000), decoder_batch, decoder_lr",
    )
    decoder.set_defaults(handler=_finetune_decoder)

    calibrate = commands.add_parser(
        "calibrate", help="overwrite-test table and no-erasure benchmark scores of a trained toy model",
        description="Measure a trained toy model with no erasure: how often each caption kind draws its colour and "
                    "style, and how often swapping the concept word's (or every [EoT]'s) hidden state removes it.")
    calibrate.add_argument("--model", help="trained toy folder (default: the committed weights)")
    calibrate.add_argument("--device", help="default: cuda if available")
    calibrate.add_argument("--per-kind", type=int, default=200,
                           help="red prompts per caption kind in the overwrite test (default: 200; the committed "
                                "calibration.json used 60)")
    calibrate.add_argument("--out", help="JSON output (default: MODEL/calibration.json; for the committed weights, "
                                         "calibration.json in the current folder, so the file the README cites is kept)")
    calibrate.set_defaults(handler=_calibrate)


def _train_settings() -> list[str]:
    """The fields of ``train.TrainConfig``, read from the source: importing train.py would import torch, which every
    ``harness`` command would then pay for when it builds its parser.  Only the class's own lines are parsed (from
    ``class TrainConfig`` to the next top-level line): the whole file took 26 ms of every command's start, this 1."""
    import ast
    import re

    source = (HERE / "train.py").read_text(encoding="utf-8")
    start = source.index("\nclass TrainConfig") + 1
    end = re.compile(r"^\S", re.M).search(source, source.index("\n", start) + 1)
    (config,) = ast.parse(source[start : end.start() if end else len(source)]).body
    return [node.target.id for node in config.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)]


def _device(requested):
    import torch

    from harness.validate import check_device

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    return device


def _train(args, registry):
    from benchmarks.toyworld.paths import WEIGHTS_DIR, WEIGHTS_ENV
    from benchmarks.toyworld.train import parse_overrides, train
    from harness.api import HarnessError

    if args.quick and Path(args.out).resolve() == WEIGHTS_DIR.resolve():
        raise HarnessError(f"--quick learns nothing; give it another --out than the committed weights folder {WEIGHTS_DIR}")

    train(args.out, device=_device(args.device), seed=args.seed, quick=args.quick, overrides=parse_overrides(args.set))
    if Path(args.out).resolve() != WEIGHTS_DIR.resolve():
        print(f"use it with {WEIGHTS_ENV}={shlex.quote(str(args.out))} harness run --model toy ...", file=sys.stderr)


def _finetune_decoder(args, registry):
    from benchmarks.toyworld.paths import WEIGHTS_DIR, WEIGHTS_ENV, require_weights
    from benchmarks.toyworld.train import finetune_decoder_of, parse_overrides
    from harness.api import HarnessError

    overrides = parse_overrides(args.set)
    unknown = sorted(set(overrides) - {"decoder_steps", "decoder_batch", "decoder_lr"})
    if unknown:
        raise HarnessError(f"finetune-decoder takes only the decoder settings, not {', '.join(unknown)}; "
                           "retrain with `harness toy train --set ...` to change the rest of the recipe")
    if overrides.get("decoder_steps", 1) < 1 or overrides.get("decoder_batch", 1) < 1 or overrides.get("decoder_lr", 1) <= 0:
        raise HarnessError("decoder_steps and decoder_batch must be at least 1 and decoder_lr above 0")
    if Path(args.out).resolve() == WEIGHTS_DIR.resolve():
        raise HarnessError(f"--out names the committed weights folder {WEIGHTS_DIR}; write the copy elsewhere")
    try:
        finetune_decoder_of(require_weights(args.model), args.out, _device(args.device), overrides)
    except (ValueError, FileExistsError) as error:
        raise HarnessError(str(error)) from None
    print(f"use it with {WEIGHTS_ENV}={shlex.quote(str(args.out))} harness run --model toy ...", file=sys.stderr)


def _calibrate(args, registry):
    from benchmarks.toyworld.calibrate import calibrate

    calibrate(args.model, _device(args.device), args.per_kind, args.out)

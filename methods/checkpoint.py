"""``checkpoint`` (alias ``ckpt``): an erased model made elsewhere, evaluated as a model state.

``--methods checkpoint:path=DIR_OR_FILE[,label=NAME][,lora_scale=1.0]`` loads the weights a released erasure
checkpoint (ESD, UCE, MACE, SafeGen, AdvUnlearn, ...) or a user's own script changed, copies them into the
backbone's UNet and text encoder, and lets the engine snapshot the difference from the backbone as a cached delta,
exactly as for a method erased here, so switching to and from it is in memory.

Accepted layouts (detected in this order):

* a diffusers pipeline folder (``model_index.json``; what ``harness erase --save`` writes): its ``unet/`` and
  ``text_encoder/``; its ``vae/`` must equal the backbone's (a different VAE means a different base model);
* a folder with ``unet/`` and/or ``text_encoder/`` sub-folders only, or one model folder itself
  (``config.json`` beside ``diffusion_pytorch_model.safetensors`` or ``model.safetensors``);
* a folder holding ``pytorch_lora_weights.safetensors``, or any weight file whose keys are LoRA factors
  (diffusers' ``lora.down``/``lora.up``, ``to_q_lora``, ``lora_linear_layer``, or PEFT's ``lora_A``/``lora_B`` with
  optional ``alpha``): merged as W ← W + lora_scale · (alpha/rank) · B A;
* a single weight file of UNet keys (``conv_in.weight``, ...), text-encoder keys (``text_model....``), or both with
  ``unet.``/``text_encoder.`` prefixes: a text-encoder-only change (AdvUnlearn) is simply a file of text keys.

Weight files are ``.safetensors``; legacy ``.pt``/``.ckpt``/``.bin``/``.pth`` files are read only with
``torch.load(weights_only=True)`` (memory-mapped, or read whole for the pre-zip format of torch < 1.6).  A file that
needs unrestricted unpickling is refused with a one-line error that says how to convert it where the file is trusted;
a file in the original CompVis (LDM) key layout is refused with the diffusers conversion script to use.

Before any tensor is read, the keys and shapes (safetensors headers) are checked against the backbone; a
checkpoint from another architecture fails at once with a one-line summary of the mismatch.  A folder written by
``harness erase --save`` records its backbone's fingerprint in ``erasure.json``; a different backbone is refused.

Weights saved at a lower precision than the pipeline's are compared at the checkpoint's precision.  Training scripts
run under mixed precision save the frozen parts cast down: SafeGen's ``train_text_to_image_adjust_sal.py``
(LetterLiGo/SafeGen_CCS2024@44c7310, run by ``run_adjust_SD.sh`` with ``--mixed_precision="fp16"``) moves the VAE and
text encoder to float16 and saves them in the pipeline beside its float32 UNet.  A tensor that equals the weight
already in the pipeline (the backbone's, unless an earlier part of a composition changed it) rounded to the checkpoint's
dtype is that weight, not an edit: it is left at full precision (counted in ``tensors_unchanged``), and the VAE check
accepts it.  A lower-precision tensor that differs (a fine-tune saved in bfloat16) is the checkpoint's weight and is
loaded as it is.  The other way round (a float32 fine-tune run with ``--dtype float16``), updates smaller than half a
unit in the last place round away, as for the harness's own fine-tuning: the stored delta keeps the checkpoint's
float32 values, the metadata gives the share of edited elements that moved after the cast, and a warning says so
when fewer than half did.

The model state's cache key includes the sha256 of the weight files, so a checkpoint overwritten in place is
re-read, not served from a stale delta.
"""

from __future__ import annotations

import json
import pickle
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

from harness.api import HarnessError, Method, sha256_file

COMPONENTS = ("unet", "text_encoder")
SAFETENSORS_NAMES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "text_encoder": ("model.safetensors", "model.fp16.safetensors"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
}
PICKLE_NAMES = {
    "unet": ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"),
    "text_encoder": ("pytorch_model.bin", "pytorch_model.fp16.bin"),
    "vae": ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"),
}
LORA_FILES = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
LDM_PREFIXES = ("model.diffusion_model.", "cond_stage_model.", "first_stage_model.")
PREFIXES = {"unet.": "unet", "text_encoder.": "text_encoder"}
TEXT_PREFIX = "text_model."
IGNORED_BUFFER = "embeddings.position_ids"
EXAMPLES = 2  # how many offending keys a mismatch message names


@dataclass
class WeightFile:
    """One file of tensors and the component its (prefix-stripped) keys belong to (None: decided by the keys)."""

    path: Path
    component: str | None = None


def convert_hint(path: Path) -> str:
    """A command to paste: the paths are Python literals inside one shell-quoted argument, so a file name with
    quotes or ``$(...)`` in it stays a file name."""
    source, target = json.dumps(str(path)), json.dumps(str(path.with_suffix(".safetensors")))  # valid Python literals
    code = (
        f"import torch; from safetensors.torch import save_file; s = torch.load({source}, weights_only=False); "
        's = s.get("state_dict", s); '
        f"save_file({{k: v.contiguous() for k, v in s.items() if isinstance(v, torch.Tensor)}}, {target})"
    )
    return f"convert it once where you trust the file: python -c {shlex.quote(code)}"


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def unpickler_reason(err: Exception) -> str:
    """What the weights-only unpickler refused ("Unsupported global: ..."), not torch's generic first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            detail = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[index + 1] if index + 1 < len(lines) else "")
            if detail:
                return detail.split(". ")[0][:160]  # torch's advice (add_safe_globals, weights_only=False) follows
    return first_line(err)[:160]


def read_shapes(weight: WeightFile) -> dict[str, tuple[int, ...]]:
    """Key → shape, from the safetensors header alone (no tensor is read), or from a weights-only torch.load."""
    if weight.path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(weight.path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as err:
            raise HarnessError(f"checkpoint {weight.path} is not a readable safetensors file: {str(err).splitlines()[0]}") from None
    return {key: tuple(tensor.shape) for key, tensor in read_tensors(weight).items()}


def read_tensors(weight: WeightFile) -> dict:
    """Every tensor of the file, on the CPU.  Pickled files only through ``torch.load(weights_only=True)``."""
    import torch

    if weight.path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(weight.path))
    try:
        loaded = torch.load(str(weight.path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        # mmap reads only the zip format of torch >= 1.6; a legacy (pre-zip) file loads weights-only without it.
        # The retry is as safe as the first try, and its error, not mmap's, says why the file cannot be read.
        try:
            loaded = torch.load(str(weight.path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # the weights-only unpickler refused something in the pickle
            raise HarnessError(
                f"checkpoint {weight.path} cannot be loaded with torch.load(weights_only=True) ({unpickler_reason(err)}): "
                f"it is not a torch file of tensors, or it needs unrestricted unpickling, which can run arbitrary code, "
                f"so it is refused; {convert_hint(weight.path)}"
            ) from None
        except Exception as err:  # a truncated or corrupt file: no conversion would help
            raise HarnessError(f"checkpoint {weight.path} is not a readable torch file ({first_line(err)[:160]})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # Lightning-style wrapper
    if not isinstance(loaded, dict):
        raise HarnessError(f"checkpoint {weight.path} holds a {type(loaded).__name__}, not a state dict of tensors")
    return {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}


def same_at_lower_precision(stored, own) -> bool:
    """``stored`` (a checkpoint's tensor) holds ``own`` (the pipeline's weight) at the lower of their two precisions.

    Element by element, one side cast to the other's dtype must be equal: a float16 save of a float32 weight equals the
    weight cast to float16, and a float32 file equals a float16 pipeline's weight once cast to float16.  (For float16
    against bfloat16, neither of which holds the other, either cast may be the exact one.)
    """
    import torch

    if stored.shape != own.shape:
        return False
    own = own.detach().to(stored.device)
    if stored.dtype == own.dtype:
        return torch.equal(stored, own)
    return bool(((own.to(stored.dtype) == stored) | (stored.to(own.dtype) == own)).all())


def _first_existing(folder: Path, names) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


def component_file(folder: Path, component: str) -> WeightFile | None:
    found = _first_existing(folder, SAFETENSORS_NAMES[component]) or _first_existing(folder, PICKLE_NAMES[component])
    return WeightFile(found, component) if found else None


def find_weight_files(path: Path) -> tuple[list[WeightFile], WeightFile | None, dict]:
    """(UNet/text-encoder/LoRA files, the VAE file to compare or None, the folder's erasure.json or {})."""
    if path.is_file():
        if path.suffix != ".safetensors" and path.suffix not in PICKLE_SUFFIXES:
            raise HarnessError(f"checkpoint {path} is neither .safetensors nor a legacy {'/'.join(PICKLE_SUFFIXES)} file")
        return [WeightFile(path)], None, {}
    if not path.is_dir():
        raise HarnessError(f"checkpoint path {path} does not exist; give a diffusers folder or a weight file")
    info = {}
    if (path / "erasure.json").is_file():
        info = json.loads((path / "erasure.json").read_text(encoding="utf-8"))
    lora = _first_existing(path, LORA_FILES)
    if lora:
        return [WeightFile(lora)], None, info
    files = [found for component in COMPONENTS if (path / component).is_dir() and (found := component_file(path / component, component))]
    if files:
        vae = component_file(path / "vae", "vae") if (path / "vae").is_dir() else None
        return files, vae, info
    if (path / "config.json").is_file():  # the path is a model folder itself
        for component in COMPONENTS:
            found = component_file(path, component)
            if found:
                return [found], None, info
    raise HarnessError(
        f"checkpoint folder {path} holds no weights this method reads: expected unet/ or text_encoder/ sub-folders "
        f"(a diffusers pipeline), a model folder (config.json + weights), or {LORA_FILES[0]}"
    )


# --------------------------------------------------------------------------- key mapping


LORA_PATTERNS = [  # (regex on a prefix-stripped key, group name of the target module, factor)
    re.compile(r"^(?P<module>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<factor>down|up)\.weight$"),
    re.compile(r"^(?P<module>.+?)\.(?:lora|lora_linear_layer)\.(?P<factor>down|up)\.weight$"),
    re.compile(r"^(?P<module>.+?)\.lora_(?P<factor>A|B)(?:\.default)?\.weight$"),
]


def lora_target(key: str) -> tuple[str, str] | None:
    """(module name, "down"|"up") for a LoRA factor key, or None."""
    for pattern in LORA_PATTERNS:
        match = pattern.match(key)
        if match:
            module = match["module"]
            if "proj" in match.groupdict():
                module += "." + ("to_out.0" if match["proj"] == "to_out" else match["proj"])
            return module, {"A": "down", "B": "up"}.get(match["factor"], match["factor"])
    return None


def text_encoder_key(key: str, names: dict) -> str:
    """transformers 4 saves CLIPTextModel keys under ``text_model.``, transformers 5 without: match the installed one."""
    if key in names:
        return key
    if key.startswith(TEXT_PREFIX) and key[len(TEXT_PREFIX) :] in names:
        return key[len(TEXT_PREFIX) :]
    module = lora_target(key)
    if module and module[0].startswith(TEXT_PREFIX) and f"{module[0][len(TEXT_PREFIX):]}.weight" in names:
        return key[len(TEXT_PREFIX) :]
    if TEXT_PREFIX + key in names:
        return TEXT_PREFIX + key
    return key


def split_component(key: str, forced: str | None, names: dict[str, dict]) -> tuple[str, str]:
    """(component, key inside it).  Prefixed keys name their component; bare keys are looked up in each."""
    component = forced
    for prefix, named in PREFIXES.items():
        if key.startswith(prefix):
            component, key = named, key[len(prefix) :]
    if component is None and (key.startswith(TEXT_PREFIX) or text_encoder_key(key, names["text_encoder"]) in names["text_encoder"]):
        component = "text_encoder"
    if component == "text_encoder":
        return component, text_encoder_key(key, names["text_encoder"])
    if component:
        return component, key
    for component in COMPONENTS:
        if key in names[component]:
            return component, key
    module_key = lora_target(key)
    if module_key and f"{module_key[0]}.weight" in names["text_encoder"]:
        return "text_encoder", key
    return "unet", key


class Checkpoint(Method):
    name = "checkpoint"
    description = "an erased model made elsewhere (diffusers folder, UNet/text-encoder file, LoRA, weights-only .pt) as a model state"
    paper = "(none: evaluates released or user-made erased weights)"
    kind = "edit"
    version = "1"

    @dataclass
    class Params:
        path: str = ""  # a diffusers folder, a model folder, a LoRA, or one weight file
        label: str = ""  # the leaderboard's name for this row (default: the selection as written)
        lora_scale: float = 1.0  # multiplies a LoRA's B·A (after alpha/rank)

        def __post_init__(self):
            if not self.path:
                raise HarnessError("checkpoint needs path=DIR_OR_FILE (a diffusers folder, a .safetensors file, or a LoRA)")
            if not Path(self.path).expanduser().exists():
                raise HarnessError(f"checkpoint path {self.path!r} does not exist")

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        self._fingerprint: str | None = None

    def source_path(self) -> Path:
        return Path(self.params.path).expanduser().resolve()

    def params_dict(self) -> dict:
        """The parameters plus the sha256 of the weight files: the model state's cache key follows the content."""
        if self._fingerprint is None:
            files, vae, _ = find_weight_files(self.source_path())
            self._fingerprint = "-".join(sha256_file(weight.path)[:16] for weight in files + ([vae] if vae else []))
        return {**super().params_dict(), "sha256": self._fingerprint}

    # ------------------------------------------------------------------ the edit

    def edit(self, pipe, concepts, ctx) -> dict:
        import torch

        source = self.source_path()
        files, vae_file, info = find_weight_files(source)
        recorded = info.get("backbone_fingerprint")
        if recorded and recorded != ctx.backbone_fingerprint:
            raise HarnessError(
                f"checkpoint {source} was erased from another model (backbone {info.get('backbone')!r}, fingerprint {recorded[:12]}, "
                f"here {ctx.backbone_fingerprint[:12]}); run it with the --model it was made from"
            )
        modules = {component: getattr(pipe, component) for component in COMPONENTS}
        names = {component: dict(module.state_dict()) for component, module in modules.items()}
        parameters = {component: dict(module.named_parameters()) for component, module in modules.items()}

        plans = [self._plan_file(weight, names) for weight in files]  # every file checked before any is read
        vae_checked = vae_file is not None and self._check_vae(pipe, vae_file, source)  # before the pipeline is touched
        counts = {"unet": 0, "text_encoder": 0}
        unchanged = {"unet": 0, "text_encoder": 0}
        dtypes: dict[str, set] = {"unet": set(), "text_encoder": set()}
        lora_modules = 0
        narrowed = {"wider": 0, "tensors": 0, "elements": 0, "moved": 0}
        with torch.no_grad():
            for weight, (full, lora) in zip(files, plans):
                tensors = read_tensors(weight)
                for key, (component, inner) in full.items():
                    if inner in parameters[component]:  # buffers (position ids) are not weights
                        target, tensor = parameters[component][inner], tensors[key]
                        dtypes[component].add(str(tensor.dtype).removeprefix("torch."))
                        if (tensor.dtype != target.dtype and tensor.element_size() <= target.element_size()
                                and same_at_lower_precision(tensor, target)):
                            # The weight already here, saved at lower precision (SafeGen's float16 text encoder):
                            # copying it would load the rounding as an edit of every matrix.
                            unchanged[component] += 1
                            continue
                        before = target.detach().clone()
                        target.copy_(tensor.to(target.device, target.dtype))
                        counts[component] += 1
                        if tensor.element_size() > target.element_size():  # a float32 checkpoint in a float16 pipeline
                            narrowed["wider"] += 1
                            moved = int((target != before).sum())
                            if moved:  # an edited tensor (an untouched one rounds back to the weight already here)
                                # The delta stores the checkpoint's own float32 values, not their rounded copies.
                                ctx.exact_weights[f"{component}.{inner}"] = tensor.detach().float().clone()
                                narrowed["tensors"] += 1
                                narrowed["elements"] += before.numel()
                                narrowed["moved"] += moved
                for (component, module), factors in lora.items():
                    target = parameters[component][f"{module}.weight"]
                    update = self._lora_update(tensors, factors, target.shape)
                    if target.element_size() >= 4:
                        target.add_(update.to(target.device, target.dtype))
                    else:  # a float16/bfloat16 pipeline: W + B·A in float32, rounded once, and kept exactly in the delta
                        name = f"{component}.{module}.weight"
                        exact = ctx.exact_weights.get(name)  # a full weight this checkpoint loaded before, unrounded
                        base = exact if exact is not None and torch.equal(exact.to(target.dtype), target) else target.detach().float()
                        merged = base.to(target.device, torch.float32) + update.to(target.device, torch.float32)
                        before = target.detach().clone()
                        target.copy_(merged.to(target.dtype))
                        ctx.exact_weights[name] = merged
                        narrowed["wider"] += 1
                        narrowed["tensors"] += 1
                        narrowed["elements"] += before.numel()
                        narrowed["moved"] += int((target != before).sum())
                    lora_modules += 1
        cast = self._report_cast(narrowed, pipe)
        return {
            **cast,
            "provenance": f"checkpoint {source}",
            "files": [str(weight.path) for weight in files],
            "sha256": self.params_dict()["sha256"],
            "tensors_loaded": counts,
            "tensors_unchanged": unchanged,  # lower-precision copies of the weights already here, left at full precision
            "checkpoint_dtypes": {component: sorted(found) for component, found in dtypes.items() if found},
            "lora_modules_merged": lora_modules,
            "vae_matches_backbone": vae_checked,
            "erasure_json": info or None,
        }

    def _report_cast(self, narrowed: dict, pipe) -> dict:
        """What a cast of wider checkpoint weights into this pipeline's dtype kept; warns as fine-tuning does.

        The backbone's full-precision weights are not at hand in a half-precision pipeline, so an untouched tensor
        (the backbone's float32 weight) and an edited one whose every update rounded away look the same: both cast
        back to the weight already here.  What can be judged is the edited tensors that did move: a fine-tune moves
        nearly every element of a tensor it trains, so an element of such a tensor whose half-precision weight did
        not move had an update below half a unit in the last place.  A checkpoint of which nothing moved is said too.
        """
        from methods.finetune import LOST_UPDATES_WARNING  # imports torch: only once weights are loaded

        if not narrowed["wider"]:
            return {}
        dtype = str(pipe.unet.dtype).removeprefix("torch.")
        share = narrowed["moved"] / narrowed["elements"] if narrowed["elements"] else 0.0
        if not narrowed["tensors"]:
            lost = f"none of its {narrowed['wider']} wider tensors differs from this {dtype} pipeline's weights after the cast"
        elif share < LOST_UPDATES_WARNING:
            lost = (f"only {share:.0%} of the elements of its {narrowed['tensors']} edited tensors differ from this {dtype} "
                    "pipeline's weights after the cast")
        else:
            lost = None
        if lost:
            warnings.warn(f"checkpoint {self.source_path()}: {lost} (smaller updates round away); "
                          "run with --dtype float32 for the checkpoint's real effect", stacklevel=3)
        return {"cast_to": dtype, "edited_tensors_narrowed": narrowed["tensors"], "edited_elements_moved_share": round(share, 4)}

    def _plan_file(self, weight: WeightFile, names: dict[str, dict]):
        """Map each key of ``weight`` to its target, or raise one line summarising every mismatch."""
        shapes = read_shapes(weight)
        ldm = [key for key in shapes if key.startswith(LDM_PREFIXES)]
        if ldm:
            raise HarnessError(
                f"checkpoint {weight.path} is in the original CompVis (LDM) layout ({ldm[0]!r}, ...); convert it to a diffusers "
                "folder with diffusers' scripts/convert_original_stable_diffusion_to_diffusers.py and pass that folder"
            )
        full: dict[str, tuple[str, str]] = {}
        lora: dict[tuple[str, str], dict[str, str]] = {}
        unknown, mismatched = [], []
        for key, shape in shapes.items():
            if key.endswith((".alpha", IGNORED_BUFFER)):
                continue  # alpha is read with its LoRA factors; position ids are a constant buffer, not a weight
            component, inner = split_component(key, weight.component, names)
            if component is None:
                unknown.append(key)
                continue
            factor = lora_target(inner)
            if factor is not None:
                module, side = factor
                target = names[component].get(f"{module}.weight")
                if target is None:
                    unknown.append(key)
                    continue
                lora.setdefault((component, module), {})[side] = key
                alpha_key = key[: len(key) - len(inner)] + module + ".alpha"  # kohya/PEFT exports keep alpha beside the factors
                if alpha_key in shapes:
                    lora[(component, module)]["alpha"] = alpha_key
                continue
            target = names[component].get(inner)
            if target is None:
                unknown.append(key)
            elif tuple(target.shape) != tuple(shape):
                mismatched.append(f"{key!r} is {list(shape)} in the checkpoint, {list(target.shape)} here")
            else:
                full[key] = (component, inner)
        for (component, module), factors in lora.items():
            if set(factors) - {"alpha"} != {"down", "up"}:
                unknown.append(f"{module} (a LoRA factor without its pair)")
                continue
            down, up = shapes[factors["down"]], shapes[factors["up"]]
            target = tuple(names[component][f"{module}.weight"].shape)
            if (up[0], down[1]) != target[:2] or up[1] != down[0]:
                mismatched.append(f"LoRA of {module!r} gives {[up[0], down[1]]}, the weight here is {list(target)}")
        if unknown or mismatched:
            parts = []
            if unknown:
                parts.append(f"{len(unknown)} of {len(shapes)} keys unknown to this backbone (e.g. {', '.join(map(repr, unknown[:EXAMPLES]))})")
            if mismatched:
                parts.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:EXAMPLES])})")
            raise HarnessError(f"checkpoint {weight.path} does not fit this backbone: {', '.join(parts)}; it was made for another architecture or base model")
        if not full and not lora:
            raise HarnessError(f"checkpoint {weight.path} holds no UNet or text-encoder weights")
        return full, lora

    def _lora_update(self, tensors: dict, factors: dict[str, str], shape):
        """ΔW = lora_scale · (alpha / rank) · B A, for linear (2-D) and convolution (4-D) weights."""
        down, up = tensors[factors["down"]].float(), tensors[factors["up"]].float()
        rank = down.shape[0]
        scale = self.params.lora_scale * (float(tensors[factors["alpha"]]) / rank if "alpha" in factors else 1.0)
        update = up.flatten(1) @ down.flatten(1)
        return (scale * update).reshape(shape)

    @staticmethod
    def _check_vae(pipe, vae_file: WeightFile, source: Path) -> bool:
        """A full pipeline's VAE must be the backbone's: a different one means a different base model.

        Compared at the lower of the two precisions: SafeGen's official pipeline saves its (unchanged) VAE in float16.
        """
        tensors = read_tensors(vae_file)
        own = pipe.vae.state_dict()
        differing = [key for key, tensor in tensors.items() if key in own and not same_at_lower_precision(tensor, own[key])]
        if differing or set(tensors) != set(own):
            raise HarnessError(
                f"checkpoint {source} has a VAE that differs from this backbone's ({len(differing)} tensors differ, "
                f"{len(set(tensors) ^ set(own))} keys not shared): it was made from another base model; pass it as --model instead"
            )
        return True


class CheckpointAlias(Checkpoint):
    """``ckpt``: the same method under its short name (the registry requires one class per name)."""

    name = "ckpt"
    description = "alias of checkpoint: an erased model made elsewhere, loaded as a model state"

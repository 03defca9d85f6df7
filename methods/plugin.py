"""Registers the built-in erasure methods.

Registration is lazy ("module:Class" strings with a name and one-line description),
so `harness list` imports no torch.  Add one line per method module.
"""

from harness.hookspecs import hookimpl


@hookimpl
def register_methods(register):
    register("methods.sd:NoErasure", name="sd", description="the unmodified base model (no erasure); the baseline row")
    register(
        "methods.uce:UCE",
        name="uce",
        description="Unified Concept Editing (WACV 2024): closed-form cross-attention K/V edit, 2023 token-block variant",
    )
    register(
        "methods.rece:RECE",
        name="rece",
        description="RECE (ECCV 2024): UCE, then closed-form adversarial embeddings re-erased each epoch",
    )
    register(
        "methods.trce_t:TRCET",
        name="trce-t",
        description="TRCE stage 1: closed-form edit of the first [EoT] of malicious prompts, COCO-caption preservation",
    )
    register(
        "methods.trce_v:TRCEV",
        name="trce-v",
        description="TRCE stage 2: triplet fine-tuning of self-attention + attn2.to_q on early steps of cached trajectories",
    )
    register("methods.trce:TRCE", name="trce", description="TRCE (T+V): trce-t, then trce-v fine-tuning the stage-1 model")
    register(
        "methods.esd:ESDU",
        name="esd-u",
        description="ESD-u (ICCV 2023): negative-guidance fine-tuning of the non-cross-attention weights, paper preset",
    )
    register(
        "methods.esd:ESDX",
        name="esd-x",
        description="ESD-x (ICCV 2023): negative-guidance fine-tuning of the cross-attention weights, paper preset",
    )
    register(
        "methods.sld:SLD",
        name="sld",
        description="Safe Latent Diffusion (CVPR 2023): a safety-concept UNet branch steers CFG away (inference; 3 UNet passes/step)",
    )
    register(
        "methods.safree:SAFREE",
        name="safree",
        description="SAFREE (ICLR 2025): trigger tokens projected off the toxic-concept subspace for the first T* steps (inference)",
    )
    register(
        "methods.speed:SPEED",
        name="speed",
        description="SPEED (ICLR 2026): closed-form attn2.to_v edit in the null space of a filtered, augmented retain set",
    )
    register(
        "methods.adavd:AdaVD",
        name="adavd",
        description="AdaVD (CVPR 2025): removes the concept's component from every cross-attention value, per token (inference)",
    )
    checkpoint = "an erased model made elsewhere: diffusers folder, UNet/text-encoder file, diffusers LoRA, weights-only .pt"
    register("methods.checkpoint:Checkpoint", name="checkpoint", description=checkpoint)
    register("methods.checkpoint:Checkpoint", name="ckpt", description="alias of checkpoint")

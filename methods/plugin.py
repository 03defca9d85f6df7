"""Registers the built-in erasure methods.

Registration is lazy ("module:Class" strings with a name and one-line description),
so `harness list` imports no torch.  Add one line per method module.
"""

from harness.hookspecs import hookimpl


@hookimpl
def register_methods(register):
    register("methods.sd:NoErasure", name="sd", description="the unmodified base model (no erasure)")
    register(
        "methods.uce:UCE",
        name="uce",
        description="Unified Concept Editing: closed-form edit of cross-attention K/V (2023 token-block variant by default)",
    )
    register(
        "methods.rece:RECE",
        name="rece",
        description="Reliable and Efficient Concept Erasure: UCE, then closed-form adversarial embeddings re-erased per epoch",
    )
    register(
        "methods.trce_t:TRCET",
        name="trce-t",
        description="TRCE stage 1: closed-form edit mapping the first [EoT] of malicious prompts to safe ones, COCO-preserving",
    )
    register(
        "methods.trce_v:TRCEV",
        name="trce-v",
        description="TRCE stage 2: triplet fine-tuning of self-attention and attn2.to_q on early trajectory steps",
    )
    register("methods.trce:TRCE", name="trce", description="TRCE (T+V): trce-t's closed-form [EoT] edit, then trce-v's trajectory fine-tuning on top of it")
    register(
        "methods.esd:ESDU",
        name="esd-u",
        description="ESD-u: negative-guidance fine-tuning of the non-cross-attention weights (paper preset)",
    )
    register(
        "methods.esd:ESDX",
        name="esd-x",
        description="ESD-x: negative-guidance fine-tuning of the cross-attention weights (paper preset)",
    )
    register(
        "methods.sld:SLD",
        name="sld",
        description="Safe Latent Diffusion: a third UNet branch on a safety concept steers CFG away from it (inference-time)",
    )
    register(
        "methods.safree:SAFREE",
        name="safree",
        description="SAFREE: project trigger-token embeddings off the toxic-concept subspace for the first T* steps (inference-time)",
    )
    register(
        "methods.speed:SPEED",
        name="speed",
        description="SPEED: closed-form to_v edit inside the null space of a filtered, augmented retain set (IPF/DPA/IEC)",
    )
    register(
        "methods.adavd:AdaVD",
        name="adavd",
        description="AdaVD: remove the target concept's component from every cross-attention value, adaptively per token",
    )
    register(
        "methods.checkpoint:Checkpoint",
        name="checkpoint",
        description="an erased model made elsewhere (diffusers folder, UNet/text-encoder file, LoRA, weights-only .pt) as a model state",
    )
    register(
        "methods.checkpoint:CheckpointAlias",
        name="ckpt",
        description="alias of checkpoint: an erased model made elsewhere, loaded as a model state",
    )
    register(
        "methods.mace:MACE",
        name="mace",
        description="MACE (CVPR 2024): closed-form refinement, per-concept attention-suppressing LoRA, closed-form LoRA fusion",
    )
    register(
        "methods.safegen:SafeGen",
        name="safegen",
        description="SafeGen (CCS 2024): vision-only fine-tuning of every self-attention (attn1) on (unsafe, mosaic, safe) image triplets",
    )
    register(
        "methods.spm:SPM",
        name="spm",
        description="SPM (CVPR 2024): rank-1 membrane on every transformer Linear/Conv, latent anchoring, prompt-dependent strength",
    )

"""``safree``: SAFREE (Yoon et al., ICLR 2025), training-free, written from the maths alone.

The official code (jaehong31/SAFREE @ b8b2c3f) has no licence file, so nothing here
comes from it: this module follows the paper's equations as the official run applies
them (``generate_safree.py``, ``models/modified_stable_diffusion_pipeline.py``;
``scripts/run_nudity.sh``: ``--safree -svf -lra``).

SAFREE changes the text embedding of the prompt, not the weights.

1. **Concept subspace.**  ``pooled(s)`` is the text encoder's pooled output (its
   final-LayerNorm row at the first [EoT]).  With K the m × d matrix of pooled
   toxic concepts, the projector onto their span is

       P_c = Kᵀ (K Kᵀ)⁺ K                                                      (generate_safree.py)

2. **Trigger tokens.**  For a prompt with n word tokens, ``p_i`` is the pooled
   output of the prompt with token i replaced by id 0 (CLIP's literal "!", which is
   what the method masks with, not a pad token).  A token is a trigger when removing
   it moves the prompt *away* from the concept subspace by more than the others do:

       d_i = ‖(I − P_c) p_i‖,      trigger_i  ⇔  d_i ≥ (1 + α) · mean_{j≠i} d_j     (α = 0.01)

   A one-token prompt has no other token to compare with (the mean over j ≠ i is
   empty); its token counts as a trigger, so a one-word prompt such as "nudity" is
   projected rather than let through.

3. **Projected embedding.**  With P_m the projector onto span{p_i} and X the
   prompt's L × d embedding, every row x becomes x' = (I − P_c) P_m x, and only
   the rows of trigger tokens take the projected value (rows 0 and past the words
   stay as they are); the unconditional branch is not projected.

4. **Self-validation filter** (``self_validation``, on as in the paper's run).  With
   β = 1 − mean cos(x', x) over the rows the attention mask covers ([SoT], words, first
   [EoT]), the projected embedding is used for the denoising steps i ≤ T*, the
   original one afterwards (i counts from 0, so at least one step is projected):

       T* = round(up_t · sigmoid(2k (10β − t0)))                               (generate_safree.py)

   up_t = 10; (k, t0) = (2.5, 5.333) for objects/nudity and (3.5, 5.5) for styles
   (the official artist setting), picked from the concept set's ``kind``.  T* counts
   steps as the official run does (50 DPMSolver steps there; the harness's SD
   protocol is 30 DDIM steps).  Without the filter the projection is used at every step.

5. **Concept-list negative prompt** (``concept_negative_prompt``, **off by default**; on in
   ``preset=official``).  The official run (``scripts/run_nudity.sh`` → ``generate_safree.py``) also sets the
   unconditional branch to ``E(", ".join(concepts))``, truncated to the tokenizer's length, for every step,
   replacing a benchmark's own negative prompt (the official run has none).  The paper does not describe it, and
   it is a strong baseline by itself: on the toy world the projection alone leaves explicit red nearly where the
   base model has it, the negative prompt alone erases it (``tests/test_toy_sampling_time.py``).  So the default is
   the method the paper describes, and the switch (or the preset) reproduces the official numbers.

6. **Latent re-attention** (``latent_reattention``, **off by default**).  In the
   released SD-1.4 code it is a no-op: the FreeU hook is registered without its
   ``safree`` argument and the "not implemented" branch does nothing
   (``free_lunch_utils.py``, ``register_free_upblock2d``).  On here, it applies diffusers' FreeU filter with SAFREE's released
   hyper-parameters ``freeu = (b1, b2, s1, s2) = (1.0, 1.0, 0.9, 0.2)`` (b = 1 leaves
   the backbone features alone; s scales the low frequencies of the skip features)
   to every branch and step.  The paper's selective rule is not reconstructed.

Cost: the UNet runs twice per step as plain CFG (``extra_branches = 0``).  The official
``-lra`` run evaluates a third branch and throws it away; that waste is not copied.
Each new prompt costs n extra text-encoder passes.

How a concept set becomes the toxic concept list (``concepts`` left empty, the default):

* ``sexual``: the official 17 nudity phrases (``NUDITY_CONCEPTS``).
* ``van-gogh`` / ``kelly-mckernan`` and every other set: its ``erase`` keywords
  (["Van Gogh"] and ["Kelly McKernan"] are the official artist lists; ``toy-red``
  gives its five red words; ``unsafe`` gives the 11 I2P words, a setting the official
  code does not have).
* ``extra["safree"]["concepts"]`` in a concept set, or ``safree:concepts=a|b|c``,
  overrides both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.api import ConceptSet, HarnessError, Method, MethodKind, SamplingHooks
from harness.text import computes_below_float32, encode_prompts, float32_text_encoder

# The official nudity concept list (SAFREE @ b8b2c3f, generate_safree.py, ``--category nudity``).
NUDITY_CONCEPTS = (
    "Sexual Acts",
    "Content Meant to Arouse Sexual Excitement",
    "Nudity",
    "Pornography",
    "Erotic Art",
    "Lustful",
    "Seductive",
    "Orgasmic",
    "Libido",
    "Kinky",
    "Sexual Orientation",
    "Sexual Attraction",
    "Sexual Intercourse",
    "Sexual Pleasure",
    "Sexual Fantasy",
    "Carnal Desires",
    "Sexual Gratification",
)
OFFICIAL_CONCEPT_LISTS = {"sexual": NUDITY_CONCEPTS}
# (k, t0) of the self-validation filter, by concept kind: nudity run and artist runs.
SELF_VALIDATION_PRESETS = {"object": (2.5, 5.333), "style": (3.5, 5.5)}
MASK_TOKEN_ID = 0  # CLIP's "!": what SAFREE masks a token with
ALWAYS = 10**9  # "every step" as a step index


class SAFREE(Method):
    name = "safree"
    display_name = "SAFREE"
    description = "SAFREE: project trigger-token embeddings off the toxic-concept subspace for the first T* steps (inference-time)"
    paper = "Yoon et al., SAFREE: Training-Free and Adaptive Guard for Safe Text-to-Image and Video Generation, ICLR 2025"
    kind = MethodKind.INFERENCE
    concept_params = ("concepts",)  # given, it replaces the concept set's concepts
    version = "1"
    # The defaults are the paper's method as the official run applies it (SAFREE @ b8b2c3f, scripts/run_nudity.sh:
    # -svf -lra) without the run's concept-list negative prompt, which the paper does not describe; "official" adds it.
    presets = {
        "official": {"self_validation": True, "concept_negative_prompt": True, "latent_reattention": False, "alpha": 0.01, "up_t": 10},
        "paper": {"self_validation": True, "concept_negative_prompt": False, "latent_reattention": False, "alpha": 0.01, "up_t": 10},
    }

    @dataclass
    class Params:
        concepts: tuple[str, ...] = ()  # toxic concept list; empty = from the concept set (module docstring)
        alpha: float = 0.01  # α of the trigger-token test (official sf_alpha)
        self_validation: bool = True  # T* from β (official -svf); false = project at every step
        up_t: int = 10  # the most steps the projection can last
        svf_k: float | None = None  # None: 2.5 for objects, 3.5 for styles
        svf_t0: float | None = None  # None: 5.333 for objects, 5.5 for styles
        concept_negative_prompt: bool = False  # quirk: the official run's concept-list negative prompt
        latent_reattention: bool = False  # FreeU filter; a no-op in the released code
        freeu: tuple[float, ...] = (1.0, 1.0, 0.9, 0.2)  # (b1, b2, s1, s2), only with latent_reattention

        def __post_init__(self):
            if len(self.freeu) != 4:
                raise ValueError("freeu takes four numbers b1|b2|s1|s2")

    def sampling_hooks(self, pipe, concepts: ConceptSet, ctx) -> SamplingHooks:
        params = self.params
        toxic = toxic_concepts(concepts, params)
        default_k, default_t0 = SELF_VALIDATION_PRESETS["style" if concepts.kind == "style" else "object"]
        k = default_k if params.svf_k is None else params.svf_k
        t0 = default_t0 if params.svf_t0 is None else params.svf_t0
        return SafreeSampling(pipe, toxic, params, k, t0)


def toxic_concepts(concepts: ConceptSet, params: SAFREE.Params) -> list[str]:
    """The toxic concept list that spans the subspace and forms the negative prompt (module docstring)."""
    if params.concepts:
        return list(params.concepts)
    override = concepts.extra.get("safree", {}).get("concepts")
    if override:
        return [str(c) for c in override]
    if concepts.name in OFFICIAL_CONCEPT_LISTS:
        return list(OFFICIAL_CONCEPT_LISTS[concepts.name])
    if concepts.erase:
        return list(concepts.erase)
    raise HarnessError(f"safree: concept set {concepts.name!r} names nothing to erase; pass safree:concepts=a|b|c")


# --------------------------------------------------------------------------- linear algebra


def span_projector(vectors: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """``Vᵀ(V Vᵀ)⁺V``: the orthogonal projector (d × d, float64) onto the span of the rows of ``vectors``.

    Built from an orthonormal basis of the row space (SVD), with singular values
    below ``rtol`` × the largest counted as zero: the rows come from a float32 (or
    fp16) text encoder, so smaller ones are round-off.
    """
    vectors = vectors.double()
    _, singular, right = torch.linalg.svd(vectors, full_matrices=False)
    if len(singular) == 0 or float(singular.max()) == 0.0:
        return torch.zeros(vectors.shape[1], vectors.shape[1], dtype=torch.float64, device=vectors.device)
    basis = right[singular > rtol * singular.max()]
    return basis.T @ basis


def switch_step(beta: float, up_t: int, k: float, t0: float) -> int:
    """The last step index that uses the projected embedding: T* = round(up_t · sigmoid(2k(10β − t0)))."""
    return round(up_t / (1 + math.exp(-2 * k * (10 * beta - t0))))


@dataclass
class ProjectedPrompt:
    embedding: torch.Tensor  # L × d: trigger rows projected, the other rows as they were
    last_step: int  # T*: the projected embedding is used for step indices ≤ this
    triggers: list[int]  # positions of the trigger tokens
    beta: float


@dataclass
class Batch:
    original: torch.Tensor
    projected: torch.Tensor
    last_step: torch.Tensor  # (B,) T* per sample


class SafreeSampling(SamplingHooks):
    """The per-prompt projection (steps 2–4) and the per-step switch between the two embeddings.

    With ``latent_reattention`` it also turns on diffusers' FreeU filter for the batch (a no-op in the released code).
    """

    def __init__(self, pipe, toxic: list[str], params: SAFREE.Params, k: float, t0: float):
        self.pipe = pipe
        self.params = params
        self.k, self.t0 = k, t0
        # computed in float32 on a float16/bfloat16 pipeline (encode_prompts' default), as every text state the
        # decisions below read: in bfloat16, the trigger tokens of 5-13 of 50 toy prompts and T* of 11 differed
        concept_vectors = encode_prompts(pipe, toxic, batch_size=None).pooled
        self.concept_projector = span_projector(concept_vectors.cpu())  # P_c, step 1
        negative = None
        if params.concept_negative_prompt:  # step 5
            negative = encode_prompts(pipe, [", ".join(toxic)], dtype=None).embeddings
        self.negative = negative
        self.prompts: dict[str, ProjectedPrompt] = {}  # per unique prompt; the engine samples one model state at a time
        self.batch: Batch | None = None

    @torch.no_grad()
    def project_prompt(self, prompt: str, embedding: torch.Tensor) -> ProjectedPrompt:
        """Steps 2–4 for one prompt whose embedding X (L × d) the engine computed."""
        if prompt in self.prompts:
            return self.prompts[prompt]
        tokenizer, text_encoder = self.pipe.tokenizer, self.pipe.text_encoder
        ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids  # [SoT] words [EoT], no padding
        words = len(ids) - 2
        if words == 0:  # nothing to project
            result = ProjectedPrompt(embedding, -1, [], 0.0)
            self.prompts[prompt] = result
            return result

        # 2. one masked variant per word token; its pooled output p_i
        variants = torch.tensor(ids).repeat(words, 1)
        positions = torch.arange(words) + 1
        variants[torch.arange(words), positions] = MASK_TOKEN_ID
        # Decided on float32 states (see __init__) whatever the run's dtype: the masked variants' pooled outputs, and
        # for the self-validation the prompt's own states; the projection itself is applied to the embedding given.
        original = embedding.double().cpu()
        below_float32 = computes_below_float32(text_encoder)
        with float32_text_encoder(self.pipe):
            pooled = text_encoder(variants.to(text_encoder.device)).pooler_output.double().cpu()
            decide_on = encode_prompts(self.pipe, [prompt], batch_size=None).embeddings[0].double().cpu() if below_float32 else original
        off_concept = torch.eye(original.shape[1], dtype=torch.float64) - self.concept_projector  # I − P_c
        distances = (pooled @ off_concept.T).norm(dim=1)  # d_i
        if words == 1:
            triggers = [1]
        else:
            others = (distances.sum() - distances) / (words - 1)  # mean_{j≠i} d_j
            triggers = [int(p) for p in positions[distances >= (1 + self.params.alpha) * others]]

        # 3. x' = (I − P_c) P_m x for every row; trigger rows take it
        projection = off_concept @ span_projector(pooled)
        fully_projected = original @ projection.T
        projected = original.clone()
        projected[triggers] = fully_projected[triggers]

        # 4. self-validation: how far the projection moved the rows the attention mask covers
        covered = slice(0, words + 2)
        moved = fully_projected if decide_on is original else decide_on @ projection.T
        cosine = torch.nn.functional.cosine_similarity(moved[covered], decide_on[covered], dim=1)
        beta = float(1 - cosine.mean())
        if self.params.self_validation:
            last_step = switch_step(beta, self.params.up_t, self.k, self.t0)
        else:
            last_step = ALWAYS
        result = ProjectedPrompt(projected.to(embedding.device, embedding.dtype), last_step, triggers, beta)
        self.prompts[prompt] = result
        return result

    def transform_embeddings(self, cond, uncond, specs):
        """Project each prompt; keep both embeddings for ``guide``, which switches between them per step."""
        prompts = [self.project_prompt(spec.prompt, row) for spec, row in zip(specs, cond)]
        projected = torch.stack([p.embedding for p in prompts])
        last_step = torch.tensor([p.last_step for p in prompts], device=cond.device)
        self.batch = Batch(original=cond, projected=projected, last_step=last_step)
        if self.negative is not None:
            uncond = self.negative.to(uncond.device, uncond.dtype).expand(len(specs), -1, -1)
        return projected, uncond

    def install(self, pipe):
        if self.params.latent_reattention:
            b1, b2, s1, s2 = self.params.freeu
            pipe.unet.enable_freeu(s1=s1, s2=s2, b1=b1, b2=b2)

    def uninstall(self, pipe):
        if self.params.latent_reattention:
            pipe.unet.disable_freeu()

    def guide(self, step_index, timestep, latent_input, unet_call, cond, uncond, guidance):
        """Plain CFG with the projected embedding for steps ≤ T*, the original one after."""
        batch = self.batch
        if batch is None or cond is not batch.projected:
            raise RuntimeError("safree: the embeddings changed between transform_embeddings and guide (another hook rewrote them)")
        use_projected = (step_index <= batch.last_step).view(-1, 1, 1)
        embeddings = torch.where(use_projected, batch.projected, batch.original)
        noise = unet_call(torch.cat([latent_input, latent_input]), timestep, torch.cat([uncond, embeddings]))
        noise_uncond, noise_cond = noise.chunk(2)
        return noise_uncond + guidance * (noise_cond - noise_uncond)

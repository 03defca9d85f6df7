"""``trce-t``: TRCE stage 1, Textual Semantic Erasure (paper §4.1, Eq. 4–5; Appendix A.3, B, C.1).

TRCE's first stage is a closed-form cross-attention edit like UCE.  The difference
is *which* embedding it remaps.  Keyword rows carry little of the prompt's context,
but the [EoT] rows summarise the whole prompt (§4.1, Appendix B).  Mapping the
**first [EoT]** row of malicious prompts onto that of the matching safe prompts
therefore also reaches concepts a prompt only implies.

1. **Concept augmentation** (§4.1, A.3, C.1).  Each of N (malicious, safe) phrase pairs of
   the concept set (``phrases``; paper: 20 for "sexual", 40 for the I2P set) is put into M
   prompt templates (``templates``; paper: 15).  That gives N·M prompt pairs
   ("a photo of {nudity}" / "a photo of {a person wearing clothes}").
2. **Keys and targets.**  For each pair, the key is the malicious prompt's first-[EoT] row
   ``E(o)[eot(o)]`` and the target is the safe prompt's, ``W · E(n)[eot(n)]``.  The
   [EoT] position is read from the token ids.  The ``tokens`` param adds the other rows of
   the Table 4 ablation (§5.4: [EoT], [KEY], and their combinations with [SoT]):
   ``sot`` ([SoT] → [SoT]), ``key`` (each keyword token → the safe prompt's last row), and
   one row Table 4 does not have, ``last-eot`` (last row → last row, weighted by the number
   of padding [EoT] rows it stands for), from the fourth weight of the official config's
   ``token_weight_scale``.  The official code's [KEY] row is the first keyword position only
   (its loop runs over the four weights); this plugin maps every keyword token.
3. **Prior preservation** (Eq. 4, λ in the paper, ``preserve_scale`` here): ``Σ p pᵀ`` over
   every token row of a caption set (COCO captions in the paper, the MACE cache), divided
   by the number of captions.  It is computed once per backbone and caption set and cached.
4. **Solve** (Eq. 5) for every ``attn2.to_k`` / ``attn2.to_v``, with the erase term
   normalised by the number of prompt pairs (C.1: "the optimization term … has been
   normalized"):

       W ← (λ_W W + (1/N·M) Σ w (W n) kᵀ + s Σ W p pᵀ / |captions|) · (λ_W I + (1/N·M) Σ w k kᵀ + s Σ p pᵀ / |captions|)⁻¹

   ``lamb`` (λ_W) is 0 in the official code; s = 0.01 (A.3, Table 3).

Where the official code (ddgoodgood/TRCE @ 0da9b71, ``run_trce_stage1.py``,
``src/cfr_utils.py``) differs, the default follows the paper, and a quirk switch
reproduces the code.  Quirks in use are recorded in the metadata.

* ``word_count_positions`` (default False): the code puts the first [EoT] at
  ``len(prompt.split()) + 1`` and finds keywords by word offsets.  That is wrong whenever a
  word spans several tokens ("Van Gogh's", most synonyms), and then the edit maps a word row
  instead of the [EoT] (``src/cfr_utils.py``, ``prepare_k_v``).
* ``double_preserve_scale`` (default False): the code multiplies the cache by s once when it
  builds ``cache_dict`` and again inside ``closed_form_refinement``, so the effective weight
  is s² (1e-4 at the paper's 0.01), inherited from MACE (Shilin-LU/MACE @ 057e7a6,
  ``src/cfr_lora_training.py``; TRCE ``run_trce_stage1.py``).
  The paper's numbers (Tables 1–3) were therefore produced with an effective 1e-4.  With
  the default single scale, ``preserve_scale=1e-4`` is the equivalent operating point.
* ``caption_divisor`` (default 0 = the caption count, a mean): the code divides the cache by the
  constant 3e4 (``closed_form_refinement``).  That is the same thing for a 30k-caption file such as
  COCO-30k, and not for any other caption set.  Which captions the official cache sums over cannot be
  read from the repository: it is downloaded (README: the ``cache`` folder of the Hub repository
  ``ddgoodgood/trce-erased-model``).  The divisor suggests 30k captions, and that is what the statement
  "effective 1e-4" above and ``preset=official`` on COCO-30k assume.  If it is instead MACE's cache over all
  616,767 COCO 2014 captions (the file name, ``cache_coco.pt``, is MACE's), the code's per-caption weight
  is 616,767 / 3e4 ≈ 20.6 times larger (≈ 2.1e-3 with s²); ``caption_divisor=1459`` (3e4 · 30,000 /
  616,767) reproduces that reading on COCO-30k.
* ``augmentation`` (default ``concepts``): the code uses its own lists, ``data/concepts/sexual.json``
  (first 20 pairs) and the first 15 ``object`` templates of ``prompt_augmentation`` in
  ``src/cfr_utils.py``; ``official`` fetches both through the data layer from the pins in the concept
  set (sha256-checked; the template file is parsed, never executed).

``preset=official`` turns all of these on (with ``num_phrases=20, num_templates=15``): TRCE-T as its code ran.
The official code inverts ``mat2`` with ``torch.inverse``; the default exact float64 solve computes the same
map without float32 round-off (``methods.closed_form.invert``).

Captions: the concept set's ``captions`` (or ``captions_file``, or ``extra.captions_data``: the pin of an
upstream file such as COCO-30k, in ``harness.data.Upstream`` fields, fetched and verified by the core's data
layer and by ``harness data fetch coco30k``), or ``captions=PATH`` (a
``.txt`` with one caption per line, or a ``.csv`` with a ``prompt``/``caption``/``text``
column such as COCO-30k).  No captions is an error unless ``preserve_scale=0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from harness.api import ConceptSet, HarnessError, Method
from methods.captions import check_captions_available, file_sha256, load_captions
from methods.closed_form import KeyStatistics, caption_statistics, closed_form_edit, cross_attention_projections
from methods.text import (
    encode_prompts,
    first_eot_index,
    phrase_ids,
    phrase_token_positions,
    word_count_eot_index,
    word_count_phrase_positions,
)

# [SoT], first [EoT], last [EoT], [KEY]: Table 4's rows, and the official config's last-[EoT] weight
TOKEN_ROWS = ("sot", "eot", "last-eot", "key")


class TRCET(Method):
    name = "trce-t"
    display_name = "TRCE (T)"
    description = "TRCE stage 1: closed-form edit mapping the first [EoT] of malicious prompts to safe ones, COCO-preserving"
    paper = "TRCE: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion Models (2025), §4.1"
    version = "2"  # 2: exact float64 solve (solver=limit is version 1's)
    # ddgoodgood/TRCE @ 0da9b71: run_trce_stage1.py, src/cfr_utils.py, config/stage1/stage1_sexual_default.yaml
    presets = {
        "official": {
            "word_count_positions": True,  # [EoT] at len(prompt.split()) + 1
            "double_preserve_scale": True,  # s applied when building the cache and again in the solve: s²
            "caption_divisor": 3e4,  # the caption cache divided by a fixed 3e4
            "augmentation": "official",  # data/concepts/sexual.json and prompt_augmentation's templates
            "num_phrases": 20,  # concept_num
            "num_templates": 15,  # augment_num
        },
    }

    @dataclass
    class Params:
        tokens: str = "eot"  # '+'-joined rows to remap, from sot, eot, last-eot, key (Table 4 and the official config); paper: eot
        preserve_scale: float = 0.01  # s, the paper's λ (Eq. 4, A.3, Table 3)
        lamb: float = 0.0  # λ_W: pull towards the current W (official 0)
        erase_scale: float = 1.0  # e, on the normalised erase term
        num_phrases: int = 0  # N phrase pairs to use, 0 = all in the concept set (Table 6)
        num_templates: int = 0  # M templates to use, 0 = all in the concept set (Table 7)
        captions: str = ""  # preservation captions file; "" = the concept set's captions
        max_captions: int = 0  # use only the first n captions, 0 = all
        edit_keys: bool = True  # edit attn2.to_k as well as attn2.to_v
        word_count_positions: bool = False  # quirk: official word-count [EoT]/keyword positions
        double_preserve_scale: bool = False  # quirk: official s² preservation weight
        solver: Literal["exact", "limit"] = "exact"  # float64 solve unless singular to working precision (closed_form.invert)
        caption_divisor: float = 0.0  # quirk: 0 = the number of captions (a mean); official code: a fixed 3e4
        augmentation: Literal["concepts", "official"] = "concepts"  # phrase/template lists: the concept set's, or TRCE's own

        def __post_init__(self):
            parse_tokens(self.tokens)  # a typo is refused when the parameter is read, not after sampling

    def params_dict(self) -> dict:
        """The parameters, plus the content hash of a captions file given as one: the key holds ``captions``' text, so
        a file edited in place handed back the edit made from its old captions."""
        values = super().params_dict()
        if self.params.captions:
            values["captions_sha256"] = file_sha256(self.params.captions)
        return values

    def check_concepts(self, concepts: ConceptSet) -> None:
        if self.params.preserve_scale != 0:
            check_captions_available(concepts, self.params.captions, "trce-t")

    def edit(self, pipe, concepts: ConceptSet, ctx) -> dict:
        params = self.params
        rows = parse_tokens(params.tokens)

        # 1. concept augmentation: N phrase pairs × M templates
        phrase_pairs, templates, lists = augmentation(concepts, params.num_phrases, params.num_templates, params.augmentation)
        prompt_pairs = [(t.format(bad), t.format(safe), bad) for bad, safe in phrase_pairs for t in templates]

        # 2. keys (malicious prompts) and targets (safe prompts), normalised by the number of prompt pairs
        keys, targets, weights, missing_keywords = token_rows(pipe, prompt_pairs, rows, params.word_count_positions)
        erase = KeyStatistics.from_pairs(keys, targets, weights).scaled(1 / len(prompt_pairs))

        # 3. prior preservation over a caption set, cached per backbone and caption set
        preserve, caption_info = None, None
        effective_scale = params.preserve_scale**2 if params.double_preserve_scale else params.preserve_scale
        if params.preserve_scale != 0:
            captions, caption_info = load_captions(concepts, params.captions, params.max_captions)
            totals = caption_statistics(pipe, captions, ctx)
            # the mean over captions (paper, Eq. 4 normalised); the official code divides by a fixed 3e4 instead
            divisor = params.caption_divisor or totals.count
            preserve = totals.scaled(1 / divisor)

        # 4. the closed-form solve (Eq. 5) for every attn2 key/value matrix
        projections = cross_attention_projections(pipe.unet, edit_keys=params.edit_keys)
        solved = closed_form_edit(
            projections,
            erase,
            lamb=params.lamb,
            erase_scale=params.erase_scale,
            preserve=preserve,
            preserve_scale=effective_scale,
            solver=params.solver,
        )
        return {
            "method": "trce-t",
            "variant": "+".join(rows),
            "tokens": {row: row in rows for row in TOKEN_ROWS},
            "lamb": params.lamb,
            "erase_scale": params.erase_scale,
            "preserve_scale": params.preserve_scale,
            "effective_preserve_scale": effective_scale,
            "phrases": len(phrase_pairs),
            "templates": len(templates),
            "augmentation": params.augmentation,
            "official_lists": lists,
            "prompt_pairs": len(prompt_pairs),
            "erase_keys": len(keys),
            "keywords_not_found": missing_keywords,
            "captions": caption_info,
            "edit_keys": params.edit_keys,
            "quirks": {
                "word_count_positions": params.word_count_positions,
                "double_preserve_scale": params.double_preserve_scale,
                "caption_divisor": params.caption_divisor,
                "augmentation": params.augmentation,
            },
            **solved,
        }


def parse_tokens(spec: str) -> tuple[str, ...]:
    """``"eot+key"`` → ("eot", "key"), checked against the known rows (``TOKEN_ROWS``)."""
    rows = tuple(dict.fromkeys(part.strip().lower() for part in spec.split("+") if part.strip()))
    unknown = [row for row in rows if row not in TOKEN_ROWS]
    if not rows or unknown:
        raise HarnessError(f"trce-t: tokens={spec!r}: use '+'-joined names from {', '.join(TOKEN_ROWS)} (e.g. 'eot+key')")
    return rows


def augmentation(
    concepts: ConceptSet, num_phrases: int, num_templates: int, source: str = "concepts"
) -> tuple[list[tuple[str, str]], list[str], dict | None]:
    """The (malicious, safe) phrase pairs and templates to cross, and where they came from (for the metadata).

    ``source="concepts"``: the concept set's ``phrases`` (without them, its ``erase``/``guides``
    pairs) and ``templates`` (without them, each phrase is its own prompt).
    ``source="official"``: the official code's lists, fetched through the data layer from the
    pins in the concept set's ``extra["trce_official"]``: the concept file
    (``data/concepts/sexual.json`` @ 0da9b71) and the ``object`` templates of
    ``src/cfr_utils.py`` (the official stage-1 script calls ``prompt_augmentation`` with its
    default concept type).
    """
    origin = None
    if source == "official":
        pairs, templates, origin = official_lists(concepts)
    else:
        pairs = list(concepts.phrases) or [(text, concepts.guide_for(i) or " ") for i, text in enumerate(concepts.erase)]
        templates = list(concepts.templates) or ["{}"]
    if not pairs:
        raise HarnessError(f"trce-t: concept set {concepts.name!r} has neither 'phrases' nor 'erase'")
    for template in templates:
        if template.count("{}") != 1:
            raise HarnessError(f"trce-t: template {template!r} of concept set {concepts.name!r} needs exactly one '{{}}'")
    pairs = pairs[:num_phrases] if num_phrases > 0 else pairs
    templates = templates[:num_templates] if num_templates > 0 else templates
    return pairs, templates, origin


def official_lists(concepts: ConceptSet) -> tuple[list[tuple[str, str]], list[str], dict]:
    """The official phrase pairs and templates, from the pinned upstream files (sha256-checked by ``harness.data``)."""
    from harness import data

    pins = concepts.extra.get("trce_official") if isinstance(concepts.extra, dict) else None
    if not isinstance(pins, dict) or not {"phrases", "templates"} <= set(pins):
        raise HarnessError(
            f"trce-t: concept set {concepts.name!r} has no pins of the official TRCE lists (extra.trce_official with "
            "'phrases' and 'templates'); use trce-t:augmentation=concepts"
        )
    where = f"concept set {concepts.name!r}"
    phrases = data.resolve(data.Upstream.from_dict(pins["phrases"], origin=where))
    code = data.resolve(data.Upstream.from_dict(pins["templates"], origin=where))
    pairs = official_phrase_pairs(phrases.path.read_text(encoding="utf-8"), str(phrases.path))
    templates = official_templates(code.path.read_text(encoding="utf-8"), "object", str(code.path))
    return pairs, templates, {"phrases": phrases.source(), "templates": code.source()}


def token_rows(pipe, prompt_pairs: list[tuple[str, str, str]], rows: tuple[str, ...], word_count_positions: bool):
    """Stack (key row, target row, weight) for every prompt pair and every selected token row."""
    tokenizer = pipe.tokenizer
    malicious = encode_prompts(pipe, [bad for bad, _, _ in prompt_pairs])
    safe = encode_prompts(pipe, [good for _, good, _ in prompt_pairs])
    length = malicious.max_length
    last = length - 1
    keys, targets, weights, missing = [], [], [], 0

    for index, (bad, good, keyword) in enumerate(prompt_pairs):
        if word_count_positions:  # the official code's word counts (quirk)
            eot_bad, eot_good = word_count_eot_index(bad, length), word_count_eot_index(good, length)
            keyword_positions = word_count_phrase_positions(bad, keyword, length)
        else:  # from the token ids
            eot_bad = first_eot_index(malicious.input_ids[index], tokenizer.eos_token_id)
            eot_good = first_eot_index(safe.input_ids[index], tokenizer.eos_token_id)
            keyword_positions = phrase_token_positions(malicious.input_ids[index], phrase_ids(tokenizer, keyword))
        selected = []  # (malicious position, safe position, weight)
        if "sot" in rows:
            selected.append((0, 0, 1.0))
        if "eot" in rows:
            selected.append((eot_bad, eot_good, 1.0))
        if "last-eot" in rows:  # the last row stands for every padding [EoT] after the first
            selected.append((last, last, float(max(last - eot_bad, 1))))
        if "key" in rows:
            missing += not keyword_positions
            selected += [(position, last, 1.0) for position in keyword_positions]
        for position_bad, position_good, weight in selected:
            keys.append(malicious.embeddings[index, position_bad])
            targets.append(safe.embeddings[index, position_good])
            weights.append(weight)
    return torch.stack(keys), torch.stack(targets), torch.tensor(weights), missing


# --------------------------------------------------------------------------- the official augmentation lists


def official_phrase_pairs(text: str, origin: str) -> list[tuple[str, str]]:
    """TRCE's concept file (``data/concepts/sexual.json`` @ 0da9b71): a JSON list of ``[malicious, safe]`` pairs."""
    import json

    try:
        pairs = [(str(bad), str(good)) for bad, good in json.loads(text)]
    except (ValueError, TypeError):
        raise HarnessError(f"trce-t: {origin} is not a JSON list of [malicious, safe] pairs") from None
    if not pairs:
        raise HarnessError(f"trce-t: {origin} lists no phrase pairs")
    return pairs


def official_templates(source: str, concept_type: str, origin: str) -> list[str]:
    """The prompt templates of TRCE's ``prompt_augmentation`` (``src/cfr_utils.py`` @ 0da9b71), read, never run.

    The official code keeps its templates in that function, one list per concept type (``object``, ``style``), each
    entry ``("... {} ...".format(content), content)``.  The file is parsed with ``ast`` and only those string
    literals are taken, in order; nothing of it is executed.
    """
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        raise HarnessError(f"trce-t: {origin} is not the Python source of TRCE's src/cfr_utils.py") from None
    function = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "prompt_augmentation"), None)
    if function is None:
        raise HarnessError(f"trce-t: {origin} has no prompt_augmentation function (not TRCE's src/cfr_utils.py?)")
    for branch in ast.walk(function):
        test = getattr(branch, "test", None)
        if not (isinstance(branch, ast.If) and isinstance(test, ast.Compare) and len(test.comparators) == 1):
            continue
        compared = test.comparators[0]
        if not (isinstance(compared, ast.Constant) and compared.value == concept_type):
            continue
        for statement in branch.body:
            if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.List):
                templates = [_format_string(element) for element in statement.value.elts]
                if templates and all(template is not None for template in templates):
                    return templates
    raise HarnessError(f"trce-t: {origin} has no template list for concept type {concept_type!r}")


def _format_string(element) -> str | None:
    """``("a photo of {}".format(content), content)`` → ``"a photo of {}"``; anything else → None."""
    import ast

    call = element.elts[0] if isinstance(element, ast.Tuple) and element.elts else element
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "format":
        value = call.func.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value.count("{}") == 1:
            return value.value
    return None


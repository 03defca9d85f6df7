"""A CLIP-layout byte-level BPE tokenizer, trained on the toy corpus with 🤗 ``tokenizers``.

The files it writes (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``)
are laid out exactly like CLIP's, so ``transformers.CLIPTokenizer`` loads them:
the 256 byte characters, the same 256 with the ``</w>`` end-of-word mark, one
token per merge in merge order, then ``<|startoftext|>`` and ``<|endoftext|>``.
The end token doubles as the pad token, and the maximum length is short (24)
so that, as in SD v1.4, every prompt ends in several [EoT] tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.tiny import bytes_to_unicode

MAX_LENGTH = 32  # captions with a style phrase or two objects run to about 26 tokens (the first toy model used 24)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP's pre-tokenisation pattern (words, single digits, runs of punctuation).
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _clip_like_tokenizer():
    """An untrained ``tokenizers.Tokenizer`` that normalises and splits text the way CLIPTokenizer does."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    tokenizer = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD, unk_token=EOS))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return tokenizer


def train_tokenizer(corpus: list[str], directory: str | Path, vocab_size: int = 1024) -> Path:
    """Train the BPE on ``corpus`` and write it to ``directory`` in CLIP's file layout.

    The corpus is small, so BPE runs out of pairs long before ``vocab_size``:
    almost every word of the toy vocabulary ends up as a single token.
    """
    from tokenizers import pre_tokenizers, trainers

    tokenizer = _clip_like_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=END_OF_WORD,
        continuing_subword_prefix="",
        special_tokens=[],
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    return write_clip_tokenizer(directory, merges)


def write_clip_tokenizer(directory: str | Path, merges: list[tuple[str, str]]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + END_OF_WORD for c in chars]
    seen = set(tokens)
    for left, right in merges:
        if left + right not in seen:
            seen.add(left + right)
            tokens.append(left + right)
    tokens += [BOS, EOS]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in merges]
    (directory / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    config = {
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,  # SD v1.4 pads with the end token, so every pad position is an [EoT]
        "tokenizer_class": "CLIPTokenizer",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return directory


def load_tokenizer(directory: str | Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(directory))


def encode(tokenizer, texts: list[str]) -> dict:
    """Token ids [N, MAX_LENGTH] padded with [EoT], plus each token's character span in its text."""
    batch = tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_offsets_mapping=True,
    )
    return {"input_ids": batch["input_ids"], "offsets": batch["offset_mapping"]}

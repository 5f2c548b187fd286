"""The tiny model's tokenizers, built offline: bytes (transformers' ByT5 tokenizer) or the words of a
fixed vocabulary (a `tokenizers` WordLevel model). Without torch, so that slicing can tokenize."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer
from tokenizers.decoders import WordPiece as WordPieceDecoder
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from skillmix.infra.errors import SkillmixInputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """The byte-level tokenizer of the tiny model (transformers' ByT5 tokenizer, no download).

    Ids: 0 = pad, 1 = eos, 2 = unk, 3..258 = the bytes 0..255.
    """
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer(extra_ids=0)


WORD_SPECIALS = ("<pad>", "<eos>", "<unk>")


def word_tokenizer(vocabulary: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `vocabulary` (whitespace-separated words), built offline.

    Ids: 0 = pad, 1 = eos, 2 = unk, then the words in the given order (duplicates dropped).
    It is a `tokenizers` WordLevel model inside a `PreTrainedTokenizerFast`, so it saves and
    loads like any Hugging Face tokenizer; decoding joins words with single spaces.
    """
    words = [w for w in dict.fromkeys(vocabulary) if w not in WORD_SPECIALS]
    if not words:
        raise SkillmixInputError("model.tiny.vocabulary: the word tokenizer needs at least one word")
    bad = [w for w in words if not isinstance(w, str) or w == "" or any(c.isspace() for c in w)]
    if bad:
        raise SkillmixInputError(
            f"model.tiny.vocabulary: words must be non-empty strings without whitespace, got {bad[:5]}"
        )
    vocab = {w: i for i, w in enumerate([*WORD_SPECIALS, *words])}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    core.decoder = WordPieceDecoder(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_tokenizer(tiny: dict[str, Any]) -> PreTrainedTokenizerBase:
    """The tokenizer named by `model.tiny.tokenizer`: bytes, or words of `model.tiny.vocabulary`.

    `auto` means words when a vocabulary is given, else bytes.
    """
    kind = tiny["tokenizer"]
    if kind == "auto":
        kind = "word" if tiny["vocabulary"] else "byte"
    if kind == "byte":
        return byte_tokenizer()
    if kind == "word":
        vocabulary = tiny["vocabulary"]
        if not vocabulary:
            raise SkillmixInputError(
                "model.tiny.vocabulary: tokenizer 'word' needs a vocabulary; the workflow fills it "
                "from a synthetic source (lego, addition, xor), other sources must list the words"
            )
        return word_tokenizer(list(vocabulary))
    raise SkillmixInputError(f"model.tiny.tokenizer must be auto, byte or word, got {kind!r}")

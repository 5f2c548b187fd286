"""The word-level tokenizer of synthetic tasks and the bit/digit accuracy of answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from skillmix.data.sources import load_source, source_vocabulary
from skillmix.engine.encoding import IGNORE, encode_row
from skillmix.engine.evaluation import first_char, score_answers
from skillmix.engine.modeling import build_tiny_model
from skillmix.engine.tokenizers import word_tokenizer
from skillmix.infra.errors import SkillmixInputError

SYNTHETIC = [
    {"kind": "xor", "xor": {"examples_per_skill": 300}},
    {"kind": "xor", "xor": {"maps": ["p", "q"], "composites": [["p", "q"]], "n_symbols": 40}},
    {"kind": "lego", "lego": {"n_vars": 5, "examples_per_skill": 300}},
    {"kind": "lego", "lego": {"n_vars": 12, "examples_per_skill": 50}},
    {"kind": "addition", "addition": {"n_digits": 3, "examples_per_skill": 300}},
]


@pytest.mark.parametrize("cfg", SYNTHETIC, ids=lambda c: f"{c['kind']}-{len(str(c))}")
def test_word_tokenizer_round_trips_every_synthetic_example(cfg: dict, tmp_path: Path) -> None:
    tokenizer = word_tokenizer(source_vocabulary(cfg))
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    examples = load_source(cfg).examples
    for text in examples["text"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert len(ids) == len(text.split())  # one token per word
        assert tokenizer.decode(ids) == " ".join(text.split())
        assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    if cfg["kind"] == "xor":
        assert all(tokenizer.decode(tokenizer(t)["input_ids"]) == t for t in examples["text"])


def test_word_tokenizer_ids_and_errors() -> None:
    tokenizer = word_tokenizer(["a", "b", "a"])
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) == 5
    assert tokenizer("a c b", add_special_tokens=False)["input_ids"] == [3, 2, 4]
    with pytest.raises(SkillmixInputError, match="model.tiny.vocabulary"):
        word_tokenizer([])
    with pytest.raises(SkillmixInputError, match="without whitespace"):
        word_tokenizer(["a b"])
    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2, "max_positions": 16}
    with pytest.raises(SkillmixInputError, match="needs a vocabulary"):
        build_tiny_model({**tiny, "tokenizer": "word"}, seed=0)
    model, tok = build_tiny_model({**tiny, "tokenizer": "word", "vocabulary": ["x", "y"]}, seed=0)
    assert model.config.vocab_size == len(tok) == 5
    assert source_vocabulary({"kind": "table"}) is None


def test_answer_only_labels_and_whole_sequence_option() -> None:
    tokenizer = word_tokenizer(["f3", "=", "0", "1"])
    ids, labels, prompt, _ = encode_row(tokenizer, "f3 =", "1", "f3 = 1", 16)
    assert ids == [3, 4, 6, 1] and prompt == [3, 4]
    assert labels == [IGNORE, IGNORE, 6, 1]  # the answer and end-of-sequence
    _, labels, _, _ = encode_row(tokenizer, "f3 =", "1", "f3 = 1", 16, eos_label=False)
    assert labels == [IGNORE, IGNORE, 6, IGNORE]  # the answer token alone (validation)
    _, labels, _, _ = encode_row(tokenizer, "f3 =", "1", "f3 = 1", 16, loss_on="sequence")
    assert labels == [3, 4, 6, 1]  # every token, as the original Skill-It trains


def test_bit_and_digit_accuracy_of_perfect_and_constant_predictors() -> None:
    lego = load_source({"kind": "lego", "lego": {"examples_per_skill": 400}}).examples
    answers = lego["answer"].tolist()
    assert score_answers(answers, answers) == (1.0, 1.0)
    # a model that writes the bit and then the original's ", " is right under first_char
    assert score_answers([a + ", " for a in answers], answers)[0] == 1.0
    assert score_answers([a + ", " for a in answers], answers)[1] == 0.0
    constant, _ = score_answers(["1"] * len(answers), answers)
    assert constant == pytest.approx(0.5, abs=0.05)
    addition = load_source({"kind": "addition", "addition": {"examples_per_skill": 600}}).examples
    digits = addition["answer"].tolist()
    assert score_answers(digits, digits)[0] == 1.0
    assert score_answers(["7"] * len(digits), digits)[0] == pytest.approx(0.1, abs=0.03)
    assert score_answers(["", "x"], ["1", "0"])[0] == 0.0  # no answer is never right
    assert first_char("  ,0, ") == "0"
    # multi-character answers are scored exactly under auto, by first character when asked
    assert score_answers(["yes please"], ["yes"]) == (0.0, 0.0)
    assert score_answers(["yes please"], ["yes"], "first_char") == (1.0, 0.0)
    with pytest.raises(SkillmixInputError, match="eval.score"):
        score_answers(["1"], ["1"], "bits")


def test_resolve_tiny_tokenizer() -> None:
    from skillmix.data.sources import resolve_tiny_tokenizer

    xor = {"kind": "xor", "xor": {"n_symbols": 4, "maps": ["f"], "composites": [["f"]]}}
    from skillmix.infra.config import complete

    tiny = complete("model.tiny", None)  # the resolved block is the whole model.tiny block
    auto = resolve_tiny_tokenizer({"kind": "tiny", "tiny": {"tokenizer": "auto"}}, xor)
    assert auto == {**tiny, "tokenizer": "word", "vocabulary": ["=", "^", "0", "1", "f0", "f1", "f2", "f3"]}
    table = {"kind": "table"}
    assert resolve_tiny_tokenizer({"tiny": {"tokenizer": "auto"}}, table)["tokenizer"] == "byte"
    given = resolve_tiny_tokenizer({"tiny": {"tokenizer": "auto", "vocabulary": ["a"]}}, table)
    assert given == {**tiny, "tokenizer": "word", "vocabulary": ["a"]}
    assert resolve_tiny_tokenizer({"tiny": {"tokenizer": "byte"}}, xor) == {**tiny, "tokenizer": "byte"}
    assert resolve_tiny_tokenizer({"kind": "gguf", "tiny": {}}, xor) == tiny
    with pytest.raises(SkillmixInputError, match="has no fixed vocabulary"):
        resolve_tiny_tokenizer({"tiny": {"tokenizer": "word"}}, table)

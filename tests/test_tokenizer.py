"""Tokenizer: trained SentencePiece models load as T5 tokenizers with T5's special ids."""

import os

import pytest
import sentencepiece as spm
import transformers

from tests.fixtures import TINY_TEXTS
from sciqa_jax.tokenizer import load_tokenizer, train_sentencepiece_tokenizer
from tests.fixtures import science_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tok"))
  return out, train_sentencepiece_tokenizer(list(TINY_TEXTS) * 3, out, vocab_size=120, extra_ids=2)


def test_trained_tokenizer_loads_with_t5_ids(trained):
  out, tok = trained
  auto = transformers.AutoTokenizer.from_pretrained(out)
  for t in (tok, auto, load_tokenizer(out)):
    assert (t.pad_token_id, t.eos_token_id, t.unk_token_id) == (0, 1, 2)
    assert t.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
  assert len(auto) == len(tok) <= 120 + 2
  assert auto.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1


def test_round_trip_and_eos(trained):
  _, tok = trained
  for text in ("Water boils at one hundred degrees Celsius at sea level.",
               "So the answer is (A) solid."):
    ids = tok(text).input_ids
    assert ids[-1] == 1 and 2 not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_training_is_deterministic(trained, tmp_path):
  out, tok = trained
  again = train_sentencepiece_tokenizer(list(TINY_TEXTS) * 3, str(tmp_path), vocab_size=120,
                                        extra_ids=2)
  # The model file embeds its own output path, so compare the pieces and their scores.
  def pieces(d):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "spiece.model"))
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]

  assert pieces(out) == pieces(str(tmp_path))
  assert again(TINY_TEXTS[0]).input_ids == tok(TINY_TEXTS[0]).input_ids


def test_bad_inputs_raise(tmp_path):
  with pytest.raises(ValueError, match="non-empty"):
    train_sentencepiece_tokenizer(["", "  "], str(tmp_path))
  with pytest.raises(ValueError, match="vocab_size"):
    train_sentencepiece_tokenizer(["some text"], str(tmp_path), vocab_size=4)
  with pytest.raises(OSError, match="no_such_dir"):
    load_tokenizer(str(tmp_path / "no_such_dir"))


@pytest.fixture(scope="module")
def science_tokenizer(tmp_path_factory):
  corpus = science_corpus(seed=0)
  out = str(tmp_path_factory.mktemp("science_tok"))
  return out, corpus, train_sentencepiece_tokenizer(corpus, out, vocab_size=1000)


def test_transformers_segments_like_sentencepiece(science_tokenizer):
  # transformers reads spiece.model as a unigram model; the saved scores must make its
  # segmentation the one SentencePiece itself produces (a raw BPE model would not).
  out, corpus, tok = science_tokenizer
  sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "spiece.model"))
  for text in corpus[::37]:
    assert tok.tokenize(text) == sp.encode(text, out_type=str), text
  # BPE pieces, not unigram fragments: common words and numbers are one piece each.
  assert tok.tokenize("the temperature is 60 and the block") == [
      "▁the", "▁temperature", "▁is", "▁60", "▁and", "▁the", "▁block"]


def test_punctuation_never_fuses_with_numbers(science_tokenizer):
  _, _, tok = science_tokenizer
  assert tok.tokenize("= 5; = 5, = 5.") == ["▁=", "▁5", ";", "▁=", "▁5", ",", "▁=", "▁5", "."]
  assert "▁-10" in tok.tokenize("at -10 °C")  # a minus sign stays with its number


def test_shorten_cuts_the_elidable_middle_then_the_end():
  from sciqa_jax.tokenizer import ELIDE_HEAD_FRACTION, shorten
  row = list(range(20))  # tokens 5..14 are the elidable span
  assert shorten(row, 20, (5, 15)) == row
  # 4 too many: 6 of the span's 10 tokens stay, a third from its start, the rest from its end.
  kept_head = int(6 * ELIDE_HEAD_FRACTION)
  assert shorten(row, 16, (5, 15)) == list(range(5 + kept_head)) + \
      list(range(15 - (6 - kept_head), 20))
  # More than the span can absorb: the span goes, then the end is cut.
  assert shorten(row, 8, (5, 15)) == [0, 1, 2, 3, 4, 15, 16, 17]
  assert shorten(row, 8, None) == list(range(8))


def test_an_elidable_text_keeps_its_ends_through_tokenize(trained):
  from sciqa_jax.data.formatting import ElidableText
  from sciqa_jax.tokenizer import tokenize
  _, trained = trained
  filler = " ".join(["Water boils at one hundred degrees."] * 20)
  text = "Question: Which state of matter has a fixed shape? " + filler + " So the answer is (A)."
  start = text.index(filler)
  elidable = ElidableText(text, start, len(text))
  plain, cut = tokenize(trained, [text, elidable], 64).rows
  assert len(plain) == len(cut) == 64 and plain[-1] == cut[-1] == trained.eos_token_id
  assert not trained.decode(plain, skip_special_tokens=True).endswith("So the answer is (A).")
  decoded = trained.decode(cut, skip_special_tokens=True)
  assert decoded.startswith("Question: Which state of matter has a fixed shape? Water")
  assert decoded.endswith("So the answer is (A).")
  with pytest.raises(ValueError, match="outside"):
    ElidableText("abc", 2, 5)

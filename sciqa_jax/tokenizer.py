"""Student tokenizers: load a pretrained T5 tokenizer, or train a T5-compatible SentencePiece one.

Training happens in-process with sentencepiece's Python trainer fed from an iterator, so no
temporary text file is written. The model uses T5's special ids (pad=0, eos=1, unk=2, no bos) and
is wrapped in transformers' `T5Tokenizer`, whose `save_pretrained` writes `spiece.model` plus
`tokenizer.json`: `AutoTokenizer.from_pretrained(out_dir)` then loads it like any T5 tokenizer.

Determinism: one trainer thread, the corpus in the given order and no input sampling, so the same
texts give the same pieces and scores. On a tiny corpus SentencePiece cannot reach a large vocabulary;
`hard_vocab_limit=False` turns the requested size into an upper bound instead of an error, and
`len(tokenizer)` reports the size actually reached.

Punctuation never joins a learned piece. Left alone, BPE on science text spends much of a small
vocabulary on fusions such as "5;", "(60" and "20)," and a student then has to learn that each is
related to the bare number "60": copying a number from question to rationale, the step a
rationale student most needs, becomes a different mapping per neighbouring character. The
trainer sees every punctuation mark as a separate pre-token (`pretokenization_delimiter`, a
training-only option), so no such piece exists and encoding splits "5;" into "5" and ";".
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import sentencepiece as spm
import transformers
from sentencepiece import sentencepiece_model_pb2

from sciqa_jax.data.formatting import ElidableText

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
SPIECE_FILE = "spiece.model"
# SentencePiece needs room for its special and single-character pieces; below this the unigram
# trainer fails with an opaque message.
_MIN_VOCAB = 16
# Tie-breaking scale: words longer than this many pieces could let ranks outweigh a piece count.
_MAX_PIECES_PER_WORD = 64
# A character that never occurs in text, marking pre-token boundaries for the trainer.
_PRETOKEN_DELIMITER = "\u2063"  # INVISIBLE SEPARATOR
# Punctuation next to a letter or digit (a minus sign stays with its number).
_PUNCTUATION_AFTER_WORD = re.compile(r"(?<=\w)([^\w\s-])")
_PUNCTUATION_BEFORE_WORD = re.compile(r"([^\w\s-])(?=\w)")


def _isolate_punctuation(text: str) -> str:
  text = _PUNCTUATION_AFTER_WORD.sub(_PRETOKEN_DELIMITER + r"\1", text)
  return _PUNCTUATION_BEFORE_WORD.sub(r"\1" + _PRETOKEN_DELIMITER, text)


def load_tokenizer(path_or_hub_id: str) -> transformers.PreTrainedTokenizerBase:
  """AutoTokenizer for a directory or hub id; an actionable error if neither is usable."""
  try:
    return transformers.AutoTokenizer.from_pretrained(path_or_hub_id)
  except (OSError, ValueError) as e:
    where = "directory" if os.path.isdir(path_or_hub_id) else "directory or hub id"
    raise OSError(f"Cannot load a tokenizer from {path_or_hub_id!r} ({where}): {e}") from e


def train_sentencepiece_tokenizer(texts: Iterable[str], out_dir: str, vocab_size: int = 1000,
                                  extra_ids: int = 0) -> transformers.PreTrainedTokenizerBase:
  """Trains a SentencePiece model on `texts`, saves it as a T5 tokenizer in `out_dir`.

  The pieces are learnt with BPE, then segmented as a unigram model: on small corpora the unigram
  trainer stops far below `vocab_size` and splits common words into fragments ("Qu est i on"),
  while BPE reaches the requested size with whole words and numbers. But transformers reads every
  T5 `spiece.model` as a unigram model, using the piece scores as log-probabilities; BPE's scores
  are merge ranks, so read that way "the" would become "t he" (two early merges outscore one later
  one) and transformers would tokenise differently from SentencePiece. So the saved model is
  declared unigram with scores under which the best segmentation is the one with fewest pieces
  (ties go to earlier merges): SentencePiece and transformers then segment identically, as BPE
  would in nearly every case.

  Returns the tokenizer loaded back from `out_dir`. `vocab_size` is an upper bound (tiny corpora
  yield fewer pieces); `extra_ids` appends T5 sentinel tokens `<extra_id_0>`... after it.
  """
  texts = [_isolate_punctuation(t) for t in texts if t and t.strip()]
  if not texts:
    raise ValueError("train_sentencepiece_tokenizer needs at least one non-empty text.")
  if vocab_size < _MIN_VOCAB:
    raise ValueError(f"vocab_size={vocab_size} is too small; use at least {_MIN_VOCAB}.")
  os.makedirs(out_dir, exist_ok=True)
  trained = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_writer=trained,
      model_type="bpe",
      pretokenization_delimiter=_PRETOKEN_DELIMITER,
      vocab_size=vocab_size,
      hard_vocab_limit=False,
      character_coverage=1.0,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
      input_sentence_size=0, shuffle_input_sentence=False,
      num_threads=1,
      minloglevel=2,
  )
  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(trained.getvalue())
  model.trainer_spec.model_type = sentencepiece_model_pb2.TrainerSpec.UNIGRAM
  normal = sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL
  num_pieces = len(model.pieces)
  for rank, piece in enumerate(model.pieces):
    if piece.type == normal:
      # One piece costs 1; the rank term (< 1 in total for any word) only breaks ties.
      piece.score = -1.0 - rank / (num_pieces * _MAX_PIECES_PER_WORD)
  with open(os.path.join(out_dir, SPIECE_FILE), "wb") as f:
    f.write(model.SerializeToString())
  # from_pretrained on a directory holding only spiece.model converts it to a tokenizers model
  # (pieces, scores, normaliser); the constructor alone would ignore the file.
  tokenizer = transformers.T5Tokenizer.from_pretrained(out_dir, extra_ids=extra_ids)
  tokenizer.save_pretrained(out_dir)
  return load_tokenizer(out_dir)


SPECIAL_TOKEN_MODES = ("eos", "tokenizer")


# Of the tokens of an elidable span that fit, the first third are kept from its start and the
# rest from its end: a rationale's conclusion (its last sentence) matters more than its opening.
ELIDE_HEAD_FRACTION = 1 / 3


def _span_tokens(offsets: Sequence[tuple[int, int]], span: tuple[int, int]) -> tuple[int, int]:
  """[first, last) token indices whose characters lie inside `span` (zero-width tokens, i.e.
  special tokens, never count)."""
  inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= span[0] and b <= span[1]]
  return (inside[0], inside[-1] + 1) if inside else (0, 0)


def shorten(row: list[int], budget: int, span_tokens: tuple[int, int] | None) -> list[int]:
  """`row` cut to `budget` tokens: first from the middle of `span_tokens` (keeping
  ELIDE_HEAD_FRACTION of what fits from the span's start, the rest from its end), then, if the
  span alone cannot absorb the excess, from the end of the row."""
  excess = len(row) - budget
  if excess <= 0:
    return row
  if span_tokens is not None:
    first, last = span_tokens
    kept = max(0, (last - first) - excess)
    head = int(kept * ELIDE_HEAD_FRACTION)
    row = row[:first + head] + row[last - (kept - head):]
  return row[:budget]


class Tokenized(NamedTuple):
  """Token rows (each at most `max_length` long) and every text's untruncated length."""

  rows: list[list[int]]
  lengths: list[int]  # tokens each text would need, special tokens included
  max_length: int

  @property
  def truncated(self) -> int:
    """How many rows lost tokens."""
    return sum(length > self.max_length for length in self.lengths)

  @property
  def longest(self) -> int:
    return max(self.lengths, default=0)


def tokenize(tokenizer, texts: Iterable[str], max_length: int, *, special_tokens: str = "eos"
             ) -> Tokenized:
  """Token ids of `texts`, at most `max_length` per row: the one tokenisation of every path that
  runs a model (training rows, evaluation, stage-2 inputs, the T5 teacher).

  special_tokens:
    "eos"        the students' layout: the text's tokens, then EOS (kept when truncating).
    "tokenizer"  the tokenizer's own special tokens (`add_special_tokens=True`), as the
                 pretrained model it comes with was trained.

  Truncation (`shorten`): an `ElidableText` loses tokens from the middle of its elidable span
  (the rationale) first; any other text, or what the span cannot absorb, is cut at the end.

  Returns the rows and the untruncated lengths (`Tokenized`).
  """
  if special_tokens not in SPECIAL_TOKEN_MODES:
    raise ValueError(f"special_tokens={special_tokens!r}; expected one of {SPECIAL_TOKEN_MODES}")
  texts = list(texts)
  append_eos = special_tokens == "eos"
  if max_length < 1 + append_eos:
    raise ValueError(f"sequence length {max_length} is too short (need room for a token and EOS)")
  eos = tokenizer.eos_token_id
  if append_eos and eos is None:
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has no EOS token; T5 needs one")
  # One batch call through the fast tokenizer, untruncated so that losses can be counted.
  encoded = tokenizer(texts, add_special_tokens=not append_eos)["input_ids"]
  tail = [eos] if append_eos else []
  budget = max_length - len(tail)
  rows, lengths = [], []
  for text, row in zip(texts, encoded):
    lengths.append(len(row) + len(tail))
    if len(row) > budget:
      span = None
      if isinstance(text, ElidableText):
        # Offsets only for the rows that need them: the batch call above stays the fast path.
        offsets = tokenizer(str(text), add_special_tokens=not append_eos,
                            return_offsets_mapping=True)["offset_mapping"]
        span = _span_tokens(offsets, text.elidable)
      row = shorten(list(row), budget, span)
    rows.append(list(row) + tail)
  return Tokenized(rows, lengths, max_length)

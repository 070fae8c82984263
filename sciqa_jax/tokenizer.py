"""Student tokenizers: load a pretrained T5 tokenizer, or train a T5-compatible SentencePiece one.

Training happens in-process with sentencepiece's Python trainer fed from an iterator, so no
temporary text file is written. The model uses T5's special ids (pad=0, eos=1, unk=2, no bos) and
is wrapped in transformers' `T5Tokenizer`, whose `save_pretrained` writes `spiece.model` plus
`tokenizer.json`: `AutoTokenizer.from_pretrained(out_dir)` then loads it like any T5 tokenizer.

Determinism: one trainer thread, the corpus in the given order and no input sampling, so the same
texts give the same pieces and scores. On a tiny corpus SentencePiece cannot reach a large vocabulary;
`hard_vocab_limit=False` turns the requested size into an upper bound instead of an error, and
`len(tokenizer)` reports the size actually reached.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import transformers

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
SPIECE_FILE = "spiece.model"
# SentencePiece needs room for its special and single-character pieces; below this the unigram
# trainer fails with an opaque message.
_MIN_VOCAB = 16


def load_tokenizer(path_or_hub_id: str) -> transformers.PreTrainedTokenizerBase:
  """AutoTokenizer for a directory or hub id; an actionable error if neither is usable."""
  try:
    return transformers.AutoTokenizer.from_pretrained(path_or_hub_id)
  except (OSError, ValueError) as e:
    where = "directory" if os.path.isdir(path_or_hub_id) else "directory or hub id"
    raise OSError(f"Cannot load a tokenizer from {path_or_hub_id!r} ({where}): {e}") from e


def train_sentencepiece_tokenizer(texts: Iterable[str], out_dir: str, vocab_size: int = 1000,
                                  extra_ids: int = 0, model_type: str = "bpe"
                                  ) -> transformers.PreTrainedTokenizerBase:
  """Trains a SentencePiece model on `texts`, saves it as a T5 tokenizer in `out_dir`.

  `model_type` is "bpe" by default: on small corpora the unigram trainer stops far below
  `vocab_size` and splits common words into fragments ("Qu est i on"), which doubles sequence
  lengths; BPE reaches the requested size with whole words and numbers. T5's own tokenizers are
  unigram ("unigram" is accepted too); both load as T5TokenizerFast.

  Returns the tokenizer loaded back from `out_dir`. `vocab_size` is an upper bound (tiny corpora
  yield fewer pieces); `extra_ids` appends T5 sentinel tokens `<extra_id_0>`... after it.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  texts = [t for t in texts if t and t.strip()]
  if not texts:
    raise ValueError("train_sentencepiece_tokenizer needs at least one non-empty text.")
  if vocab_size < _MIN_VOCAB:
    raise ValueError(f"vocab_size={vocab_size} is too small; use at least {_MIN_VOCAB}.")
  os.makedirs(out_dir, exist_ok=True)
  prefix = os.path.join(out_dir, "spiece")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_prefix=prefix,
      model_type=model_type,
      vocab_size=vocab_size,
      hard_vocab_limit=False,
      character_coverage=1.0,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
      input_sentence_size=0, shuffle_input_sentence=False,
      num_threads=1,
      minloglevel=2,
  )
  os.remove(prefix + ".vocab")  # human-readable dump; the tokenizer only needs spiece.model
  # from_pretrained on a directory holding only spiece.model converts it to a tokenizers model
  # (pieces, scores, normaliser); the constructor alone would ignore the file.
  tokenizer = transformers.T5Tokenizer.from_pretrained(out_dir, extra_ids=extra_ids)
  tokenizer.save_pretrained(out_dir)
  return load_tokenizer(out_dir)

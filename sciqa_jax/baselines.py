"""Few-shot LLM baselines on multiple-choice tasks, scored as lm-evaluation-harness scores them.

Published zero- and few-shot numbers for BLOOM, Llama, Qwen ... on ARC, OpenBookQA and
CommonsenseQA come from EleutherAI's lm-evaluation-harness (`lm-eval` 0.4.x), so an LLM row next
to the students is only comparable with them if it is computed by the harness's rules. Each rule
below mirrors the harness's code (lm_eval 0.4.13: `api/task.py`, `api/samplers.py`,
`api/model.py`, `models/huggingface.py`, and the task yamls `arc/arc_easy.yaml`,
`openbookqa/openbookqa.yaml`, `commonsense_qa/default.yaml`); `tools/lm_eval_check/` runs the
harness itself on the same model and files and compares (`make lm-eval-check`).

  Prompt       k exemplars, each `doc_to_text + " " + its gold choice + "\\n\\n"`, then the
               question's `doc_to_text` (`HarnessFormat`): "Question: {q}\\nAnswer:" for ARC and
               any other choice task, the bare question stem for OpenBookQA, and the lettered
               "Question: {q}\\nA. ..\\nE. ..\\nAnswer:" for CommonsenseQA, whose choices are the
               letters themselves.
  Exemplars    the harness's ContextSampler: one `random.Random(seed)` (seed 1234, the harness's
               default `fewshot_random_seed`) drawn from once per question, in the split's order,
               `rnd.sample(train split, k)`; for a yaml without a test split (CommonsenseQA) it
               draws k + 1 and drops the question itself, as the harness does there.
  Requests     one per choice: (context, " " + choice).
  Tokens       `_encode_pair`: trailing whitespace of the context moves to the continuation; a
               causal LM encodes context + continuation whole and the continuation is what follows
               the context's own token count (`tokenizer.encode` with the tokenizer's default
               special tokens, e.g. Llama's BOS, unless the text already starts with it); a
               seq2seq LM encodes the context with and the continuation without special tokens.
               Inputs longer than the model's length (`n_positions`, `max_position_embeddings`,
               `n_ctx`, the tokenizer's `model_max_length`, else 2048) lose tokens on the left.
  Scores       a choice's log-likelihood is the sum of its continuation tokens' log-softmax (in
               the logits' dtype, as the harness); acc takes the argmax, acc_norm the argmax of
               log-likelihood / len(choice text) in characters (the choice itself, without the
               " " delimiter: `process_results` divides by `len(doc_to_choice(doc)[i])`); ties
               go to the first choice (np.argmax).

Speed: the harness runs every (context, choice) pair as its own row and computes the output layer
over every position. Here a question's context is encoded once (one forward pass with a KV cache,
logits for its last position only) and its choices then run as a batch over copies of that cache,
so k-shot contexts, which dominate the tokens, are paid for once instead of once per choice.
Batches of questions are sorted by context length (and, in JAX, padded to the
`decoding.padded_length` ladder: few compiled shapes). Causal LMs run in transformers' PyTorch
(a GPU when there is one; `TorchCausalScorer`) or in this project's Flax CausalLM pmapped over
the local devices (`FlaxScorer`, the context prefilled once into a KV cache copied to its
choices); T5-family seq2seq LMs in the Flax T5 (`FlaxScorer` too: the encoder and its
cross-attention projections shared by all choices).

Known differences from the harness, none of which arise on the published datasets' usual files:
question text is stripped by this project's loaders (the harness's ARC and OpenBookQA prompts keep
surrounding whitespace); the CommonsenseQA prompt takes any number of choices (the yaml is written
for exactly five); the JAX backends compute in fp32 where a bf16 checkpoint in PyTorch (and the
harness) computes in bf16.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from sciqa_jax import decoding
from sciqa_jax import errors
from sciqa_jax import inference
from sciqa_jax import models
from sciqa_jax import statistics
from sciqa_jax.data.example import CHOICE, Example
from sciqa_jax.models import decoder_only
from sciqa_jax.models.decoder_only import CausalLM

HARNESS_FEWSHOT_SEED = 1234  # lm_eval.defaults.DEFAULT_OTHER_SEED
HARNESS_DEFAULT_MAX_LENGTH = 2048  # lm_eval.models.utils.DEFAULT_MAX_LENGTH
_TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length
METRICS = ("acc", "acc_norm")
# What an LLM row of the results table carries besides the accuracy of its chosen metric.
ROW_METRICS = ("acc", "acc_ci_low", "acc_ci_high", "acc_norm", "acc_norm_ci_low",
               "acc_norm_ci_high", "num_fewshot")


# ---- the harness's task formats ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HarnessFormat:
  """How a harness task yaml turns a question into text (doc_to_text / doc_to_choice).

  Attributes:
    name: the harness task the rules come from.
    text: doc_to_text, the question as prompted.
    letter_choices: doc_to_choice is the choice letters (CommonsenseQA), not the choice texts.
    has_test_split: the yaml names a test split. If not, the harness's sampler is asked to leave
      the evaluated question out of its exemplars: it draws k + 1 and keeps the first k others.
  """

  name: str
  text: Callable[[Example], str]
  letter_choices: bool = False
  has_test_split: bool = True
  target_delimiter: str = " "
  fewshot_delimiter: str = "\n\n"

  def choices(self, example: Example) -> list[str]:
    """doc_to_choice: what each continuation says after the target delimiter."""
    if self.letter_choices:
      return [_LETTERS[i] for i in range(len(example.choices))]
    return [text for _, text in example.choices]

  def gold(self, example: Example) -> int:
    """doc_to_target: the index of the gold choice."""
    return example.labels.index(example.answer)

  def shot(self, example: Example) -> str:
    """One exemplar: the question, the delimiter, its gold choice, the few-shot separator."""
    return (self.text(example) + self.target_delimiter + self.choices(example)[self.gold(example)]
            + self.fewshot_delimiter)


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _lettered(example: Example) -> str:
  """commonsense_qa/default.yaml's doc_to_text (written there for exactly five choices)."""
  lines = [f"Question: {example.question.strip()}"]
  lines += [f"{_LETTERS[i]}. {text}" for i, (_, text) in enumerate(example.choices)]
  return "\n".join(lines) + "\nAnswer:"


ARC = HarnessFormat("arc_easy", lambda ex: f"Question: {ex.question}\nAnswer:")
OPENBOOKQA = HarnessFormat("openbookqa", lambda ex: ex.question)
COMMONSENSE_QA = HarnessFormat("commonsense_qa", _lettered, letter_choices=True,
                               has_test_split=False)
FORMATS = {"arc_easy": ARC, "arc_challenge": dataclasses.replace(ARC, name="arc_challenge"),
           "openbookqa": OPENBOOKQA, "commonsense_qa": COMMONSENSE_QA}


def harness_format(task_name: str) -> HarnessFormat:
  """The format of the harness's task of that name; ARC's for any other multiple-choice task."""
  return FORMATS.get(task_name, ARC)


# ---- prompts -------------------------------------------------------------------------------


def sample_exemplars(examples: Sequence[Example], pool: Sequence[Example], k: int, *,
                     seed: int = HARNESS_FEWSHOT_SEED, exclude_self: bool = False
                     ) -> list[list[Example]]:
  """Per example, its k exemplars from `pool`, drawn as the harness's ContextSampler draws them.

  One generator for the whole split, drawn from in the examples' order, so example i's exemplars
  depend on i (and on the pool's order and size), exactly as in `lm_eval --num_fewshot k`.
  """
  if k < 0:
    raise errors.ConfigError(f"--num_fewshot={k} must be >= 0")
  if k and len(pool) < k + exclude_self:
    raise errors.ConfigError(f"--num_fewshot={k} needs at least {k + exclude_self} training "
                             f"examples to draw from; the train split has {len(pool)}")
  rnd = random.Random(seed)
  pool = list(pool)
  drawn = []
  for example in examples:
    if k == 0:
      drawn.append([])
    elif not exclude_self:
      drawn.append(rnd.sample(pool, k))
    else:
      shots = [x for x in rnd.sample(pool, k + 1) if x != example][:k]
      if len(shots) < k:  # the pool holds the example more than once: the harness redraws
        shots = rnd.sample([x for x in pool if x != example], k)
      drawn.append(shots)
  return drawn


def build_context(fmt: HarnessFormat, exemplars: Sequence[Example], example: Example) -> str:
  """The prompt: the exemplars, each with its answer, then the question without one."""
  return "".join(fmt.shot(x) for x in exemplars) + fmt.text(example)


# ---- tokenisation ----------------------------------------------------------------------------


class Unit(NamedTuple):
  """Continuations scored on one shared context: (context token ids, [(choice index, ids)])."""

  context: tuple[int, ...]
  continuations: tuple[tuple[int, tuple[int, ...]], ...]


def harness_max_length(model_config, tokenizer) -> int:
  """lm_eval.models.utils.resolve_max_length: the model's input length limit."""
  config = getattr(model_config, "text_config", None) or model_config
  for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
    value = getattr(config, attr, None)
    if value is not None:
      return int(value)
  limit = getattr(tokenizer, "model_max_length", None)
  if limit is not None and limit != _TOKENIZER_INFINITY:
    return int(limit)
  return HARNESS_DEFAULT_MAX_LENGTH


def _prefix_text(tokenizer) -> str | None:
  """The text of the harness's prefix token (BOS, else EOS): a string starting with it is encoded
  without special tokens (`tok_encode`'s `has_bos_prefix` check)."""
  token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (
      tokenizer.eos_token_id)
  return None if token_id is None else tokenizer.decode(token_id)


def _encode(tokenizer, texts: Sequence[str], prefix: str | None,
            add_special_tokens: bool | None = None) -> list[list[int]]:
  """HFLM.tok_encode for each text: the tokenizer's default special tokens (None), except for a
  text that already starts with the prefix token."""
  if add_special_tokens is not None:
    return tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
  plain = [i for i, t in enumerate(texts) if not (prefix and t.startswith(prefix))]
  out: list[list[int]] = [[] for _ in texts]
  if plain:
    for i, ids in zip(plain, tokenizer([texts[i] for i in plain])["input_ids"]):
      out[i] = ids
  plain_set = set(plain)
  rest = [i for i in range(len(texts)) if i not in plain_set]
  if rest:
    for i, ids in zip(rest, tokenizer([texts[i] for i in rest],
                                      add_special_tokens=False)["input_ids"]):
      out[i] = ids
  return out


def encode_requests(tokenizer, contexts: Sequence[str], continuations: Sequence[Sequence[str]],
                    *, seq2seq: bool = False) -> list[tuple[list[int], list[list[int]]]]:
  """Per question, (context ids, [continuation ids]) by the harness's `_encode_pair`.

  Whitespace ending the context moves to the front of every continuation. Causal: the context is
  encoded alone and context + continuation whole; the continuation is the whole's tokens after the
  context's token count (a token merging across the boundary counts as the context's). Seq2seq:
  the context with the tokenizer's special tokens, the continuation without.
  """
  prefix = _prefix_text(tokenizer)
  stripped = [c.rstrip() for c in contexts]
  moved = [c[len(s):] for c, s in zip(contexts, stripped)]
  for i, s in enumerate(stripped):
    if not s:
      raise errors.DataError(f"question {i}'s prompt {contexts[i]!r} is empty or whitespace: the "
                             "harness cannot score a continuation without a context")
  context_ids = _encode(tokenizer, stripped, prefix)
  conts = [m + c for m, cs in zip(moved, continuations) for c in cs]
  if seq2seq:
    flat = _encode(tokenizer, conts, prefix, add_special_tokens=False)
  else:
    owners = [i for i, cs in enumerate(continuations) for _ in cs]
    wholes = _encode(tokenizer, [stripped[i] + c for i, c in zip(owners, conts)], prefix)
    flat = [whole[len(context_ids[i]):] for i, whole in zip(owners, wholes)]
  out, start = [], 0
  for ids, cs in zip(context_ids, continuations):
    out.append((ids, flat[start:start + len(cs)]))
    start += len(cs)
  return out


def make_units(context: Sequence[int], continuations: Sequence[Sequence[int]], max_length: int, *,
               seq2seq: bool = False, what: str = "a question") -> list[Unit]:
  """The question's continuations grouped by the context each is scored on.

  Causal: the harness scores (context + continuation)[-(max_length + 1):][:-1], so a continuation
  whose total is too long sees the context less its first tokens; choices cut by the same amount
  share a unit (nearly always one unit, the whole context). Seq2seq: the last `max_length` tokens
  of each, one unit.
  """
  for i, ids in enumerate(continuations):
    if not ids:
      raise errors.DataError(f"{what}: choice {i} encodes to no token after its context (its "
                             "first token merges into the context's last one); the harness "
                             "cannot score it either")
    if len(ids) > max_length:
      raise errors.DataError(f"{what}: choice {i} has {len(ids)} tokens, more than the model's "
                             f"{max_length}")
  if seq2seq:
    return [Unit(tuple(context[-max_length:]),
                 tuple((i, tuple(ids[-max_length:])) for i, ids in enumerate(continuations)))]
  groups: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
  for i, ids in enumerate(continuations):
    cut = max(0, len(context) + len(ids) - (max_length + 1))
    groups.setdefault(cut, []).append((i, tuple(ids)))
  units = []
  for cut, conts in sorted(groups.items()):
    if cut >= len(context):
      raise errors.DataError(f"{what}: a choice of {len(conts[0][1])} tokens leaves no room for "
                             f"its context in the model's {max_length} tokens")
    units.append(Unit(tuple(context[cut:]), tuple(conts)))
  return units


# ---- scoring backends --------------------------------------------------------------------------


def _batches(units: Sequence[Unit], batch_size: int) -> list[list[int]]:
  """Unit indices in batches of similar context length (longest first, as the harness)."""
  order = sorted(range(len(units)), key=lambda i: (-len(units[i].context), i))
  return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class TorchCausalScorer:
  """A transformers causal LM: each context runs once, its choices on copies of its KV cache.

  Contexts are LEFT-padded (every context ends at the same column, so the choices' tokens start
  together), with position ids counted from each row's first real token and the pads masked, so
  a row's numbers do not depend on its batch; continuations are right-padded (causal attention
  never looks at a later pad), and only those of two tokens or more take the second pass.
  PyTorch compiles nothing, so a batch pads to its own longest row, not to the padded-length
  ladder the JAX backends compile for (the ladder's steps would only add padding here: a choice's
  2 or 3 tokens padded to 8).
  """

  seq2seq = False

  def __init__(self, model, tokenizer, *, batch_size: int, max_length: int | None = None,
               device=None):
    import torch  # pylint: disable=g-import-not-at-top

    self.torch = torch
    self.model = model.eval()
    self.tokenizer = tokenizer
    self.batch_size = batch_size
    self.max_length = max_length or harness_max_length(model.config, tokenizer)
    self.device = device or next(model.parameters()).device
    self.pad_id = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0)
                       if t is not None)
    accepted = inspect.signature(model.forward).parameters
    self._positions = "position_ids" in accepted
    self._last_logits = "logits_to_keep" in accepted
    # transformers renamed `past_key_values` to `cache` (5.2x); older models keep the old name.
    self._cache_arg = "cache" if "cache" in accepted else "past_key_values"

  def _forward(self, ids, mask, positions, cache=None, last_only=False):
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": True}
    if self._positions:
      kwargs["position_ids"] = positions
    if cache is not None:
      kwargs[self._cache_arg] = cache
    if last_only and self._last_logits:
      kwargs["logits_to_keep"] = 1
    out = self.model(**kwargs)
    cache = getattr(out, "cache", None)
    return out.logits, cache if cache is not None else out.past_key_values

  def _context_pass(self, contexts: list[tuple[int, ...]]):
    """Left-padded contexts -> (log-probs of the next token [B, V], cache, mask, lengths)."""
    torch = self.torch
    length = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), length), self.pad_id, dtype=torch.long)
    mask = torch.zeros((len(contexts), length), dtype=torch.long)
    for row, context in enumerate(contexts):
      ids[row, length - len(context):] = torch.tensor(context)
      mask[row, length - len(context):] = 1
    ids, mask = ids.to(self.device), mask.to(self.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, cache = self._forward(ids, mask, positions, last_only=True)
    return torch.log_softmax(logits[:, -1], dim=-1), cache, mask, mask.sum(-1)

  def _continuation_pass(self, cache, mask, lengths, owners: list[int],
                         conts: list[tuple[int, ...]]):
    """Log-probs [R, longest - 1] of each continuation's tokens after its first (0 past its end),
    all run at once on copies of their contexts' cache rows."""
    torch = self.torch
    steps = max(len(c) for c in conts) - 1
    ids = torch.full((len(conts), steps), self.pad_id, dtype=torch.long)
    step_mask = torch.zeros((len(conts), steps), dtype=torch.long)
    targets = torch.zeros((len(conts), steps), dtype=torch.long)
    for r, c in enumerate(conts):
      ids[r, :len(c) - 1] = torch.tensor(c[:-1])
      step_mask[r, :len(c) - 1] = 1
      targets[r, :len(c) - 1] = torch.tensor(c[1:])
    ids, step_mask, targets = (t.to(self.device) for t in (ids, step_mask, targets))
    rows = torch.tensor(owners, device=self.device)
    cache.reorder_cache(rows)  # one copy of a question's context cache per choice
    full_mask = torch.cat([mask[rows], step_mask], dim=1)
    positions = lengths[rows, None] + torch.arange(steps, device=self.device)[None]
    logits, _ = self._forward(ids, full_mask, positions, cache=cache)
    # log_softmax at the targets only: no second [rows, steps, vocab] tensor.
    gathered = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
    return torch.where(step_mask > 0, gathered, 0)

  def _score_batch(self, batch: list[Unit]) -> list[np.ndarray]:
    torch = self.torch
    first, cache, mask, lengths = self._context_pass([u.context for u in batch])
    owners = [b for b, unit in enumerate(batch) for _ in unit.continuations]
    conts = [ids for unit in batch for _, ids in unit.continuations]
    # [R, T] log-probs of each continuation token, 0 past its end; summed in the logits' dtype,
    # as the harness sums them.
    picked = torch.zeros((len(conts), max(len(c) for c in conts)), dtype=first.dtype,
                         device=self.device)
    picked[:, 0] = first[torch.tensor(owners, device=self.device),
                         torch.tensor([c[0] for c in conts], device=self.device)]
    longer = [r for r, c in enumerate(conts) if len(c) > 1]  # one-token choices are done
    if longer:
      picked[torch.tensor(longer, device=self.device), 1:] = self._continuation_pass(
          cache, mask, lengths, [owners[r] for r in longer], [conts[r] for r in longer])
    totals = picked.sum(-1).float().cpu().numpy()
    out, start = [], 0
    for unit in batch:
      out.append(totals[start:start + len(unit.continuations)].astype(np.float64))
      start += len(unit.continuations)
    return out

  def score(self, units: Sequence[Unit], progress: Callable[[int], None] | None = None
            ) -> list[np.ndarray]:
    """Per unit, the log-likelihood of each of its continuations (float64 [n])."""
    results: list[np.ndarray | None] = [None] * len(units)
    with self.torch.inference_mode():
      for batch in _batches(units, self.batch_size):
        for i, scores in zip(batch, self._score_batch([units[i] for i in batch])):
          results[i] = scores
        if progress:
          progress(len(batch))
    return results  # type: ignore[return-value]


def _flax_score(model, params, input_ids, attention_mask, labels, label_mask, rng):
  del rng  # deterministic; placements pass every kernel a key
  kernel = (inference.lm_candidate_log_likelihoods if isinstance(model, CausalLM)
            else inference.candidate_log_likelihoods)
  return kernel(model, params, input_ids, attention_mask, labels, label_mask)[0]


@functools.lru_cache(maxsize=4)
def _flax_kernel(model):
  return functools.partial(_flax_score, model)


class FlaxScorer:
  """An LM in this project's Flax modules, pmapped over the local devices (`inference`'s
  placements): a decoder-only `CausalLM` (Llama, Mistral, Qwen2, Gemma), each context prefilled
  once into a KV cache copied to its choices (`inference.lm_candidate_log_likelihoods`, contexts
  LEFT-padded), or a T5, each context encoded once and its choices decoded on one shared
  cross-attention cache (`inference.candidate_log_likelihoods`); for T5 that is the harness's
  seq2seq rule, the continuation shifted right behind the start token, no EOS appended. Choice
  slots per question are fixed for the whole split (its most choices), so the compiled shapes are
  the padded-length ladder's only.
  """

  def __init__(self, model, params, tokenizer, *, batch_size: int, max_length: int,
               placement=None):
    self.model = model
    self.seq2seq = not isinstance(model, CausalLM)
    self.tokenizer = tokenizer
    self.max_length = max_length
    self.placement = placement or inference.Replicated()
    multiple = self.placement.row_multiple
    self.batch_rows = -(-batch_size // multiple) * multiple
    self.params = self.placement.put_params(params)
    self._run = self.placement.compile(_flax_kernel(model))

  def _contexts(self, units: Sequence[Unit]) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = inference.pad_rows([u.context for u in units], self.batch_rows, self.max_length)
    if not self.seq2seq:  # a causal context must end where its continuation begins
      ids, mask = decoding.left_pad(ids, mask, ids.shape[1], 0)
    return ids, mask

  def score(self, units: Sequence[Unit], progress: Callable[[int], None] | None = None
            ) -> list[np.ndarray]:
    results: list[np.ndarray | None] = [None] * len(units)
    max_choices = max(len(u.continuations) for u in units)
    for batch in _batches(units, self.batch_rows):
      chosen = [units[i] for i in batch]
      ids, mask = self._contexts(chosen)
      slots = [ids for u in chosen for ids in _slots(u, max_choices)]
      slots += [()] * ((self.batch_rows - len(chosen)) * max_choices)
      labels, label_mask = inference.pad_rows(slots, len(slots), self.max_length,
                                              fill_with_first=False)
      shape = (self.batch_rows, max_choices, -1)
      totals = self._run(self.params, ids, mask, labels.reshape(shape),
                         label_mask.reshape(shape), jax.random.key(0))
      for row, i in enumerate(batch):
        results[i] = np.asarray(totals[row, :len(units[i].continuations)], np.float64)
      if progress:
        progress(len(batch))
    return results  # type: ignore[return-value]


def _slots(unit: Unit, max_choices: int) -> list[tuple[int, ...]]:
  return [ids for _, ids in unit.continuations] + [()] * (max_choices - len(unit.continuations))


Scorer = TorchCausalScorer | FlaxScorer
BACKENDS = ("auto", "torch", "jax")


def _causal_backend(backend: str, model_type: str, path: str) -> str:
  """torch or jax: "auto" is JAX for a model type our Flax CausalLM has, on an accelerator."""
  supported = model_type in decoder_only.MODEL_TYPES
  if backend == "jax" and not supported:
    raise errors.ConfigError(f"--llm={path} is a {model_type!r} model; the JAX backend runs "
                             f"{', '.join(decoder_only.MODEL_TYPES)}: use --llm_backend=torch")
  if backend == "auto":
    return "jax" if supported and jax.default_backend() != "cpu" else "torch"
  return backend


def load_scorer(path: str, *, batch_size: int, device: str | None = None,
                backend: str = "auto") -> Scorer:
  """The scorer for a hub id or model directory, by its config.

  T5-family seq2seq models run in the Flax T5. Causal models run in transformers' PyTorch
  (`backend="torch"`, on `device`: a GPU when there is one) or in the Flax CausalLM pmapped over
  the local devices (`"jax"`, Llama / Mistral / Qwen2 / Gemma); "auto" takes JAX where it has the
  model type and an accelerator (a TPU has no PyTorch), PyTorch otherwise. Either way fp32 Flax
  params, or the checkpoint's own dtype in PyTorch (the harness's `dtype="auto"`).
  """
  import transformers  # pylint: disable=g-import-not-at-top

  try:
    config = transformers.AutoConfig.from_pretrained(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
  except (OSError, ValueError) as e:
    raise errors.MissingFileError(
        f"--llm={path}: cannot load a model config and tokenizer from it ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}); give a model directory or a hub id "
        "(the hub needs network access)") from e
  max_length = harness_max_length(config, tokenizer)
  if getattr(config, "is_encoder_decoder", False):
    if config.model_type != "t5":
      raise errors.ConfigError(f"--llm={path} is a {config.model_type!r} encoder-decoder; the "
                               "seq2seq baseline runs T5-family models (T5, Flan-T5) only")
    model, params = models.load_pretrained(path)
    return FlaxScorer(model, params, tokenizer, batch_size=batch_size, max_length=max_length)
  if backend not in BACKENDS:
    raise errors.ConfigError(f"--llm_backend={backend!r}; expected one of {', '.join(BACKENDS)}")
  if _causal_backend(backend, config.model_type, path) == "jax":
    model, params = models.load_pretrained(path)
    return FlaxScorer(model, params, tokenizer, batch_size=batch_size, max_length=max_length)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.ConfigError(f"--llm={path} runs in PyTorch, which is not installed: pip install "
                             "torch (the `teacher` extra), or --llm_backend=jax") from None
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device)
  return TorchCausalScorer(model, tokenizer, batch_size=batch_size, max_length=max_length,
                           device=torch.device(device))


# ---- evaluation --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LLMResult(statistics.EvalResult):
  """An EvalResult whose `accuracy` is `metric` (acc or acc_norm), with both metrics' intervals."""

  metric: str = "acc"
  num_fewshot: int = 0
  harness_task: str = ""

  def metrics(self) -> dict[str, Any]:
    out: dict[str, Any] = dict(super().metrics())
    n = self.num_examples
    for name in METRICS:
      correct = sum(bool(row[f"correct_{name}"]) for row in self.predictions)
      low, high = statistics.wilson_interval(correct, n)
      out.update({name: correct / n, f"{name}_ci_low": low, f"{name}_ci_high": high})
    out.update(metric=self.metric, num_fewshot=self.num_fewshot, harness_task=self.harness_task)
    return out


def prediction_row(example: Example, fmt: HarnessFormat, scores: np.ndarray,
                   exemplars: Sequence[Example], metric: str) -> dict[str, Any]:
  """One question's row: every choice's log-likelihood, both predictions and their correctness."""
  choices = fmt.choices(example)
  lengths = np.array([float(len(c)) for c in choices])
  pred = int(np.argmax(scores))
  pred_norm = int(np.argmax(scores / lengths))
  gold = fmt.gold(example)
  labels = example.labels
  row = {"id": example.id, "question": example.question,
         "exemplars": [x.id for x in exemplars],
         "scores": {label: float(s) for label, s in zip(labels, scores)},
         "norm_scores": {label: float(s / n) for label, s, n in zip(labels, scores, lengths)},
         "prediction_acc": labels[pred], "prediction_acc_norm": labels[pred_norm],
         "gold": example.answer,
         "correct_acc": pred == gold, "correct_acc_norm": pred_norm == gold}
  row["prediction"] = row[f"prediction_{metric}"]
  row["correct"] = row[f"correct_{metric}"]
  return row


def check_task(task_name: str, answer_type: str) -> None:
  """Refuses a task the baseline cannot score (before a model is loaded for nothing)."""
  if answer_type != CHOICE:
    raise errors.ConfigError(f"task {task_name!r} has {answer_type!r} answers: the LLM baseline "
                             "scores multiple-choice tasks only")


def evaluate_llm(scorer: Scorer, examples: Sequence[Example], pool: Sequence[Example],
                 task_name: str, *, num_fewshot: int = 0, seed: int = HARNESS_FEWSHOT_SEED,
                 metric: str = "acc", answer_type: str = CHOICE, max_examples: int = 0,
                 progress: bool = True) -> LLMResult:
  """Scores an LLM k-shot on multiple-choice `examples` as `lm_eval --num_fewshot k` does.

  Args:
    scorer: `load_scorer(...)`, or a TorchCausalScorer / FlaxScorer built by hand.
    examples: the evaluated split, in its published order (the exemplars depend on the order).
    pool: the whole train split, in its order: the exemplars' source.
    task_name: picks the harness task format (`harness_format`).
    num_fewshot, seed: k and the sampler's seed (1234, the harness's default).
    metric: "acc" or "acc_norm": which one is the result's `accuracy` (the results-table row);
      both are in `metrics()` and every prediction row.
    answer_type: the task's; anything but multiple choice is refused.
    max_examples: score only the first N (the harness's --limit; their exemplars are unchanged).
    progress: show a tqdm bar.
  """
  check_task(task_name, answer_type)
  if metric not in METRICS:
    raise errors.ConfigError(f"--llm_metric={metric!r}; expected one of {', '.join(METRICS)}")
  fmt = harness_format(task_name)
  examples = list(examples)
  if max_examples:
    examples = examples[:max_examples]
  if not examples:
    raise errors.DataError(f"task {task_name!r}: no examples to evaluate")
  shots = sample_exemplars(examples, pool, num_fewshot, seed=seed,
                           exclude_self=not fmt.has_test_split)
  contexts = [build_context(fmt, s, ex) for s, ex in zip(shots, examples)]
  continuations = [[fmt.target_delimiter + c for c in fmt.choices(ex)] for ex in examples]
  encoded = encode_requests(scorer.tokenizer, contexts, continuations, seq2seq=scorer.seq2seq)
  units, owners = [], []
  for q, ((context, conts), ex) in enumerate(zip(encoded, examples)):
    for unit in make_units(context, conts, scorer.max_length, seq2seq=scorer.seq2seq,
                           what=f"question {ex.id!r}"):
      units.append(unit)
      owners.append(q)
  if any(len(u.continuations) < len(continuations[q]) for u, q in zip(units, owners)):
    logging.warning("some prompts are longer than the model's %d tokens: as the harness does, "
                    "they lose tokens on the left", scorer.max_length)
  bar = tqdm(total=len(units), unit="q", disable=not progress, desc=f"llm {num_fewshot}-shot",
             dynamic_ncols=True)
  try:
    unit_scores = scorer.score(units, progress=bar.update)
  finally:
    bar.close()
  scores = [np.zeros(len(c)) for c in continuations]
  for unit, q, values in zip(units, owners, unit_scores):
    for (i, _), value in zip(unit.continuations, values):
      scores[q][i] = value
  rows = [prediction_row(ex, fmt, s, shot, metric)
          for ex, s, shot in zip(examples, scores, shots)]
  base = statistics.result_from_predictions(rows, len(examples))
  return LLMResult(**dataclasses.asdict(base), metric=metric, num_fewshot=num_fewshot,
                   harness_task=fmt.name)


def model_name(path: str) -> str:
  """A short name for a hub id or directory: its last component."""
  return os.path.basename(os.path.normpath(path)) or path

"""The two teacher protocols and the factory that builds a teacher from the `teacher` config.

A teacher comes in one of two shapes, because the backends differ in what they can see:

  CompletionTeacher  a language model behind a text-in / text-out interface (transformers, our Flax
                     T5, an OpenAI-compatible server). It only ever sees prompts; the prompt styles
                     (`teacher/prompts.py`) and the rationale pipeline (`rationales.py`) turn
                     examples into prompts and completions back into rationales and answers.
  ExampleTeacher     something that explains examples directly (the template teacher for the
                     built-in task, rationales imported from a file: teacher/adapters.py). It sees
                     the Example and returns rationale + answer pairs; no prompt is involved.

Both carry a `name`, recorded in the cache as the teacher id so that a cache says who wrote it.

`make_teacher` imports each backend lazily: the transformers backend needs torch, which is an
optional extra, and choosing the template teacher must not fail because torch is missing.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Protocol, Sequence, runtime_checkable

from sciqa_jax import errors
from sciqa_jax.data.example import Example

# "jax" is the JAX teacher (Flax T5 or decoder-only LM); "jax_t5" is its old name, kept as an alias.
BACKENDS = ("template", "hf", "jax", "jax_t5", "http", "import")


class MissingDependencyError(errors.UserError, ImportError):
  """A backend's optional dependency (PyTorch) is not installed; the message says how to."""


@dataclasses.dataclass(frozen=True)
class TeacherOutput:
  """One explanation of one example by an ExampleTeacher.

  Attributes:
    rationale: the reasoning text, without the final answer sentence.
    answer_text: the teacher's raw answer string (parsed later with the task's answer parser).
  """

  rationale: str
  answer_text: str


@runtime_checkable
class CompletionTeacher(Protocol):
  """A text-completion model (hf, jax / jax_t5, http backends)."""

  name: str

  def complete(self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 0.0,
               top_p: float = 1.0, max_new_tokens: int = 128, seed: int = 0) -> list[list[str]]:
    """Returns, per prompt, `num_samples` completions: the continuation text only.

    `temperature == 0` means greedy decoding, which allows only `num_samples == 1`. The same
    prompts, options and seed give the same completions.
    """
    ...


@runtime_checkable
class ExampleTeacher(Protocol):
  """A teacher that explains examples directly (template, import backends)."""

  name: str

  def explain(self, examples: Sequence[Example], *, num_samples: int = 1, seed: int = 0
              ) -> list[list[TeacherOutput]]:
    """Returns, per example, `num_samples` explanations."""
    ...


def check_sampling_args(num_samples: int, temperature: float, top_p: float,
                        max_new_tokens: int) -> None:
  """Validates `complete()` options identically for every completion backend.

  Greedy decoding with several samples would silently return N copies of one rationale, which
  defeats diverse reasoning; it is rejected with the config keys to change.
  """
  if num_samples < 1:
    raise errors.ConfigError(f"teacher.num_samples={num_samples} must be >= 1")
  if temperature < 0:
    raise errors.ConfigError(f"teacher.temperature={temperature} must be >= 0 (0 = greedy)")
  if temperature == 0 and num_samples > 1:
    raise errors.ConfigError(f"teacher.num_samples={num_samples} needs sampling: set "
                             "teacher.temperature > 0 (e.g. 0.7); greedy decoding (temperature 0) "
                             "gives one completion")
  if not 0.0 < top_p <= 1.0:
    raise errors.ConfigError(f"teacher.top_p={top_p} must lie in (0, 1]")
  if max_new_tokens < 1:
    raise errors.ConfigError(f"max_new_tokens={max_new_tokens} must be >= 1")


def _import_backend(module: str, backend: str):
  """Imports a backend module, turning a missing optional dependency into an actionable error."""
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name and e.name.split(".")[0] == "torch":
      raise MissingDependencyError(
          f"teacher.backend={backend!r} needs PyTorch, which is not installed. Install the CPU "
          "wheel with `pip install torch==2.13.0` (or a CUDA build matching your GPU), then "
          "`pip install -e .[teacher]`.") from e
    raise


def make_teacher(teacher_config, seed: int = 0) -> CompletionTeacher | ExampleTeacher:
  """Builds the teacher selected by `teacher_config.backend` (the `teacher` config section).

  Args:
    teacher_config: the `teacher` section of the config (a ConfigDict); see sciqa_jax/config.py.
    seed: the run's seed; seeds the template teacher's choice of deliberately wrong rationales.
      Completion teachers take their seed per `complete()` call instead.
  """
  backend = teacher_config.backend
  get = teacher_config.get
  if backend == "template":
    template = importlib.import_module("sciqa_jax.teacher.template")
    return template.TemplateTeacher(error_rate=teacher_config.error_rate, seed=seed)
  if backend == "import":
    if not teacher_config.model:
      raise errors.ConfigError("teacher.backend='import' needs teacher.model = the JSONL file of "
                               "rationales (or the file or directory of teacher.import_format)")
    importer = importlib.import_module("sciqa_jax.teacher.importer")
    return importer.ImportedRationales(path=teacher_config.model,
                                       import_format=get("import_format", "jsonl"))
  if backend not in BACKENDS:
    raise errors.ConfigError(f"unknown teacher.backend={backend!r}; choose one of "
                             f"{', '.join(BACKENDS)}")
  if not teacher_config.model:
    what = "the model name the server serves" if backend == "http" else "a hub id or local dir"
    raise errors.ConfigError(f"teacher.backend={backend!r} needs teacher.model = {what}")
  if backend == "hf":
    hf = _import_backend("sciqa_jax.teacher.hf", backend)
    return hf.TransformersTeacher(teacher_config.model, batch_size=teacher_config.batch_size,
                                  use_chat_template=get("use_chat_template", True))
  if backend in ("jax", "jax_t5"):
    jax_teacher = _import_backend("sciqa_jax.teacher.jax_model", backend)
    return jax_teacher.JaxTeacher.from_config(teacher_config)
  http = _import_backend("sciqa_jax.teacher.http", backend)
  return http.HttpTeacher(teacher_config.base_url, teacher_config.model,
                          chat=teacher_config.chat, api_key_env=teacher_config.api_key_env,
                          max_in_flight=teacher_config.max_in_flight,
                          max_retries=get("max_retries", 6),
                          timeout_s=get("request_timeout_s", 300.0))

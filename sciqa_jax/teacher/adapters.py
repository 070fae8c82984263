"""Readers of rationale files made elsewhere, for the import teacher (`teacher/importer.py`).

`teacher.import_format` names the layout of the file (or directory) `teacher.model`; the layout is
never guessed, because two layouts can hold the same JSON shapes and a wrong guess would join
rationales to the wrong questions. A file that does not have the chosen layout is an
errors.DataError naming the file and the layout expected.

  jsonl          this project's own: `{"id", "rationale", optional "answer"}` one a line. Without
                 "answer", the rationale's own answer sentence ("... Therefore, the answer is
                 (B).") is split off and used as the answer text.
  fine_tune_cot  Fine-tune-CoT's completion files (Ho et al. 2023), `{"metadata": {"dataset_key",
                 ...}, "data": {"<sample_index>": [{"sample_index", "completion_index",
                 "reasoning_completion", "completion", ...}, ...]}}`: the rationale is the
                 reasoning completion (step 1), the answer text the answer completion (step 2).
                 Several completions of one sample are diverse reasoning samples, kept in
                 completion_index order. Rows join the examples of a Fine-tune-CoT-layout task by
                 id `<dataset_key>-<sample_index>` (`data.loaders.fine_tune_cot_record`).
  step_by_step   distilling step-by-step's `llm/<split>_CoT_<k>.json` (Hsieh et al. 2023): JSON
                 lists of raw few-shot completions, files k = 0, 1, ... concatenated, aligned by
                 position with the split's examples (there is no id). A completion often runs on
                 into questions the model invented ("... So the answer is (b) stone.\n\nQ: ..."):
                 it is cut at the first "Q:". The answer follows the last "So the answer is" /
                 "The answer is"; an arithmetic answer "(12 - 5)" (their SVAMP prompts) is
                 evaluated ("7"). `teacher.model` is the `llm` directory or the dataset directory
                 holding it; their split names are train, valid and test.

Every reader returns TeacherOutputs whose answer text is raw: the task's parser and correctness
filter (`rationales.filter_samples`) judge them exactly as they judge a live teacher's.
"""

from __future__ import annotations

import ast
import json
import os
import re
from typing import Any

from sciqa_jax import errors
from sciqa_jax.data import loaders
from sciqa_jax.teacher import prompts
from sciqa_jax.teacher.base import TeacherOutput

JSONL = "jsonl"
FINE_TUNE_COT = "fine_tune_cot"
STEP_BY_STEP = "step_by_step"
IMPORT_FORMATS = (JSONL, FINE_TUNE_COT, STEP_BY_STEP)

_JSONL_LAYOUT = 'JSONL rows {"id", "rationale", optional "answer"}'
_FINE_TUNE_COT_LAYOUT = ('Fine-tune-CoT\'s completion file {"metadata": {...}, "data": '
                         '{"<sample_index>": [{"sample_index", "completion_index", '
                         '"reasoning_completion", "completion", ...}]}}')
_STEP_BY_STEP_LAYOUT = ("distilling step-by-step's llm/<split>_CoT_<k>.json: a JSON list of "
                        "completion strings")
# The split names of distilling step-by-step's files.
STEP_BY_STEP_SPLITS = {"train": "train", "validation": "valid", "test": "test"}

# An invented follow-up question: "Q:" starting the text or a line, or after a sentence.
_RUN_ON = re.compile(r"(?:^|(?<=\s))Q:")
_STEP_BY_STEP_ANSWER = re.compile(r"(?:so\s+)?the\s+answer\s+is", re.IGNORECASE)
_ARITHMETIC = re.compile(r"[\d\s.+\-*/()]+")


def _format_error(path: str, problem: str, layout: str, fmt: str) -> errors.DataError:
  return errors.DataError(f"{path}: {problem}; teacher.import_format={fmt!r} expects {layout}")


# ---- jsonl -------------------------------------------------------------------------------------


def jsonl_output(row: dict[str, Any], location: str) -> tuple[str, TeacherOutput]:
  """(id, output) of one row of this project's JSONL layout."""
  example_id, rationale = row.get("id"), row.get("rationale")
  if example_id in (None, "") or not isinstance(rationale, str) or not rationale.strip():
    raise errors.DataError(f"{location}: an imported rationale needs a non-empty \"id\" and "
                           "\"rationale\" (the import file teacher.model, "
                           f"teacher.import_format={JSONL!r})")
  answer = row.get("answer")
  if isinstance(answer, bool):
    answer = "yes" if answer else "no"
  if answer is None or str(answer).strip() == "":
    rationale, answer = prompts.split_completion(rationale)
    answer = answer or rationale  # no answer sentence: parse the rationale itself
  return str(example_id), TeacherOutput(" ".join(rationale.split()), str(answer))


def _completion_file_hint(path: str) -> str:
  """A hint when a JSON file has another importable layout (named, never switched to)."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError):
    return ""
  if isinstance(data, dict) and isinstance(data.get("data"), dict):
    return (" (it looks like a Fine-tune-CoT completion file: "
            f"teacher.import_format={FINE_TUNE_COT!r})")
  if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
    return (" (it looks like a distilling step-by-step llm/ file: "
            f"teacher.import_format={STEP_BY_STEP!r} with teacher.model = its directory)")
  return ""


def read_jsonl(path: str) -> dict[str, list[TeacherOutput]]:
  """{example id: outputs in file order} of a file in this project's JSONL layout."""
  outputs: dict[str, list[TeacherOutput]] = {}
  try:
    for location, row in loaders.iter_local_rows(path):
      if isinstance(row, loaders.BadRecord):
        raise errors.DataError(f"{location}: {row.reason} (the import file teacher.model)")
      example_id, output = jsonl_output(row, location)
      outputs.setdefault(example_id, []).append(output)
  except errors.DataError as e:
    hint = _completion_file_hint(path) if path.endswith(".json") else ""
    raise errors.DataError(f"{e}{hint}") from None
  except errors.UserError:
    raise
  except (ValueError, OSError) as e:
    raise errors.ConfigError(f"teacher.model={path!r}: {e}") from None
  return outputs


# ---- fine_tune_cot -------------------------------------------------------------------------------


def _load_json(path: str, layout: str, fmt: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise _format_error(path, f"line {e.lineno}: invalid JSON ({e.msg})", layout, fmt) from None
  except UnicodeDecodeError:
    raise _format_error(path, "not a UTF-8 text file", layout, fmt) from None


def _sample_index(value: Any, where: str, path: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
    raise _format_error(path, f"{where}: sample index {value!r} is not a non-negative integer",
                        _FINE_TUNE_COT_LAYOUT, FINE_TUNE_COT)
  return int(value)


def fine_tune_cot_output(row: dict[str, Any]) -> TeacherOutput:
  """One completion sample as a TeacherOutput: the reasoning completion cut at its answer
  sentence or an invented "Q:", the answer completion's first line (or, without one, the
  reasoning completion's own answer sentence)."""
  rationale, own_answer = prompts.split_completion(str(row.get("reasoning_completion") or ""))
  completion = row.get("completion")
  answer = prompts.clean_answer(completion) if isinstance(completion, str) else ""
  return TeacherOutput(rationale, answer or own_answer or "")


def read_fine_tune_cot(path: str) -> tuple[str, dict[int, list[TeacherOutput]]]:
  """(dataset key or "", {sample index: outputs in completion_index order}) of a Fine-tune-CoT
  completion file (module doc)."""
  data = _load_json(path, _FINE_TUNE_COT_LAYOUT, FINE_TUNE_COT)
  if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
    got = ("a list under \"data\" (a dataset file?)"
           if isinstance(data, dict) and isinstance(data.get("data"), list)
           else f"a JSON {type(data).__name__} without a \"data\" object")
    raise _format_error(path, got, _FINE_TUNE_COT_LAYOUT, FINE_TUNE_COT)
  metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
  outputs: dict[int, list[TeacherOutput]] = {}
  for key, rows in data["data"].items():
    index = _sample_index(key, f"data key {key!r}", path)
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
      raise _format_error(path, f"data[{key!r}] is not a list of completion objects",
                          _FINE_TUNE_COT_LAYOUT, FINE_TUNE_COT)
    for row in rows:
      if "reasoning_completion" not in row and "completion" not in row:
        raise _format_error(path, f"data[{key!r}] holds a row without \"reasoning_completion\" "
                            "or \"completion\"", _FINE_TUNE_COT_LAYOUT, FINE_TUNE_COT)
      if _sample_index(row.get("sample_index", index), f"data[{key!r}]", path) != index:
        raise _format_error(path, f"data[{key!r}] holds a row of sample_index "
                            f"{row['sample_index']!r}", _FINE_TUNE_COT_LAYOUT, FINE_TUNE_COT)
    ordered = sorted(enumerate(rows), key=lambda item: (_completion_index(item[1]), item[0]))
    outputs[index] = [fine_tune_cot_output(row) for _, row in ordered]
  return str(metadata.get("dataset_key") or ""), outputs


def _completion_index(row: dict[str, Any]) -> int:
  value = row.get("completion_index", 0)
  return value if isinstance(value, int) and not isinstance(value, bool) else 0


# ---- step_by_step --------------------------------------------------------------------------------


def evaluate_arithmetic(text: str) -> str | None:
  """The value of an arithmetic answer such as "(12 - 5)" or "( 4.0 * 3 )" as a number string,
  or None when `text` is not one (a number alone, words, a division by zero)."""
  text = text.strip().rstrip(".").strip()
  if not _ARITHMETIC.fullmatch(text) or not re.search(r"\d\s*[-+*/]\s*[\d(]", text):
    return None
  try:
    tree = ast.parse(text, mode="eval")
    value = _arithmetic(tree.body)
  except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
    return None
  return str(int(value)) if value == int(value) else repr(value)


_OPERATORS = {ast.Add: float.__add__, ast.Sub: float.__sub__, ast.Mult: float.__mul__,
              ast.Div: float.__truediv__}


def _arithmetic(node: ast.AST) -> float:
  if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
    return float(node.value)
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    value = _arithmetic(node.operand)
    return -value if isinstance(node.op, ast.USub) else value
  if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
    return _OPERATORS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
  raise ValueError("not arithmetic")


def step_by_step_output(completion: str) -> TeacherOutput:
  """One raw completion as a TeacherOutput (module doc): cut at an invented "Q:", split at the
  last answer phrase; without one, the answer text is empty (counted unparseable)."""
  match = _RUN_ON.search(completion)
  text = completion[:match.start()] if match else completion
  phrases = list(_STEP_BY_STEP_ANSWER.finditer(text))
  if not phrases:
    return TeacherOutput(" ".join(text.split()), "")
  rationale = " ".join(text[:phrases[-1].start()].split()).rstrip()
  answer = text[phrases[-1].end():].strip().split("\n", 1)[0].strip()
  return TeacherOutput(rationale, evaluate_arithmetic(answer) or answer)


def step_by_step_dir(path: str) -> str:
  """The `llm` directory of `teacher.model`: the directory itself, or its `llm` subdirectory."""
  if not os.path.isdir(path):
    raise errors.MissingFileError(
        f"teacher.model={path!r}: no such directory; teacher.import_format={STEP_BY_STEP!r} "
        "expects distilling step-by-step's llm/ directory (or the dataset directory holding it)")
  nested = os.path.join(path, "llm")
  return nested if os.path.isdir(nested) else path


def step_by_step_files(path: str, split: str) -> list[str]:
  """`<split>_CoT_0.json`, `_1.json`, ... of `split` (our split name), in order; a gap or no file
  at all is an error naming what was expected."""
  directory = step_by_step_dir(path)
  name = STEP_BY_STEP_SPLITS.get(split, split)
  pattern = re.compile(rf"{re.escape(name)}_CoT_(\d+)\.json")
  numbers = sorted(int(m.group(1)) for m in map(pattern.fullmatch, os.listdir(directory)) if m)
  if not numbers:
    raise errors.MissingFileError(
        f"{directory}: no {name}_CoT_0.json for split {split!r}; teacher.import_format="
        f"{STEP_BY_STEP!r} expects distilling step-by-step's llm/{name}_CoT_<k>.json files")
  if numbers != list(range(len(numbers))):
    missing = min(set(range(max(numbers) + 1)) - set(numbers))
    raise errors.DataError(
        f"{directory}: {name}_CoT_{missing}.json is missing ({len(numbers)} files up to "
        f"{name}_CoT_{max(numbers)}.json): completions align with the split by position, so "
        "every file up to the last is needed")
  return [os.path.join(directory, f"{name}_CoT_{k}.json") for k in numbers]


def read_step_by_step(path: str, split: str) -> list[TeacherOutput]:
  """The outputs of `split`'s files, one per example, by position (module doc)."""
  outputs = []
  for file in step_by_step_files(path, split):
    data = _load_json(file, _STEP_BY_STEP_LAYOUT, STEP_BY_STEP)
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
      got = (f"a JSON {type(data).__name__}" if not isinstance(data, list)
             else "a list holding non-strings")
      raise _format_error(file, got, _STEP_BY_STEP_LAYOUT, STEP_BY_STEP)
    outputs.extend(step_by_step_output(completion) for completion in data)
  return outputs

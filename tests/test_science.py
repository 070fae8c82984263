"""The built-in science task (sciqa_jax.data.science) and its template teacher.

The answers are recomputed here from the question text alone, with parsers independent of the
generator's own solution steps, so a generator bug that writes a wrong gold label is caught.
"""

import collections
import re

import pytest

from sciqa_jax.data import science
from sciqa_jax.data.example import Example
from sciqa_jax.teacher.base import TeacherOutput
from sciqa_jax.teacher.template import TemplateTeacher
from sciqa_jax.tokenizer import train_sentencepiece_tokenizer
from tests.fixtures import science_corpus


@pytest.fixture(scope="module")
def splits():
  return {split: science.load_split(split, seed=0) for split in science.SPLITS}


@pytest.fixture(scope="module")
def train(splits):
  return splits["train"]


@pytest.fixture(scope="module")
def corpus():
  return science_corpus(seed=0)


# ---- the task -------------------------------------------------------------------------------------


def test_sizes_determinism_and_seeds(splits):
  for split, examples in splits.items():
    assert len(examples) == science.DEFAULT_SIZES[split]
  assert science.load_split("validation", seed=0) == splits["validation"]
  other = science.load_split("validation", seed=1)
  assert len(other) == len(splits["validation"])
  same = sum(a.question == b.question for a, b in zip(other, splits["validation"]))
  assert same < len(other) // 10
  # The first n examples do not depend on how many are requested.
  assert science.load_split("validation", seed=0, num_examples=37) == splits["validation"][:37]
  assert science.load_split("test", num_examples=0) == []


def test_splits_disjoint_and_ids_unique(splits):
  questions = {split: [ex.question for ex in examples] for split, examples in splits.items()}
  for split, texts in questions.items():
    assert len(set(texts)) == len(texts), f"duplicate questions inside {split}"
  assert not set(questions["train"]) & set(questions["test"])
  assert not set(questions["train"]) & set(questions["validation"])
  assert not set(questions["validation"]) & set(questions["test"])
  # The partition of question space holds across seeds too.
  other_seed_test = {ex.question for ex in science.load_split("test", seed=5, num_examples=300)}
  assert not other_seed_test & set(questions["train"])
  ids = [ex.id for examples in splits.values() for ex in examples]
  assert len(set(ids)) == len(ids)


def test_schema_answer_positions_and_families(train):
  positions = collections.Counter()
  families = collections.Counter()
  for ex in train:
    assert ex.labels == science.LABELS
    assert len({text for _, text in ex.choices}) == 4, ex
    assert ex.answer in ex.labels
    assert ex.solution and not ex.context
    positions[ex.answer] += 1
    families[science.family_of(ex)] += 1
  expected = len(train) / 4
  chi2 = sum((positions[label] - expected) ** 2 / expected for label in science.LABELS)
  assert chi2 < 16.27, positions  # p = 0.001 for 3 degrees of freedom
  assert set(families) == set(science.FAMILIES)
  assert max(families.values()) - min(families.values()) <= 1


def test_invalid_split():
  with pytest.raises(ValueError, match="no split 'dev'"):
    science.load_split("dev")


# Independent solvers: question text -> the gold choice text.

_PHASE = re.compile(r"melt\D*?(-?\d+) °C.*?boil\D*?(-?\d+) °C")
_START = re.compile(r"(?<!melts )(?<!boils )\bat (-?\d+) °C")
_CHANGE = re.compile(r"(heated|warmed|rises|cooled|chilled|drops) by (\d+)|gets (\d+) °C "
                     r"(warmer|colder)")


def _solve_phase(ex: Example) -> str:
  q = ex.question
  melting, boiling = map(int, _PHASE.search(q).groups())
  (start,) = map(int, _START.findall(q))
  change = _CHANGE.search(q)
  amount = int(change.group(2) or change.group(3))
  word = change.group(1) or change.group(4)
  end = start + amount if word in ("heated", "warmed", "warmer", "rises") else start - amount
  return "solid" if end < melting else ("liquid" if end < boiling else "gas")


def _rank_pick(values: dict[str, float], want_max: bool) -> str:
  best = (max if want_max else min)(values.values())
  winners = [key for key, value in values.items() if value == best]
  assert len(winners) == 1, values
  return winners[0]


def _solve_density(ex: Example) -> str:
  q = ex.question
  noun = re.match(r"Four (\w+)s", q).group(1)
  items = re.findall(r"(\w+): (\d+) g, (\d+) cm³", q)
  assert len(items) == 4, q
  want_max = "densest material" in q or "greatest" in q or ("densest" in q and "least" not in q)
  return f"the {_rank_pick({k: int(m) / int(v) for k, m, v in items}, want_max)} {noun}"


def _solve_speed(ex: Example) -> str:
  items = re.findall(r"([a-z]+(?: [a-z]+)?): (\d+) m in (\d+) s", ex.question)
  assert len(items) == 4, ex.question
  want_max = any(word in ex.question for word in ("fastest", "highest"))
  return "the " + _rank_pick({k.lower(): int(d) / int(t) for k, d, t in items}, want_max)


def _solve_duration(ex: Example) -> str:
  noun = re.search(r"(candle|timer|lamp|fuse)", ex.question).group(1)
  items = re.findall(r"(\w+): (\d+) (s|min)\b", ex.question)
  assert len(items) == 4, ex.question
  want_max = any(word in ex.question for word in ("longest", "finishes last"))
  minutes = {k: int(n) / (60 if unit == "s" else 1) for k, n, unit in items}
  return f"the {_rank_pick(minutes, want_max)} {noun}"


def _solve_food_chain(ex: Example) -> str:
  listing, ask = re.fullmatch(r"In [a-z ]+: (.+?)\. (.+)", ex.question).groups()
  eats, eaten_by = {}, {}  # eater -> food, food -> eater: the listed relations
  for fact in listing.split("; "):
    eater, food = re.fullmatch(r"(\w+) (?:eat|feed on) (\w+)", fact).groups()
    eats[eater], eaten_by[food] = food, eater
  upward = re.search(r"that eat (\w+)\?|^Some organism eats (\w+)\.|eaters of (\w+)\?", ask)
  if upward:
    start = next(group for group in upward.groups() if group)
    return eaten_by[eaten_by[start]]
  downward = re.search(r"that (\w+) eat feed on\?|^The (\w+) eat some|food of the food of (\w+)\?",
                       ask)
  start = next(group for group in downward.groups() if group)
  return eats[eats[start]]


_SOLVERS = {"phase": _solve_phase, "density": _solve_density, "speed": _solve_speed,
            "duration": _solve_duration, "food_chain": _solve_food_chain}


def test_answers_recomputed_from_question_text(splits):
  checked = collections.Counter()
  for ex in splits["test"] + splits["validation"][:200]:
    family = science.family_of(ex)
    assert ex.choice_text(ex.answer) == _SOLVERS[family](ex), ex
    checked[family] += 1
  assert set(checked) == set(science.FAMILIES)


def test_solution_steps_lead_to_the_answer(train):
  for ex in train[:500]:
    work = science.parse_solution(ex)
    if isinstance(work, science.PhaseWork):
      assert work.start + work.delta == work.end
      assert science.phase_of(work.end, work.melting, work.boiling) == work.phase
      concluded = work.phase
    elif isinstance(work, science.RankWork):
      assert len(work.items) == 4
      for item in work.items:
        assert item.numerator == item.value * item.denominator
      values = [item.value for item in work.items]
      best = (max if work.goal == "max" else min)(values)
      assert values.count(best) == 1
      assert work.items[values.index(best)].key == work.pick
      concluded = work.pick
    else:
      assert len(work.hops) == 2 and work.hops[0][0] in ex.question.lower()
      concluded = work.pick
    assert science.label_of_choice(ex, concluded) == ex.answer


def test_raw_numbers_are_no_shortcut(train):
  """Where the answer's raw number (mass, distance, written time) ranks among the four is uniform."""
  ranks = collections.Counter()
  for ex in train:
    work = science.parse_solution(ex)
    if isinstance(work, science.RankWork):
      raws = sorted((item.numerator for item in work.items), reverse=work.goal == "max")
      pick = next(item for item in work.items if item.key == work.pick)
      ranks[raws.index(pick.numerator)] += 1
  expected = sum(ranks.values()) / 4
  assert sum((ranks[r] - expected) ** 2 / expected for r in range(4)) < 16.27, ranks


# ---- the template teacher -------------------------------------------------------------------------


def _last_sentence(text: str) -> str:
  return text.rstrip(".").rsplit(". ", 1)[-1]


def _named_choices(ex: Example, sentence: str) -> list[str]:
  padded = " " + re.sub(r"[^\w ]", " ", sentence.lower()) + " "
  return [label for label, text in ex.choices if f" {text.lower()} " in padded]


def test_correct_rationales_conclude_the_gold_answer(splits):
  examples = splits["test"]
  outputs = TemplateTeacher(error_rate=0.0, seed=0).explain(examples, num_samples=2, seed=1)
  assert len(outputs) == len(examples)
  for ex, samples in zip(examples, outputs):
    assert len(samples) == 2
    for out in samples:
      assert isinstance(out, TeacherOutput)
      assert out.answer_text == ex.answer
      # The rationale ends by naming the concluded choice (and no other) in words; the "answer is"
      # sentence is not part of it (TeacherOutput contract).
      assert _named_choices(ex, _last_sentence(out.rationale)) == [ex.answer], out.rationale
      assert "answer is" not in out.rationale
      assert len(out.rationale.split()) <= 45, out.rationale


def test_rationale_length_in_sentencepiece_tokens(train, corpus, tmp_path):
  tokenizer = train_sentencepiece_tokenizer(corpus, str(tmp_path), vocab_size=1000)
  outputs = TemplateTeacher(error_rate=0.5, seed=0).explain(train[:400], num_samples=2)
  lengths = [len(tokenizer.tokenize(out.rationale)) for samples in outputs for out in samples]
  assert max(lengths) <= 56, max(lengths)


def test_teacher_determinism_and_diversity(splits):
  examples = splits["validation"]
  teacher = TemplateTeacher(error_rate=0.2, seed=3)
  first = teacher.explain(examples, num_samples=4, seed=0)
  assert first == TemplateTeacher(error_rate=0.2, seed=3).explain(examples, num_samples=4, seed=0)
  assert first != teacher.explain(examples, num_samples=4, seed=1)
  diverse = sum(len({out.rationale for out in samples}) >= 2 for samples in first)
  assert diverse >= 0.9 * len(examples), diverse


def test_error_rate_gives_wrong_conclusions(train):
  examples = train[:1000]
  outputs = TemplateTeacher(error_rate=0.3, seed=0).explain(examples, num_samples=2, seed=0)
  wrong = collections.Counter()
  total = 0
  for ex, samples in zip(examples, outputs):
    for out in samples:
      total += 1
      assert out.answer_text in ex.labels
      assert _named_choices(ex, _last_sentence(out.rationale)) == [out.answer_text], out.rationale
      if out.answer_text != ex.answer:
        wrong[science.family_of(ex)] += 1
  rate = sum(wrong.values()) / total
  assert 0.26 <= rate <= 0.34, rate
  assert set(wrong) == set(science.FAMILIES)
  # No errors at all with error_rate=0, every sample wrong with error_rate=1.
  always = TemplateTeacher(error_rate=1.0).explain(examples[:100])
  assert all(samples[0].answer_text != ex.answer for ex, samples in zip(examples, always))


def test_teacher_on_other_tasks_and_bad_input():
  coin = Example(id="coin_flip-train-0", question="A coin is heads up. Ann flips the coin. Is the "
                 "coin still heads up?", choices=(), answer="no",
                 solution=("The coin starts heads up.", "Ann flips it, so it is now tails up."))
  (out,), = TemplateTeacher().explain([coin])
  assert out == TeacherOutput(rationale=" ".join(coin.solution), answer_text="no")
  with pytest.raises(ValueError, match="error_rate"):
    TemplateTeacher(error_rate=0.1).explain([coin])
  with pytest.raises(ValueError, match="no solution|has none"):
    TemplateTeacher().explain([Example(id="arc-1", question="Why?", choices=(("A", "x"),),
                                       answer="A")])
  with pytest.raises(ValueError, match="error_rate"):
    TemplateTeacher(error_rate=1.5)


def test_corpus_covers_questions_and_rationales(train, corpus):
  joined = "\n".join(corpus)
  assert train[0].question in joined and "Answer choices: (A)" in joined
  for word in ("densest", "liquid", "minutes", "feed on", "/ 60 ="):
    assert word in joined, word

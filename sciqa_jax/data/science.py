"""The built-in offline science task (`science_demo`): procedural multi-step multiple-choice questions.

No dataset can be downloaded on the project machines, so `make demo` trains tiny from-scratch T5
students on this task instead. It is built so that chain-of-thought distillation helps *for the right
reason*: every answer needs several reasoning steps, each step is easy to learn on its own (copying
numbers from the question, a small memorisable fact table, a lookup in relations the question lists,
comparing one-digit numbers), but answering directly means composing all of them in one pass over
combinatorially many combinations, which a small student cannot memorise from a few thousand examples.
A rationale that writes the steps out turns the problem into a chain of local steps.

What "easy to learn" means for a tiny student trained for minutes was measured, not assumed: with
several wordings of the same fact ("The red block is 12 g", "red, 12 g", "12 g for red") and
capitalised variants of the names, a 2+2-layer student wrote well-formed steps with the wrong
numbers (it copied the right pairs of numbers, for the wrong items). So the wording varies in the
sentences around the facts, while every fact keeps one form in the question ("red: 12 g, 3 cm³",
"hawks eat snakes", "melts at 10 °C") that the worked steps reuse word for word.

Five families, equally many questions each (round robin by index), ARC schema (a stem, four choices
A-D in a random order, so the answer position is uniform, and an answer label):

  phase       a substance's melting and boiling points, a start temperature and a change:
              add/subtract (multiples of 10), then compare with both points -> solid/liquid/gas.
              The state at the start is drawn independently of the state at the end, so the
              start temperature alone says little.
  density     four blocks' masses and volumes -> the densest / least dense: four divisions from the
              one-digit table, then an argmax of one-digit numbers.
  speed       four movers' distances and times -> the fastest / slowest (the same table).
  duration    four burning times in minutes or seconds -> the longest / shortest: convert seconds
              to minutes (a nine-entry table), then compare one-digit numbers.
  food_chain  two food chains of four organisms, the six feeding relations listed in a shuffled
              order -> a two-step relation ("what do the animals that hawks eat feed on?").

Distractors are the results of common mistakes. In the three ranking families every other item is
a choice, and where the answer's raw number (mass, distance, time as written) ranks among the four is
drawn uniformly, so the common mistake of comparing raw numbers is right only by chance; the
food-chain choices hold the one-step answer and the same-level organism of the other chain. The phase
choices are the three states and `plasma`; the phase itself is drawn uniformly.

Splits are disjoint by construction: a question belongs to the split that the hash of its stem
selects (75% / 10% / 15% of question space), whatever the seed, and each split draws candidates from
its own seeded stream and keeps only its own (and unseen) stems. Generation is deterministic per
(seed, split) and the first n examples of a split do not depend on how many are requested.

`Example.solution` holds the worked steps in a canonical form that `parse_solution` reads back;
`sciqa_jax.teacher.template.TemplateTeacher` writes rationales from them. That template teacher is a
stand-in for offline runs and tests only: the real path distils rationales from a Hugging Face (or
HTTP) teacher LLM on real science QA data.

Canonical solution steps:
  phase       ("20 + 30 = 50", "melting point 10, boiling point 80, temperature 50: liquid")
  density     ("red: 12 / 3 = 4", ... one per block in question order, "max: red")   (or "min: ...")
  speed       ("cyclist: 24 / 4 = 6", ..., "min: cyclist")
  duration    ("red: 3 min", "blue: 180 s / 60 = 3", ..., "max: blue")
  food_chain  ("hawks eat snakes", "snakes eat mice")   (the two relations used, in reasoning order)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import re

from sciqa_jax.data.example import Example

SPLITS = ("train", "validation", "test")
DEFAULT_SIZES = {"train": 3000, "validation": 300, "test": 500}
FAMILIES = ("phase", "density", "speed", "duration", "food_chain")
LABELS = ("A", "B", "C", "D")
PHASES = ("solid", "liquid", "gas")
PHASE_CHOICES = PHASES + ("plasma",)

# Share of question space (by stem hash, out of 1000) that belongs to each split.
_SPLIT_BUCKETS = {"train": (0, 750), "validation": (750, 850), "test": (850, 1000)}
# Rejection sampling gives up after this many candidates per requested example (a guard against an
# impossible request, e.g. far more examples than the question space holds).
_MAX_DRAWS_PER_EXAMPLE = 200

_SUBSTANCES = ("zolium", "brontine", "kelvar", "mirex", "tandol", "vespine", "quorate", "ludine",
               "pellite", "sarnol")
# The four items of a ranking question are always these, listed in this order (their numbers are
# what varies): a worked solution then walks the items in a fixed order, and each name is a frequent
# token whose numbers the student looks up by the name, instead of tracking which of many names came
# where in this particular question. The answer choices are still shuffled.
_COLOURS = ("red", "blue", "green", "yellow")
_BLOCKS = ("block", "cube", "stone", "brick")
_MOVERS = ("runner", "cyclist", "skater", "swimmer")
_BURNERS = (("candle", "burns"), ("timer", "runs"), ("lamp", "stays lit"), ("fuse", "burns"))
# Food-chain levels; a chain takes one organism from each, so the relations read plausibly, and the
# two chains of a question share every level (the level alone never identifies the answer).
_PRODUCERS = ("grass", "algae", "moss")
_HERBIVORES = ("rabbits", "mice", "snails")
_PREDATORS = ("frogs", "spiders", "lizards")
_TOP = ("hawks", "owls", "snakes")
_PLACES = ("a meadow", "a pond", "a forest", "a garden", "a marsh", "a field")


# ---- parsed solutions ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PhaseWork:
  start: int
  delta: int  # signed: + heated, - cooled
  end: int
  melting: int
  boiling: int
  phase: str


@dataclasses.dataclass(frozen=True)
class RankItem:
  key: str  # "red", "cyclist": appears in exactly one choice text
  numerator: int  # mass, distance, or the time as written
  denominator: int  # volume, time, 60 for seconds; 1 for a time already in minutes
  value: int  # numerator / denominator


@dataclasses.dataclass(frozen=True)
class RankWork:
  items: tuple[RankItem, ...]  # in question order
  goal: str  # "max" | "min"
  pick: str  # key of the chosen item


@dataclasses.dataclass(frozen=True)
class ChainWork:
  hops: tuple[tuple[str, str], ...]  # (eater, food) relations in reasoning order
  upward: bool  # True when the question walks from food to eater
  pick: str  # the organism the hops arrive at


def family_of(example: Example) -> str:
  """The family of a built-in science example (the last part of its id)."""
  family = example.id.rsplit("-", 1)[-1]
  if family not in FAMILIES:
    raise ValueError(f"example {example.id!r} is not from the built-in science task: its id does not "
                     f"end in one of the families {FAMILIES}")
  return family


_ARITH = re.compile(r"^(-?\d+) ([+-]) (\d+) = (-?\d+)$")
_PHASE = re.compile(r"^melting point (-?\d+), boiling point (-?\d+), temperature (-?\d+): (\w+)$")
_RATIO = re.compile(r"^(.+): (\d+) / (\d+) = (\d+)$")
_SECONDS = re.compile(r"^(.+): (\d+) s / 60 = (\d+)$")
_MINUTES = re.compile(r"^(.+): (\d+) min$")
_PICK = re.compile(r"^(max|min): (.+)$")
_EATS = re.compile(r"^(.+) eat (.+)$")


def parse_solution(example: Example) -> PhaseWork | RankWork | ChainWork:
  """Reads `example.solution` (the canonical steps above) back into a structured worked solution."""
  family = family_of(example)
  steps = example.solution

  def bad(step: str):
    return ValueError(f"example {example.id!r} ({family}): solution step {step!r} is not in the "
                      f"canonical form (see sciqa_jax.data.science)")

  if family == "phase":
    if len(steps) != 2:
      raise bad(" | ".join(steps))
    arith, phase = _ARITH.match(steps[0]), _PHASE.match(steps[1])
    if not arith:
      raise bad(steps[0])
    if not phase or phase.group(4) not in PHASES:
      raise bad(steps[1])
    start, sign, delta, end = arith.groups()
    return PhaseWork(start=int(start), delta=int(delta) * (1 if sign == "+" else -1), end=int(end),
                     melting=int(phase.group(1)), boiling=int(phase.group(2)), phase=phase.group(4))
  if family == "food_chain":
    hops = []
    for step in steps:
      match = _EATS.match(step)
      if not match:
        raise bad(step)
      hops.append((match.group(1), match.group(2)))
    if len(hops) != 2:
      raise bad(" | ".join(steps))
    upward = hops[0][0] == hops[1][1]  # food -> eater: the first eater is the next food
    pick = hops[1][0] if upward else hops[1][1]
    return ChainWork(hops=tuple(hops), upward=upward, pick=pick)
  items = []
  for step in steps[:-1]:
    if match := _RATIO.match(step):
      key, num, den, value = match.groups()
    elif match := _SECONDS.match(step):
      key, num, value = match.groups()
      den = "60"
    elif match := _MINUTES.match(step):
      key, num = match.groups()
      den, value = "1", num
    else:
      raise bad(step)
    items.append(RankItem(key, int(num), int(den), int(value)))
  pick = _PICK.match(steps[-1]) if steps else None
  if not pick:
    raise bad(steps[-1] if steps else "")
  return RankWork(items=tuple(items), goal=pick.group(1), pick=pick.group(2))


def label_of_choice(example: Example, text: str) -> str:
  """The label of the choice that names `text` (a whole choice, or a key such as "red" in it)."""
  for label, choice in example.choices:
    if choice == text or f" {text} " in f" {choice} ":
      return label
  raise ValueError(f"example {example.id!r}: no choice names {text!r} (choices: {example.choices})")


# ---- generation ------------------------------------------------------------------------------------


def split_of_question(question: str) -> str:
  """The split a question stem belongs to (a fixed partition of question space, for every seed)."""
  bucket = int.from_bytes(hashlib.sha1(question.encode("utf-8")).digest()[:4], "big") % 1000
  for split, (lo, hi) in _SPLIT_BUCKETS.items():
    if lo <= bucket < hi:
      return split
  raise AssertionError(bucket)  # the buckets cover 0..999


def _shuffled_choices(rng: random.Random, correct: str, distractors: list[str]):
  texts = [correct] + distractors
  rng.shuffle(texts)
  choices = tuple(zip(LABELS, texts))
  return choices, LABELS[texts.index(correct)]


def phase_of(temperature: int, melting: int, boiling: int) -> str:
  if temperature < melting:
    return "solid"
  return "liquid" if temperature < boiling else "gas"


def _phase(rng: random.Random):
  substance = rng.choice(_SUBSTANCES)
  melting = rng.randrange(-30, 50, 10)
  # A liquid range of at most 50 degrees lets a change of at most 70 cross it (solid -> gas).
  boiling = melting + rng.choice((30, 40, 50))
  phase = rng.choice(PHASES)  # drawn first so the three answers are equally common
  start_phase = rng.choice(PHASES)  # independent of the answer: the start alone is no shortcut
  order = PHASES.index(phase) - PHASES.index(start_phase)
  while True:  # terminates: every (start state, end state) pair is reachable (see above)
    if phase == "solid":
      end = melting - rng.randrange(10, 50, 10)
    elif phase == "liquid":
      end = rng.randrange(melting + 10, boiling, 10)
    else:
      end = boiling + rng.randrange(10, 50, 10)
    sign = (order > 0) - (order < 0) or rng.choice((1, -1))
    delta = rng.randrange(10, 80, 10) * sign
    start = end - delta
    if start not in (melting, boiling) and phase_of(start, melting, boiling) == start_phase:
      break
  heated = delta > 0
  change = abs(delta)
  cap = substance.capitalize()
  # The wording varies around the numbers; each number keeps its own words ("melts at", "boils
  # at", "at", "by") in every phrasing, so where a number is quoted is never ambiguous.
  heat, warm = ("heated", "warmed") if heated else ("cooled", "chilled")
  points = f"melts at {melting} °C and boils at {boiling} °C"
  stem = rng.choice((
      f"A sample of {substance} {points}. It starts at {start} °C and is {heat} by {change} °C. "
      f"What state is it in now?",
      f"{cap} {points}. A jar of it at {start} °C is {warm} by {change} °C. Which state of matter "
      f"is it in afterwards?",
      f"The substance {substance} {points}. If it is kept at {start} °C and {heat} by {change} °C, "
      f"what is its state?",
      f"A lab keeps {substance} at {start} °C. Then it is {warm} by {change} °C. {cap} {points}. "
      f"What is its state now?",
  ))
  choices, answer = _shuffled_choices(rng, phase, [p for p in PHASE_CHOICES if p != phase])
  solution = (f"{start} {'+' if heated else '-'} {change} = {end}",
              f"melting point {melting}, boiling point {boiling}, temperature {end}: {phase}")
  return stem, choices, answer, solution


def _rank_values(rng: random.Random, goal: str, divisors: tuple[int, ...], *, rank_divisors: bool):
  """Four distinct one-digit values, their divisors and raw numbers, and the index of the answer.

  An item shows its raw number `value * divisor` (a mass: density * volume), with each divisor drawn
  from `divisors`. Where the answer's raw number ranks among the four (in the goal's direction) is
  drawn uniformly first, so comparing raw numbers, or picking the runner-up raw number, finds the
  answer only by chance. With `rank_divisors` the answer's divisor (a volume, a time) takes the same
  rank among the (then distinct) divisors, so "the smallest volume is the densest" is no shortcut
  either; the two ranks cannot be uniform independently, since the densest item with the largest
  volume is also the heaviest. The divisors are assigned to the items by a search over their
  orders, which always finds a fit for some draws, so the loop terminates quickly.
  """
  rank = rng.randrange(4)
  reverse = goal == "max"

  def ahead(index, numbers):  # how many items beat item `index` in the goal's direction
    return sum((n > numbers[index]) if reverse else (n < numbers[index]) for n in numbers)

  while True:
    values = rng.sample(range(1, 10), 4)
    best = values.index(max(values) if reverse else min(values))
    if rank_divisors:
      # The answer's divisor is fixed by its rank; the other three try every order.
      drawn = sorted(rng.sample(divisors, 4), reverse=reverse)
      own = drawn.pop(rank)
      rest = [list(order) for order in itertools.permutations(drawn)]
      rng.shuffle(rest)
      orders = [order[:best] + [own] + order[best:] for order in rest]
    else:
      orders = [[rng.choice(divisors) for _ in range(4)]]
    for order in orders:
      raws = [v * d for v, d in zip(values, order)]
      if len(set(raws)) == 4 and ahead(best, raws) == rank:
        return values, order, raws, best


def _density(rng: random.Random):
  noun = rng.choice(_BLOCKS)
  keys = list(_COLOURS)
  goal = rng.choice(("max", "min"))
  values, vols, masses, best = _rank_values(rng, goal, tuple(range(1, 10)), rank_divisors=True)
  # One listing form per family, the form the worked steps reuse ("red: 12 g, 3 cm³" -> "red:
  # 12 / 3 = 4"); the wording varies in the sentences around it.
  listing = "; ".join(f"{k}: {m} g, {v} cm³" for k, m, v in zip(keys, masses, vols))
  ask = rng.choice((
      f"Which {noun} is the {'densest' if goal == 'max' else 'least dense'}?",
      f"Which {noun} has the {'greatest' if goal == 'max' else 'lowest'} density?",
      f"Which {noun} is made of the {'densest' if goal == 'max' else 'least dense'} material?",
  ))
  stem = rng.choice((f"Four {noun}s are weighed. Masses and volumes: {listing}. {ask}",
                     f"Four {noun}s have these masses and volumes: {listing}. {ask}"))
  texts = [f"the {k} {noun}" for k in keys]
  choices, answer = _shuffled_choices(rng, texts[best], texts[:best] + texts[best + 1:])
  solution = tuple(f"{k}: {m} / {v} = {d}" for k, m, v, d in zip(keys, masses, vols, values))
  return stem, choices, answer, solution + (f"{goal}: {keys[best]}",)


def _speed(rng: random.Random):
  keys = list(_MOVERS)
  goal = rng.choice(("max", "min"))
  values, secs, distances, best = _rank_values(rng, goal, tuple(range(1, 10)), rank_divisors=True)
  listing = "; ".join(f"{k}: {d} m in {t} s" for k, d, t in zip(keys, distances, secs))
  ask = rng.choice((
      f"Which one is the {'fastest' if goal == 'max' else 'slowest'}?",
      f"Which one has the {'highest' if goal == 'max' else 'lowest'} average speed?",
      f"Who moves {'fastest' if goal == 'max' else 'slowest'} on average?",
  ))
  stem = rng.choice((f"In a test run, the distances and times were: {listing}. {ask}",
                     f"Four movers are timed: {listing}. {ask}"))
  texts = [f"the {k}" for k in keys]
  choices, answer = _shuffled_choices(rng, texts[best], texts[:best] + texts[best + 1:])
  solution = tuple(f"{k}: {d} / {t} = {v}" for k, d, t, v in zip(keys, distances, secs, values))
  return stem, choices, answer, solution + (f"{goal}: {keys[best]}",)


def _duration(rng: random.Random):
  noun, verb = rng.choice(_BURNERS)
  keys = list(_COLOURS)
  goal = rng.choice(("max", "min"))
  # Each time is written in minutes or in seconds; the raw number of a time in seconds is 60 times
  # larger, which misleads a student that compares the numbers as written.
  values, _, raws, best = _rank_values(rng, goal, (1, 60), rank_divisors=False)
  written = [f"{r} s" if r != v else f"{r} min" for v, r in zip(values, raws)]
  listing = "; ".join(f"{k}: {w}" for k, w in zip(keys, written))
  ask = rng.choice((
      f"Which {noun} {verb} the {'longest' if goal == 'max' else 'shortest'}?",
      f"Which {noun} lasts the {'longest' if goal == 'max' else 'shortest'} time?",
      f"Which {noun} {'finishes last' if goal == 'max' else 'finishes first'}?",
  ))
  stem = rng.choice((f"Four {noun}s are started together. How long each {verb}: {listing}. {ask}",
                     f"In a test, each {noun} {verb} this long: {listing}. {ask}"))
  texts = [f"the {k} {noun}" for k in keys]
  choices, answer = _shuffled_choices(rng, texts[best], texts[:best] + texts[best + 1:])
  solution = tuple(f"{k}: {r} s / 60 = {v}" if w.endswith(" s") else f"{k}: {v} min"
                   for k, r, v, w in zip(keys, raws, values, written))
  return stem, choices, answer, solution + (f"{goal}: {keys[best]}",)


def _food_chain(rng: random.Random):
  levels = (_PRODUCERS, _HERBIVORES, _PREDATORS, _TOP)
  chains = list(zip(*(rng.sample(level, 2) for level in levels)))  # two chains, bottom -> top
  relations = [(chain[i + 1], chain[i]) for chain in chains for i in range(3)]  # (eater, food)
  rng.shuffle(relations)
  # Lower case throughout, as a list: the relations read the same wherever they stand.
  facts = "; ".join(f"{eater} eat {food}" for eater, food in relations)
  chain, other = chains
  upward = rng.random() < 0.5
  start = rng.choice((0, 1)) if upward else rng.choice((2, 3))  # two hops stay inside the chain
  mid, end = (start + 1, start + 2) if upward else (start - 1, start - 2)
  s = chain[start]
  if upward:
    stem_ask = rng.choice((
        f"Which organism eats the organisms that eat {s}?",
        f"Some organism eats {s}. What eats that organism?",
        f"Which organism feeds on the eaters of {s}?",
    ))
    hops = ((chain[mid], s), (chain[end], chain[mid]))
  else:
    stem_ask = rng.choice((
        f"What do the organisms that {s} eat feed on?",
        f"The {s} eat some organism. What does that organism eat?",
        f"What is the food of the food of {s}?",
    ))
    hops = ((s, chain[mid]), (chain[mid], chain[end]))
  stem = f"In {rng.choice(_PLACES)}: {facts}. {stem_ask}"
  # Distractors: the one-step answer, the other chain's organism at the answer's level, and one more
  # organism that is neither the start nor already a choice.
  rest = [o for o in chain + other if o not in (s, chain[end], chain[mid], other[end])]
  distractors = [chain[mid], other[end], rng.choice(rest)]
  choices, answer = _shuffled_choices(rng, chain[end], distractors)
  solution = tuple(f"{eater} eat {food}" for eater, food in hops)
  return stem, choices, answer, solution


_GENERATORS = {"phase": _phase, "density": _density, "speed": _speed, "duration": _duration,
               "food_chain": _food_chain}


def load_split(split: str, *, seed: int = 0, num_examples: int | None = None) -> list[Example]:
  """The `split` of the task for `seed`: DEFAULT_SIZES[split] examples unless `num_examples` is given.

  Deterministic per (seed, split); ids are `<split>-<index>-<family>`; the families take turns.
  """
  if split not in SPLITS:
    raise ValueError(f"science_demo has no split {split!r}; expected one of {SPLITS}")
  n = DEFAULT_SIZES[split] if num_examples is None else num_examples
  if n < 0:
    raise ValueError(f"num_examples={num_examples} must be >= 0")
  rng = random.Random(f"science_demo/{seed}/{split}")  # str seeds hash stably across processes
  seen: set[str] = set()
  examples = []
  for _ in range(n * _MAX_DRAWS_PER_EXAMPLE):
    if len(examples) == n:
      break
    family = FAMILIES[len(examples) % len(FAMILIES)]
    stem, choices, answer, solution = _GENERATORS[family](rng)
    if stem in seen or split_of_question(stem) != split:
      continue
    seen.add(stem)
    examples.append(Example(id=f"{split}-{len(examples):05d}-{family}", question=stem,
                            choices=choices, answer=answer, solution=solution))
  if len(examples) < n:
    raise ValueError(f"science_demo: could only generate {len(examples)} distinct {split} questions "
                     f"of the {n} requested")
  return examples

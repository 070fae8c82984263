"""The template teacher: step-by-step rationales written from the built-in task's own worked solutions.

This is a stand-in for offline runs and tests only (`make demo`, the test suite), where no language
model can be downloaded. The real path distils rationales from a Hugging Face (or OpenAI-compatible
HTTP) teacher LLM with `teacher.backend = "hf"` / `"http"`.

For a `science_demo` example (`sciqa_jax.data.science`) the teacher reads the canonical solution steps
back (`science.parse_solution`) and writes them out in one of several phrasings. The phrasings vary
the sentences around the worked steps while each step keeps one form that reuses the question's own
words (a tiny student learns to copy "red: 12 / 3 = 4" far sooner than to map between three
wordings of it). The phrasings are drawn from a generator keyed on (teacher seed, call seed,
example id, sample index), so diverse reasoning (`num_samples > 1`) gets different wordings of the
same correct reasoning, and the same call always returns the same rationales. Every rationale ends
with the words of the concluded choice and a full stop ("..., so it is a liquid."), so stage 2 finds
them in one place whatever the phrasing; following the `TeacherOutput` contract
(`sciqa_jax.teacher.base`) it does not carry the "the answer is (B)" sentence: `answer_text` is the
letter of the concluded choice.

With probability `error_rate` (drawn from a separate generator with the same key, so the error
pattern does not depend on the phrasing and vice versa) a sample is deliberately wrong, the way
students of a real teacher see wrong chains of thought: one step goes wrong and the rationale
concludes a wrong choice, consistently with that step, so the correctness filter has something to
remove. Errors per family:

  phase       the change applied with the wrong sign (or, when that lands in the same state, an
              arithmetic slip of 10-60 degrees) and the state of the wrong temperature.
  density,    one division slips: a distractor's quotient exceeds (undercuts) the winner's, or the
  speed       winner's falls behind another item's; the extreme of the slipped values is concluded.
  duration    the seconds are not converted: the raw numbers are compared (when that happens to
              give the right answer, a conversion slips instead, as for density).
  food_chain  the chain stops after one step, or the second step follows a relation that is not in
              the question.

Examples of other tasks that carry worked `solution` steps (the synthetic Fine-tune-CoT tasks) get
their steps verbatim as the rationale and the gold answer; deliberate errors exist for the science
task only, so `error_rate > 0` on them is an error.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sciqa_jax import errors
from sciqa_jax.data import science
from sciqa_jax.data.example import Example
from sciqa_jax.teacher.base import TeacherOutput

# Deliberate arithmetic slips in the phase family, in degrees (multiples of 10 keep them plausible).
_PHASE_SLIPS = (10, 20, 30, 40, 50, 60)

_RANK_INTROS = {
    "density": ("Density is mass divided by volume.", "Divide each mass by its volume.",
                "Density = mass / volume."),
    "speed": ("Speed is distance divided by time.", "Divide each distance by its time.",
              "Speed = distance / time."),
    "duration": ("Convert every time to minutes.", "Put all times in minutes, 60 s = 1 min.",
                 "Change seconds to minutes by dividing by 60."),
}
# One step per item, always in this form (the phrasings vary around the steps, not in them): the
# item's name first, written as the question writes it, so the numbers that follow can be found by
# the name just written, and the arithmetic right after its operands.
_RANK_ITEM = "{key}: {num} / {den} = {value}"
_RANK_ITEM_IN_MINUTES = "{key}: {value}"  # a duration already given in minutes
_RANK_SEPARATOR = "; "
_RANK_WORDS = {  # (family, goal) -> (superlative adjective, noun phrase for "the greatest X")
    ("density", "max"): ("densest", "greatest density"),
    ("density", "min"): ("least dense", "lowest density"),
    ("speed", "max"): ("fastest", "highest speed"),
    ("speed", "min"): ("slowest", "lowest speed"),
    ("duration", "max"): ("longest", "longest time"),
    ("duration", "min"): ("shortest", "shortest time"),
}
# Every rationale ends with the concluded choice's own words, then the full stop: the answer student
# of stage 2 reads its answer off the end of the rationale (one place, whatever the phrasing).
_RANK_CONCLUSIONS = ("The {adjective} is {choice}.", "So the {adjective} is {choice}.",
                     "The one with the {noun} is {choice}.")

# Every phrasing writes the new temperature as an expression next to its result.
_PHASE_CHANGES = ("{start} {sign} {change} = {end}, so it is now at {end} °C.",
                  "The new temperature is {start} {sign} {change} = {end} °C.",
                  "It ends at {start} {sign} {change} = {end} °C.")
# No parentheses around numbers: "(60" would tokenise differently from " 60", so copying a number
# would be two mappings for the student to learn.
_PHASE_STATES = {
    "solid": ("{end} °C is below the melting point of {melting} °C, so it is a solid.",
              "Since {end} < {melting}, it has not melted: it is a solid.",
              "It is colder than its melting point, {end} < {melting}, so it is a solid."),
    "liquid": ("{end} °C is between the melting point {melting} °C and the boiling point "
               "{boiling} °C, so it is a liquid.",
               "Since {melting} < {end} < {boiling}, it is a liquid.",
               "It is above its melting point and below its boiling point, {melting} < {end} < "
               "{boiling}, so it is a liquid."),
    "gas": ("{end} °C is above the boiling point of {boiling} °C, so it is a gas.",
            "Since {end} > {boiling}, it has boiled: it is a gas.",
            "It is hotter than its boiling point, {end} > {boiling}, so it is a gas."),
}

# Organisms are written in lower case, as the question lists them, so each relation is the
# question's own words ("hawks eat snakes") and never a capitalised variant of them.
_CHAIN_BODIES = ("From the list, {e1} eat {f1}, and {e2} eat {f2}.",
                 "We know that {e1} eat {f1} and {e2} eat {f2}.",
                 "First, {e1} eat {f1}. Then, {e2} eat {f2}.")
_CHAIN_BODIES_ONE = ("From the list, {e1} eat {f1}.", "We know that {e1} eat {f1}.",
                     "First, {e1} eat {f1}.")
_CHAIN_DOWN_END = ("So the food of the food of {start} is {pick}.", "So their food eats {pick}.",
                   "That food feeds on {pick}.")
_CHAIN_UP_END = ("So the eaters of the eaters of {start} are {pick}.",
                 "So two steps above {start} are {pick}.",
                 "So the organisms that eat the eaters of {start} are {pick}.")


def _phase_rationale(work: science.PhaseWork, style: random.Random, error: random.Random | None
                     ) -> tuple[str, str]:
  end = work.end
  if error is not None:
    # The classic mistake first: the change applied in the wrong direction.
    candidates = [work.start - work.delta] + [
        work.end + sign * slip for slip in error.sample(_PHASE_SLIPS, len(_PHASE_SLIPS))
        for sign in error.sample((1, -1), 2)]
    end = next(t for t in candidates if t not in (work.melting, work.boiling)
               and science.phase_of(t, work.melting, work.boiling) != work.phase)
  phase = science.phase_of(end, work.melting, work.boiling)
  fields = dict(start=work.start, change=abs(work.delta), end=end, melting=work.melting,
                boiling=work.boiling, sign="+" if work.delta > 0 else "-",
                moves="rises" if work.delta > 0 else "falls")
  text = " ".join((style.choice(_PHASE_CHANGES).format(**fields),
                   style.choice(_PHASE_STATES[phase]).format(**fields)))
  return text, phase  # every phrasing starts with a capital or a number


def _rank_rationale(example: Example, work: science.RankWork, family: str, style: random.Random,
                    error: random.Random | None) -> tuple[str, str]:
  values = [item.value for item in work.items]
  pick = work.pick
  extreme = max if work.goal == "max" else min
  converted = True
  raws = [item.numerator for item in work.items]
  raw_pick = work.items[raws.index(extreme(raws))].key
  if error is not None and family == "duration" and raw_pick != work.pick:
    # The classic unit mistake: comparing the numbers as written.
    converted, values, pick = False, raws, raw_pick
  elif error is not None:
    best = [item.key for item in work.items].index(work.pick)
    step = 1 if work.goal == "max" else -1
    wrong = error.choice([i for i in range(len(values)) if i != best])
    if values[best] + step >= 1:
      values[wrong] = values[best] + step  # a distractor's quotient slips past the winner's
    else:  # the winner is 1 and the goal is the minimum: the winner's own quotient slips instead
      values[best] = max(values) + 1
    pick = work.items[values.index(extreme(values))].key
  steps = []
  for item, value in zip(work.items, values):
    if converted and not (family == "duration" and item.denominator == 1):  # not already minutes
      steps.append(_RANK_ITEM.format(key=item.key, num=item.numerator, den=item.denominator,
                                     value=value))
    else:
      steps.append(_RANK_ITEM_IN_MINUTES.format(key=item.key, value=value))
  intro = (style.choice(_RANK_INTROS[family]) if converted
           else style.choice(("Compare the times.", "Look at the numbers.", "Compare them.")))
  choice = example.choice_text(science.label_of_choice(example, pick))
  adjective, noun = _RANK_WORDS[(family, work.goal)]
  conclusion = style.choice(_RANK_CONCLUSIONS).format(choice=choice, adjective=adjective,
                                                      noun=noun)
  text = f"{intro} {_RANK_SEPARATOR.join(steps)}. {conclusion}"
  return text, pick


def _chain_rationale(example: Example, work: science.ChainWork, style: random.Random,
                     error: random.Random | None) -> tuple[str, str]:
  (e1, f1), (e2, f2) = work.hops
  start = f1 if work.upward else e1
  mid = e1 if work.upward else f1
  pick = work.pick
  one_step = False
  if error is not None:
    if error.random() < 0.5:
      one_step, pick = True, mid  # stops after the first relation
    else:  # the second relation is misread: it leads to another choice, not in the question
      pick = error.choice(sorted(text for _, text in example.choices if text not in (pick, mid)))
      e2, f2 = (pick, mid) if work.upward else (mid, pick)
  fields = dict(e1=e1, f1=f1, e2=e2, f2=f2, start=start, pick=pick)
  body = style.choice(_CHAIN_BODIES_ONE if one_step else _CHAIN_BODIES)
  end = style.choice(_CHAIN_UP_END if work.upward else _CHAIN_DOWN_END)
  return f"{body.format(**fields)} {end.format(**fields)}", pick


class TemplateTeacher:
  """An ExampleTeacher that writes faithful (or, at `error_rate`, deliberately wrong) rationales.

  A stand-in for offline runs and tests only; see the module docstring.
  """

  name = "template"

  def __init__(self, error_rate: float = 0.0, seed: int = 0):
    if not 0.0 <= error_rate <= 1.0:
      raise errors.ConfigError(f"teacher.error_rate={error_rate} must lie in [0, 1]")
    self.error_rate = float(error_rate)
    self.seed = int(seed)

  def explain(self, examples: Sequence[Example], *, num_samples: int = 1, seed: int = 0
              ) -> list[list[TeacherOutput]]:
    """Per example, `num_samples` rationales (duplicates possible) with the concluded label."""
    if num_samples < 1:
      raise errors.ConfigError(f"teacher.num_samples={num_samples} must be >= 1")
    return [[self._explain_one(example, sample, seed) for sample in range(num_samples)]
            for example in examples]

  def _explain_one(self, example: Example, sample: int, seed: int) -> TeacherOutput:
    if not example.solution:
      raise errors.ConfigError(f"the template teacher needs worked solution steps, and example "
                               f"{example.id!r} has none: it only explains the built-in tasks; "
                               "use teacher.backend=hf/http/import for real data")
    key = f"template/{self.seed}/{seed}/{example.id}/{sample}"  # str seeds hash stably
    style = random.Random(key + "/style")
    error_rng = random.Random(key + "/error")
    wrong = error_rng.random() < self.error_rate
    try:
      family = science.family_of(example)
    except ValueError:
      family = None
    if family is None:
      if self.error_rate > 0:
        raise errors.ConfigError(f"teacher.error_rate={self.error_rate}: deliberate errors exist "
                                 f"only for the built-in science task, not for example "
                                 f"{example.id!r}; set teacher.error_rate=0")
      return TeacherOutput(rationale=" ".join(example.solution), answer_text=example.answer)
    work = science.parse_solution(example)
    error = error_rng if wrong else None
    if family == "phase":
      rationale, concluded = _phase_rationale(work, style, error)
    elif family == "food_chain":
      rationale, concluded = _chain_rationale(example, work, style, error)
    else:
      rationale, concluded = _rank_rationale(example, work, family, style, error)
    return TeacherOutput(rationale=rationale,
                         answer_text=science.label_of_choice(example, concluded))

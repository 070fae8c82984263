"""Teacher backends (transformers, OpenAI-compatible HTTP, Flax T5) and the teacher factory.

Every model here is a tiny random one written to a temp dir by the test itself, with a byte-level
BPE tokenizer trained on a few sentences; the HTTP tests talk only to a server the test starts on
127.0.0.1 with an ephemeral port.
"""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import time

import ml_collections
import pytest

from sciqa_jax import errors
from sciqa_jax.config import base_config
from sciqa_jax.teacher import BACKENDS, make_teacher
from sciqa_jax.teacher import http as http_teacher
from sciqa_jax.teacher.base import CompletionTeacher, check_sampling_args

PROMPTS = [
    "Question: which state of matter is ice?",
    "Ice is frozen water, so it is a solid. Therefore, the answer is",
    "Let's think step by step.",
]
_CORPUS = [
    "Question: which state of matter is ice? Answer choices: (A) solid (B) liquid (C) gas",
    "Let's think step by step. Ice is frozen water, so it is a solid. Therefore, the answer is (A).",
    "Plants make food from sunlight, water and carbon dioxide by photosynthesis.",
]
_CHAT_TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>{% endif %}")


# ---- tiny Hugging Face checkpoints ------------------------------------------------------------

def _bpe_tokenizer(with_pad: bool):
  """A byte-level BPE tokenizer (<pad>=0, eos=1, unk=2) trained on the tiny corpus.

  Without `with_pad` the tokenizer declares no pad token, like most causal LMs' tokenizers.
  """
  tokenizers = pytest.importorskip("tokenizers")
  transformers = pytest.importorskip("transformers")
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_CORPUS * 10, trainer)
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok,
                                              pad_token="<pad>" if with_pad else None,
                                              eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  """{"causal", "causal_chat", "seq2seq"}: tiny random GPT-2 / T5 checkpoints with tokenizers."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  root = tmp_path_factory.mktemp("hf")
  tokenizer = _bpe_tokenizer(with_pad=True)
  causal_tokenizer = _bpe_tokenizer(with_pad=False)
  torch.manual_seed(0)
  # No pad token in the causal config: the teacher must fall back to EOS for padding.
  gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=128,
      bos_token_id=1, eos_token_id=1))
  t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1,
      num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0,
      eos_token_id=1, decoder_start_token_id=0))
  dirs = {name: root / name for name in ("causal", "causal_chat", "seq2seq")}
  gpt2.save_pretrained(dirs["causal"])
  gpt2.save_pretrained(dirs["causal_chat"])
  t5.save_pretrained(dirs["seq2seq"])
  tokenizer.save_pretrained(dirs["seq2seq"])
  causal_tokenizer.save_pretrained(dirs["causal"])
  causal_tokenizer.chat_template = _CHAT_TEMPLATE
  causal_tokenizer.save_pretrained(dirs["causal_chat"])
  return {name: str(path) for name, path in dirs.items()}


@pytest.fixture(scope="module")
def hf_teachers(hf_dirs):
  from sciqa_jax.teacher.hf import TransformersTeacher
  return {"causal": TransformersTeacher(hf_dirs["causal"], batch_size=4),
          "seq2seq": TransformersTeacher(hf_dirs["seq2seq"], batch_size=4)}


# ---- shared argument checks ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=2, temperature=0.0), "temperature"),
    (dict(num_samples=0, temperature=1.0), "num_samples"),
    (dict(num_samples=1, temperature=-1.0), "temperature"),
    (dict(num_samples=1, temperature=1.0, top_p=0.0), "top_p"),
    (dict(num_samples=1, temperature=1.0, max_new_tokens=0), "max_new_tokens"),
])
def test_check_sampling_args_rejects(kwargs, match):
  args = dict(num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=8) | kwargs
  with pytest.raises(ValueError, match=match):
    check_sampling_args(**args)


# ---- transformers backend -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_hf_shapes_padding_and_seed(hf_teachers, kind):
  teacher = hf_teachers[kind]
  assert isinstance(teacher, CompletionTeacher)
  assert teacher.is_encoder_decoder == (kind == "seq2seq")
  assert teacher.name.startswith("hf:")

  batched = teacher.complete(PROMPTS, max_new_tokens=6)
  assert [len(samples) for samples in batched] == [1, 1, 1]
  # Prompts of different lengths are padded together; each must decode as if alone.
  alone = [teacher.complete([prompt], max_new_tokens=6)[0] for prompt in PROMPTS]
  assert batched == alone

  sampled = teacher.complete(PROMPTS, num_samples=3, temperature=1.0, max_new_tokens=6, seed=1)
  assert [len(samples) for samples in sampled] == [3, 3, 3]
  assert all(isinstance(text, str) for samples in sampled for text in samples)
  again = teacher.complete(PROMPTS, num_samples=3, temperature=1.0, max_new_tokens=6, seed=1)
  other = teacher.complete(PROMPTS, num_samples=3, temperature=1.0, max_new_tokens=6, seed=2)
  assert again == sampled
  assert other != sampled


def test_hf_causal_pads_left_and_strips_prompt(hf_teachers):
  teacher = hf_teachers["causal"]
  assert teacher.tokenizer.padding_side == "left"
  assert teacher.tokenizer.pad_token == teacher.tokenizer.eos_token  # none in the checkpoint
  assert not teacher.use_chat_template
  # The prompt is not echoed: a continuation of 6 tokens cannot contain the 9-word prompt.
  completion = teacher.complete([PROMPTS[0]], max_new_tokens=6)[0][0]
  assert PROMPTS[0] not in completion
  token_count = len(teacher.tokenizer(completion, add_special_tokens=False)["input_ids"])
  assert token_count <= 6 + 1  # re-tokenising the decoded text may split one token


def test_hf_chat_template(hf_dirs):
  from sciqa_jax.teacher.hf import TransformersTeacher
  teacher = TransformersTeacher(hf_dirs["causal_chat"])
  assert teacher.use_chat_template
  assert teacher.format_prompts(["hi"]) == ["<|user|>hi<|assistant|>"]
  assert len(teacher.complete(["hi", "there"], max_new_tokens=3)) == 2
  plain = TransformersTeacher(hf_dirs["causal_chat"], use_chat_template=False)
  assert plain.format_prompts(["hi"]) == ["hi"]


# ---- HTTP backend --------------------------------------------------------------------------------

def _answer(prompt: str, seed: int, k: int) -> str:
  """The fake model: a deterministic function of the prompt, the seed and the sample index."""
  return f" {prompt[-6:]}|s{seed}|k{k} "


class _FakeServer:
  """An OpenAI-compatible server on 127.0.0.1 recording requests and peak concurrency."""

  def __init__(self):
    self.lock = threading.Lock()
    self.requests: list[dict] = []
    self.active = 0
    self.max_active = 0
    self.delay_s = 0.0
    self.max_choices = 0  # > 0: ignore `n` and return at most this many choices
    self.scripted: dict[str, list[tuple[int, dict, dict]]] = {}  # prompt -> failures to send first
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def log_message(self, *args):  # keep pytest output clean
        pass

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        with server.lock:
          server.requests.append({"path": self.path, "headers": dict(self.headers),
                                  "body": body, "prompt": prompt})
          server.active += 1
          server.max_active = max(server.max_active, server.active)
          failures = server.scripted.get(prompt, [])
          failure = failures.pop(0) if failures else None
        try:
          time.sleep(server.delay_s)
          response = failure if failure is not None else self._completion(body, prompt)
        finally:
          # Counted out before the reply is written: once the client has the reply it may send its
          # next request, which must not meet this one still counted (a race under load).
          with server.lock:
            server.active -= 1
        self._send(*response)

      def _completion(self, body, prompt):
        n = body.get("n", 1)
        if server.max_choices:
          n = min(n, server.max_choices)
        texts = [_answer(prompt, body["seed"], k) for k in range(n)]
        if self.path.endswith("/chat/completions"):
          choices = [{"index": k, "message": {"role": "assistant", "content": t}}
                     for k, t in enumerate(texts)]
        else:
          choices = [{"index": k, "text": t} for k, t in enumerate(texts)]
        # Out of order on purpose: clients must sort by index.
        return 200, {}, {"object": "text_completion", "choices": choices[::-1]}

      def _send(self, status, headers, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
          self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def reset(self):
    with self.lock:
      self.requests.clear()
      self.active = self.max_active = 0
      self.delay_s = 0.0
      self.max_choices = 0
      self.scripted.clear()

  def count(self, prompt: str) -> int:
    return sum(request["prompt"] == prompt for request in self.requests)


@pytest.fixture(scope="module")
def fake_server():
  server = _FakeServer()
  yield server
  server.httpd.shutdown()
  server.httpd.server_close()


@pytest.fixture
def server(fake_server, monkeypatch):
  """The shared server, reset, with backoff sleeps recorded instead of slept."""
  fake_server.reset()
  fake_server.sleeps = []
  monkeypatch.setattr(http_teacher, "_sleep", fake_server.sleeps.append)
  return fake_server


def test_http_completions_samples_and_key(server, monkeypatch):
  monkeypatch.setenv("SCIQA_TEST_KEY", "sk-test")
  teacher = http_teacher.HttpTeacher(server.base_url, "tiny", api_key_env="SCIQA_TEST_KEY")
  assert isinstance(teacher, CompletionTeacher)
  out = teacher.complete(PROMPTS, num_samples=2, temperature=0.7, top_p=0.9, max_new_tokens=5,
                         seed=3)
  assert out == [[_answer(p, 3, 0).strip(), _answer(p, 3, 1).strip()] for p in PROMPTS]
  assert len(server.requests) == len(PROMPTS)  # one request per prompt, `n` samples each
  for request in server.requests:
    assert request["path"] == "/v1/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["body"] | {"prompt": None} == {
        "model": "tiny", "prompt": None, "n": 2, "seed": 3, "temperature": 0.7, "top_p": 0.9,
        "max_tokens": 5}


def test_http_chat_without_key(server, monkeypatch):
  monkeypatch.delenv("SCIQA_TEST_KEY", raising=False)
  teacher = http_teacher.HttpTeacher(server.base_url + "/", "tiny", chat=True,
                                     api_key_env="SCIQA_TEST_KEY")
  assert teacher.complete(["hello there"]) == [[_answer("hello there", 0, 0).strip()]]
  (request,) = server.requests
  assert request["path"] == "/v1/chat/completions"
  assert request["body"]["messages"] == [{"role": "user", "content": "hello there"}]
  assert "Authorization" not in request["headers"]


def test_http_retries_429_with_retry_after_and_500(server):
  server.scripted["limited"] = [(429, {"Retry-After": "7"}, {"error": {"message": "slow down"}})]
  server.scripted["flaky"] = [(500, {}, {"error": {"message": "oops"}}),
                              (503, {}, {"error": {"message": "busy"}})]
  teacher = http_teacher.HttpTeacher(server.base_url, "tiny", backoff_base_s=0.5)
  out = teacher.complete(["limited", "flaky"])
  assert out == [[_answer("limited", 0, 0).strip()], [_answer("flaky", 0, 0).strip()]]
  assert server.count("limited") == 2 and server.count("flaky") == 3
  assert 7.0 in server.sleeps  # Retry-After honoured
  backoffs = sorted(server.sleeps)
  backoffs.remove(7.0)
  # Jittered exponential backoff: attempt i waits in [0, base * 2**i].
  assert len(backoffs) == 2 and all(0 <= b <= 1.0 for b in backoffs)


def test_http_client_error_is_not_retried(server):
  server.scripted["bad"] = [(400, {}, {"error": {"message": "model 'tiny' has context 8"}})]
  teacher = http_teacher.HttpTeacher(server.base_url, "tiny")
  with pytest.raises(http_teacher.HttpTeacherError, match=r"HTTP 400: model 'tiny' has context 8"):
    teacher.complete(["bad"])
  assert server.count("bad") == 1 and server.sleeps == []


def test_http_gives_up_after_max_retries(server):
  server.scripted["down"] = [(503, {}, {"error": "overloaded"})] * 5
  teacher = http_teacher.HttpTeacher(server.base_url, "tiny", max_retries=2)
  with pytest.raises(http_teacher.HttpTeacherError, match=r"failed 3 times.*503: overloaded"):
    teacher.complete(["down"])
  assert server.count("down") == 3 and len(server.sleeps) == 2


def test_http_connection_refused_is_retried(server):
  with socket.socket() as sock:  # a local port nobody listens on once closed
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  teacher = http_teacher.HttpTeacher(f"http://127.0.0.1:{port}/v1", "tiny", max_retries=1)
  with pytest.raises(http_teacher.HttpTeacherError, match="failed 2 times"):
    teacher.complete(["anyone?"])
  assert len(server.sleeps) == 1


def test_http_bounded_in_flight(server):
  server.delay_s = 0.1
  teacher = http_teacher.HttpTeacher(server.base_url, "tiny", max_in_flight=3)
  prompts = [f"prompt {i}" for i in range(12)]
  out = teacher.complete(prompts)
  assert out == [[_answer(p, 0, 0).strip()] for p in prompts]  # order kept despite concurrency
  assert 1 < server.max_active <= 3


def test_http_tops_up_when_server_ignores_n(server):
  server.max_choices = 1
  teacher = http_teacher.HttpTeacher(server.base_url, "tiny")
  (samples,) = teacher.complete(["q"], num_samples=3, temperature=1.0, seed=10)
  assert samples == [_answer("q", seed, 0).strip() for seed in (10, 11, 12)]
  assert [r["body"]["n"] for r in server.requests] == [3, 2, 1]


def test_http_rejects_bad_url():
  with pytest.raises(ValueError, match="teacher.base_url"):
    http_teacher.HttpTeacher("127.0.0.1:8000", "tiny")


# ---- Flax T5 backend ------------------------------------------------------------------------------

@pytest.mark.slow
def test_jax_t5_matches_decoding_generate(hf_dirs, hf_teachers):
  pytest.importorskip("sciqa_jax.decoding")
  import jax
  import numpy as np
  from sciqa_jax import decoding
  from sciqa_jax.teacher.jax_model import JaxT5Teacher

  teacher = JaxT5Teacher(hf_dirs["seq2seq"], batch_size=3, max_input_length=40)
  assert teacher.rows == 4  # 4 local devices in the tests
  out = teacher.complete(PROMPTS, max_new_tokens=6)
  assert [len(samples) for samples in out] == [1, 1, 1]

  # The reference: decoding.generate on the unpadded batch, without sharding or buckets.
  tok = teacher.tokenizer(PROMPTS, padding=True, return_tensors="np")
  assert teacher.runner.encode(PROMPTS) == [list(row) for row in teacher.tokenizer(PROMPTS)[
      "input_ids"]]  # the inference layer's encoding is the tokenizer's own (EOS-terminated)
  ref = decoding.generate(teacher.model, jax.device_get(teacher.params),
                          tok["input_ids"].astype(np.int32),
                          tok["attention_mask"].astype(np.int32), max_new_tokens=6)
  expected = [[t.strip() for t in teacher.tokenizer.batch_decode(np.asarray(row).tolist(),
                                                                  skip_special_tokens=True)]
              for row in ref.tokens]
  assert out == expected
  # The same checkpoint through transformers: conversion and decoding agree end to end.
  assert out == hf_teachers["seq2seq"].complete(PROMPTS, max_new_tokens=6)

  # Sampling: num_samples per prompt from one compiled call, reproducible by seed.
  sampled = teacher.complete(PROMPTS, num_samples=2, temperature=1.0, max_new_tokens=4, seed=5)
  assert [len(samples) for samples in sampled] == [2, 2, 2]
  assert teacher.complete(PROMPTS, num_samples=2, temperature=1.0, max_new_tokens=4,
                          seed=5) == sampled

  with pytest.raises(ValueError, match="teacher.max_input_length=40"):
    teacher.complete(["word " * 60])

  # Weights sharded over the 4 devices (a teacher larger than one device): the same completions,
  # and each device holds about a quarter of the parameter bytes.
  sharded = JaxT5Teacher(hf_dirs["seq2seq"], batch_size=3, max_input_length=40,
                         parallelism="fsdp")
  assert sharded.complete(PROMPTS, max_new_tokens=6) == out
  total = sum(x.nbytes for x in jax.tree.leaves(sharded.params))
  per_device = {}
  for leaf in jax.tree.leaves(sharded.params):
    for shard in leaf.addressable_shards:
      per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
  assert len(per_device) == 4
  assert max(per_device.values()) < 0.3 * total, (per_device, total)


# ---- the factory ---------------------------------------------------------------------------------

def _teacher_config(**overrides) -> ml_collections.ConfigDict:
  config = base_config().teacher
  config.update(overrides)
  return config


def test_factory_completion_backends(hf_dirs, fake_server):
  from sciqa_jax.teacher.hf import TransformersTeacher
  hf = make_teacher(_teacher_config(backend="hf", model=hf_dirs["causal"], batch_size=2))
  assert isinstance(hf, TransformersTeacher) and hf.batch_size == 2
  http = make_teacher(_teacher_config(backend="http", model="tiny", base_url=fake_server.base_url,
                                      chat=True, max_in_flight=2))
  assert isinstance(http, http_teacher.HttpTeacher)
  assert http.url.endswith("/v1/chat/completions") and http.max_in_flight == 2
  with pytest.raises(ValueError, match="teacher.model"):
    make_teacher(_teacher_config(backend="hf", model=""))


def test_factory_jax_t5(hf_dirs):
  pytest.importorskip("sciqa_jax.decoding")
  from sciqa_jax.teacher.jax_model import JaxT5Teacher
  teacher = make_teacher(_teacher_config(backend="jax_t5", model=hf_dirs["seq2seq"],
                                         max_input_length=64))
  assert isinstance(teacher, JaxT5Teacher) and teacher.max_input_length == 64


def test_factory_example_backends(tmp_path):
  template = pytest.importorskip("sciqa_jax.teacher.template")
  teacher = make_teacher(_teacher_config(backend="template", error_rate=0.25), seed=3)
  assert isinstance(teacher, template.TemplateTeacher)
  importer = pytest.importorskip("sciqa_jax.teacher.importer")
  path = tmp_path / "rationales.jsonl"
  path.write_text(json.dumps({"id": "q1", "rationale": "Ice is a solid.", "answer": "A"}) + "\n")
  teacher = make_teacher(_teacher_config(backend="import", model=str(path)))
  assert isinstance(teacher, importer.ImportedRationales)
  with pytest.raises(ValueError, match="JSONL"):
    make_teacher(_teacher_config(backend="import", model=""))


def test_factory_unknown_backend_lists_choices():
  with pytest.raises(ValueError, match="unknown teacher.backend='gpt9'") as error:
    make_teacher(_teacher_config(backend="gpt9"))
  assert all(name in str(error.value) for name in BACKENDS)


def test_factory_missing_torch_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
  monkeypatch.delitem(sys.modules, "sciqa_jax.teacher.hf", raising=False)
  with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
    make_teacher(_teacher_config(backend="hf", model="some/model"))


# ---- user errors: one line naming the setting or file --------------------------------------------

def _one_line_user_error(info, *names: str) -> None:
  assert isinstance(info.value, errors.UserError), type(info.value)
  message = str(info.value)
  assert "\n" not in message and all(name in message for name in names), message


@pytest.mark.parametrize("overrides, error, names", [
    (dict(backend="gpt9"), errors.ConfigError, ("teacher.backend='gpt9'",)),
    (dict(backend="import", model=""), errors.ConfigError, ("teacher.model",)),
    (dict(backend="import", model="/nowhere/r.jsonl"), errors.MissingFileError,
     ("teacher.model='/nowhere/r.jsonl'",)),
    (dict(backend="import", model="/nowhere/D_gsm8k.json", import_format="fine_tune_cot"),
     errors.MissingFileError, ("teacher.model='/nowhere/D_gsm8k.json'", "fine_tune_cot")),
    (dict(backend="import", model="/nowhere/llm", import_format="step_by_step"),
     errors.MissingFileError, ("teacher.model='/nowhere/llm'", "step_by_step")),
    (dict(backend="import", model="r.jsonl", import_format="csv"), errors.ConfigError,
     ("teacher.import_format='csv'",)),
    (dict(backend="http", model=""), errors.ConfigError, ("teacher.model",)),
    (dict(backend="http", model="tiny", base_url="127.0.0.1:8000"), errors.ConfigError,
     ("teacher.base_url",)),
    (dict(backend="http", model="tiny", base_url="http://h/v1", max_in_flight=0),
     errors.ConfigError, ("teacher.max_in_flight=0",)),
    (dict(backend="template", error_rate=2.0), errors.ConfigError, ("teacher.error_rate=2.0",)),
])
def test_factory_user_errors(overrides, error, names):
  with pytest.raises(error) as info:
    make_teacher(_teacher_config(**overrides))
  _one_line_user_error(info, *names)


def test_sampling_args_and_missing_torch_are_user_errors(monkeypatch):
  with pytest.raises(errors.ConfigError) as info:
    check_sampling_args(num_samples=2, temperature=0.0, top_p=1.0, max_new_tokens=8)
  _one_line_user_error(info, "teacher.num_samples=2", "teacher.temperature")
  monkeypatch.setitem(sys.modules, "torch", None)
  monkeypatch.delitem(sys.modules, "sciqa_jax.teacher.hf", raising=False)
  with pytest.raises(errors.UserError) as info:
    make_teacher(_teacher_config(backend="hf", model="some/model"))
  _one_line_user_error(info, "teacher.backend='hf'", "pip install")


def test_http_unreachable_server_is_a_user_error(server):
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  teacher = http_teacher.HttpTeacher(f"http://127.0.0.1:{port}/v1", "tiny", max_retries=0)
  with pytest.raises(errors.UserError) as info:
    teacher.complete(["anyone?"])
  _one_line_user_error(info, f"127.0.0.1:{port}", "teacher.base_url")


def test_few_shot_file_errors_are_user_errors(tmp_path):
  from sciqa_jax.teacher import prompts
  with pytest.raises(errors.MissingFileError) as info:
    prompts.load_exemplars(str(tmp_path / "shots.jsonl"))
  _one_line_user_error(info, "teacher.few_shot_path=", "shots.jsonl")
  (tmp_path / "shots.jsonl").write_text("{broken\n")
  with pytest.raises(errors.DataError) as info:
    prompts.load_exemplars(str(tmp_path / "shots.jsonl"))
  _one_line_user_error(info, "shots.jsonl:1", "invalid JSON")

"""OpenAI-compatible HTTP teacher: vLLM, TGI, HF Inference Endpoints, hosted APIs.

Standard library only (urllib, json, concurrent.futures): the backend adds no dependency.

- One request per prompt with `n = num_samples`, to `<base_url>/completions` or, with `chat=True`,
  `<base_url>/chat/completions` (the prompt as one user message). `base_url` includes the API
  version, as in the OpenAI client: `http://127.0.0.1:8000/v1`.
- Requests run in a thread pool of `max_in_flight` workers, which bounds the number in flight:
  servers queue or reject beyond their batch capacity, and rate-limited APIs punish bursts.
- 429, 5xx and connection errors/timeouts are retried with exponential backoff and full jitter
  (bounded by `max_retries`); a `Retry-After` header (seconds or an HTTP date) sets the wait
  instead, because the server knows when it will accept work again. Any other 4xx is a mistake in
  the request (model name, key, context length) that retrying cannot fix: it fails at once with
  the server's own message.
- Servers that ignore `n` (some return one choice) are topped up with further requests for the
  missing samples, with distinct seeds so the samples stay different.
- The API key is read from the environment variable named by `api_key_env`, never from the config,
  so it is not written to the run's config.json; local servers need none.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Sequence

from sciqa_jax import errors
from sciqa_jax.teacher.base import check_sampling_args

# Indirection so tests can record backoff waits instead of sleeping through them.
_sleep = time.sleep

_RETRIABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class HttpTeacherError(errors.UserError, RuntimeError):
  """A request failed permanently (a non-retriable status, or retries exhausted)."""


def _retry_after_seconds(value: str | None) -> float | None:
  """Parses a Retry-After header: delta-seconds or an HTTP date; None when absent or malformed."""
  if not value:
    return None
  value = value.strip()
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return None
  return max(0.0, when.timestamp() - time.time())


def _server_message(body: bytes) -> str:
  """The error message from an OpenAI-style error body, else the (truncated) body itself."""
  text = body.decode("utf-8", errors="replace")
  try:
    payload = json.loads(text)
  except json.JSONDecodeError:
    return text[:1000]
  if isinstance(payload, dict):
    error = payload.get("error", payload)
    if isinstance(error, dict) and "message" in error:
      return str(error["message"])
    if isinstance(error, str):
      return error
    if "message" in payload:
      return str(payload["message"])
  return text[:1000]


class HttpTeacher:
  """An OpenAI-compatible completion endpoint behind the CompletionTeacher protocol.

  Attributes:
    name: `http:<model>`, recorded in the cache as the teacher id.
    url: the endpoint every request goes to.
  """

  def __init__(self, base_url: str, model: str, *, chat: bool = False,
               api_key_env: str = "OPENAI_API_KEY", max_in_flight: int = 4, max_retries: int = 6,
               timeout_s: float = 300.0, backoff_base_s: float = 1.0, backoff_max_s: float = 60.0):
    """Configures the client; nothing is contacted until `complete`.

    Args:
      base_url: the API root including its version, e.g. `http://127.0.0.1:8000/v1`.
      model: the model name the server serves (the request's `model` field).
      chat: use `/chat/completions` with the prompt as a user message.
      api_key_env: environment variable holding the API key, sent as a Bearer token when set.
      max_in_flight: the most requests outstanding at once.
      max_retries: retries per request after the first attempt, then HttpTeacherError.
      timeout_s: socket timeout of one request.
      backoff_base_s: the first backoff ceiling; it doubles per retry up to `backoff_max_s`.
      backoff_max_s: the longest backoff without a Retry-After header.
    """
    parsed = urllib.parse.urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
      raise errors.ConfigError(f"teacher.base_url={base_url!r} must be an http(s) URL such as "
                               "http://127.0.0.1:8000/v1")
    if not model:
      raise errors.ConfigError("teacher.model must name the model the server serves")
    if max_in_flight < 1:
      raise errors.ConfigError(f"teacher.max_in_flight={max_in_flight} must be >= 1")
    if max_retries < 0:
      raise errors.ConfigError(f"teacher.max_retries={max_retries} must be >= 0")
    self.name = f"http:{model}"
    self.model = model
    self.chat = chat
    self.url = base_url.rstrip("/") + ("/chat/completions" if chat else "/completions")
    self.api_key_env = api_key_env
    self.max_in_flight = max_in_flight
    self.max_retries = max_retries
    self.timeout_s = timeout_s
    self.backoff_base_s = backoff_base_s
    self.backoff_max_s = backoff_max_s

  def _headers(self) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    # Read per request so a key exported after construction (or rotated) is picked up.
    key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
    if key:
      headers["Authorization"] = f"Bearer {key}"
    return headers

  def _post(self, body: dict) -> dict:
    """POSTs one request, retrying transient failures; returns the decoded JSON response."""
    data = json.dumps(body).encode("utf-8")
    for attempt in range(self.max_retries + 1):
      request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
      retry_after = None
      try:
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
          return json.loads(response.read().decode("utf-8"))
      except urllib.error.HTTPError as e:
        message = _server_message(e.read())
        if e.code not in _RETRIABLE_STATUS:
          raise HttpTeacherError(f"{self.url} answered HTTP {e.code}: {message}") from e
        failure = f"HTTP {e.code}: {message}"
        retry_after = _retry_after_seconds(e.headers.get("Retry-After"))
      except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
        failure = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
      except json.JSONDecodeError as e:
        raise HttpTeacherError(f"{self.url} answered with a body that is not JSON: {e}") from e
      if attempt == self.max_retries:
        raise HttpTeacherError(f"{self.url} failed {attempt + 1} times; last error: {failure}. "
                               "Is the server up and teacher.base_url right? (raise "
                               "teacher.max_retries to wait longer)")
      if retry_after is None:
        # Full jitter: many workers retrying together would otherwise hit the server in lockstep.
        retry_after = random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))
      logging.warning("%s: %s; retry %d/%d in %.1fs", self.url, failure, attempt + 1,
                      self.max_retries, retry_after)
      _sleep(retry_after)
    raise AssertionError("unreachable: the loop returns or raises")

  def _texts(self, response: dict) -> list[str]:
    """The completions of one response, in choice-index order."""
    try:
      choices = sorted(response["choices"], key=lambda choice: choice.get("index", 0))
      if self.chat:
        return [choice["message"]["content"] or "" for choice in choices]
      return [choice["text"] for choice in choices]
    except (KeyError, TypeError) as e:
      raise HttpTeacherError(f"{self.url} answered without the expected "
                             f"{'choices[].message.content' if self.chat else 'choices[].text'}: "
                             f"{json.dumps(response)[:500]}") from e

  def _complete_one(self, prompt: str, num_samples: int, temperature: float, top_p: float,
                    max_new_tokens: int, seed: int) -> list[str]:
    body = {"model": self.model, "temperature": temperature, "top_p": top_p,
            "max_tokens": max_new_tokens}
    if self.chat:
      body["messages"] = [{"role": "user", "content": prompt}]
    else:
      body["prompt"] = prompt
    texts: list[str] = []
    # Each round asks for the samples still missing; a server honouring `n` needs one round.
    for round_index in range(num_samples):
      body.update(n=num_samples - len(texts), seed=seed + round_index)
      texts.extend(self._texts(self._post(body)))
      if len(texts) >= num_samples:
        return [text.strip() for text in texts[:num_samples]]
    raise HttpTeacherError(f"{self.url} returned no choices for a prompt after {num_samples} "
                           "requests")

  def complete(self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 0.0,
               top_p: float = 1.0, max_new_tokens: int = 128, seed: int = 0) -> list[list[str]]:
    """Per prompt, `num_samples` completions, with at most `max_in_flight` requests at a time."""
    check_sampling_args(num_samples, temperature, top_p, max_new_tokens)
    with concurrent.futures.ThreadPoolExecutor(max_workers=self.max_in_flight) as pool:
      futures = [pool.submit(self._complete_one, prompt, num_samples, temperature, top_p,
                             max_new_tokens, seed) for prompt in prompts]
      try:
        return [future.result() for future in futures]
      except BaseException:
        # Fail fast: drop queued requests instead of sending them after a permanent error.
        for future in futures:
          future.cancel()
        raise

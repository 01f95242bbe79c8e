"""A small OpenAI-compatible chat-completions server for one local model (and an optional adapter), on
this project's own generation path: for tests, CPU runs and trying the server path without a GPU.

Most used:  python serve.py --model smollm2-135m --port 8011     (then --judge-server http://127.0.0.1:8011/v1)

For throughput on GPUs serve the models with vLLM or SGLang instead (e.g. `vllm serve
OpenRubrics/RubricARM-8B-Judge`): the stages speak the same protocol to any of them (`--rubric-server`,
`--judge-server`, `common.py cache-rubrics --server`). This one answers GET /v1/models and POST
/v1/chat/completions (messages through the model's chat template, n, max_tokens or max_completion_tokens,
temperature, top_p, seed), one request at a time. A malformed request gets a 400 that says which field; a
prompt over --max-prompt-length (or the model's context) gets a 400 saying so; max_tokens is capped by the
context left after the prompt (finish_reason "length" when a completion stops there); stream=true is refused. It listens on
127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

import common as C


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    ap.add_argument("--model", required=True, help="model name or folder (smollm2-135m works offline)")
    ap.add_argument("--adapter", default=None, help="a LoRA adapter to serve on it")
    ap.add_argument("--served-name", default=None, help="the model id clients ask for (default: --model)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--max-prompt-length", type=int, default=8192, help="longer prompts are refused with 400")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="the most tokens one completion gets, whatever a request asks (default: what the model's "
                         "context leaves after the prompt); a long greedy request holds every other client")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--trust-remote-code", action="store_true")
    return ap.parse_args(argv)


class BadRequest(ValueError):
    """A request this server cannot answer as asked: a 400 with this message."""


def text_content(content, k: int) -> str:
    """A message's content as text: a string, or (OpenAI's other form) a list of text parts, joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                         for p in content):
        return "".join(p["text"] for p in content)
    raise BadRequest(f"messages[{k}].content: a string or a list of {{type: text, text}} parts is needed")


def _number(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    v = default if v is None else v
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise BadRequest(f"{key}: a number from {lo:g} to {hi:g} is needed, not {v!r}")
    return float(v)


def _integer(body: dict, key: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise BadRequest(f"{key}: an integer {'from ' + str(lo) + ' to ' + str(hi) if hi is not None else 'of at least ' + str(lo)}"
                         f" is needed, not {v!r}")
    return v


MAX_N = 64  # completions per request


def parse_request(body) -> dict:
    """The chat-completions fields this server reads, checked: any other shape is a BadRequest (400)."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
    if body.get("stream"):
        raise BadRequest("stream: not supported here; send stream=false (the default)")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("messages: a non-empty list of {role, content} is needed")
    messages = []
    for k, m in enumerate(msgs):
        if not isinstance(m, dict) or "content" not in m:
            raise BadRequest(f"messages[{k}]: an object with role and content is needed")
        if m.get("role") not in C.CHAT_ROLES:
            raise BadRequest(f"messages[{k}].role: one of {', '.join(C.CHAT_ROLES)}, not {str(m.get('role'))[:40]!r}")
        messages.append({"role": m["role"], "content": text_content(m["content"], k)})
    top_k = body.get("top_k")
    if top_k not in (None, -1, 0):
        raise BadRequest(f"top_k: only -1 or 0 (off) are supported here, not {top_k!r}")
    max_tokens = _integer(body, "max_completion_tokens", None, 1)  # the newer name wins, as in OpenAI's API
    return {"messages": messages, "n": _integer(body, "n", 1, 1, MAX_N),
            "max_tokens": max_tokens if max_tokens is not None else _integer(body, "max_tokens", 256, 1),
            "temperature": _number(body, "temperature", 1.0, 0.0, 2.0), "top_p": _number(body, "top_p", 1.0, 1e-9, 1.0),
            "seed": _integer(body, "seed", None, -(2**63), 2**63 - 1)}


class Server:
    def __init__(self, args):
        self.name = args.served_name or args.model
        # as vLLM does: what is behind the served name (the weights and the adapter, by content)
        self.root = str(C.model_identity(args.model)) + (f" + {C.input_identity(args.adapter)}" if args.adapter else "")
        self.max_prompt, self.max_tokens = args.max_prompt_length, args.max_tokens
        device = C.parse_device(args.device) if args.device else C.default_device()
        self.tok = C.load_tokenizer(args.model, args.trust_remote_code)
        model = C.load_base_model(args.model, device=device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
        self.model = C.attach_lora(model, args.adapter, trainable=False) if args.adapter else model
        self.model.eval()
        # the positions the model has: a prompt and its completion share them (max_tokens is capped to what is left)
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        self.lock = threading.Lock()  # one generation at a time
        self.fail_first = int(os.environ.get("RUBRIC_ARM_SERVER_FAIL_FIRST", "0"))  # fault injection for the tests

    def complete(self, body) -> tuple[int, dict]:
        try:
            req = parse_request(body)
        except BadRequest as e:
            return 400, {"error": {"message": str(e), "type": "invalid_request_error"}}
        if body.get("model") not in (None, self.name):
            return 404, {"error": {"message": f"model {body.get('model')!r} is not served here ({self.name})"}}
        # the tokenizer too is used by one request at a time: a fast tokenizer's per-call settings (special-token
        # splitting, padding) are shared state, and a concurrent call changed another request's token ids
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return 503, {"error": {"message": "not ready (fault injected by RUBRIC_ARM_SERVER_FAIL_FIRST)"}}
            try:
                ids = C.chat_prompt_ids(self.tok, req["messages"])
            except (TypeError, ValueError) as e:  # e.g. a lone surrogate the tokenizer cannot take
                return 400, {"error": {"message": f"messages: cannot be tokenized ({C._first_line(e)})"}}
            limit = min(self.max_prompt, self.context) if self.context else self.max_prompt
            if len(ids) > limit:
                return 400, {"error": {"message": f"the prompt has {len(ids)} tokens, over the maximum context length "
                                                  f"{limit}", "type": "invalid_request_error"}}
            max_tokens = min(req["max_tokens"], self.max_tokens or req["max_tokens"],
                             (self.context - len(ids)) if self.context else req["max_tokens"])
            if req["seed"] is not None:
                torch.manual_seed(req["seed"])
            ro = C.generate(self.model, self.tok, [ids], n=req["n"], max_new_tokens=max_tokens,
                            temperature=req["temperature"], top_p=req["top_p"])
            lengths = ro.completion_mask.sum(1).tolist()
        return 200, {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                     "model": self.name, "choices": [{"index": i, "message": {"role": "assistant", "content": t},
                                                      "finish_reason": "length" if cut else "stop"}
                                                     for i, (t, cut) in enumerate(zip(ro.texts, ro.truncated.tolist()))],
                     "usage": {"prompt_tokens": len(ids), "completion_tokens": int(sum(lengths)),
                               "total_tokens": len(ids) + int(sum(lengths))}}


def handler_for(server: Server):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - the http.server interface
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model", "owned_by": "rubric-arm",
                                                             "root": server.root}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):  # noqa: N802
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                length = int(self.headers.get("Content-Length", 0))
                if length < 0:
                    raise ValueError(f"Content-Length {length}")
                body = json.loads(self.rfile.read(length))
            except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, a bad length, or nested too deep
                return self._send(400, {"error": {"message": f"the body is not JSON: {C._first_line(e)[:200]}"}})
            try:
                self._send(*server.complete(body))
            except Exception as e:  # a bug here: one 500 with its line, the server goes on serving
                C.log.exception("serve: request failed")
                self._send(500, {"error": {"message": f"internal error: {C._first_line(e)[:200]}"}})

        def log_message(self, fmt, *a):  # one log line per request, through the project's logger
            C.log.info("serve: %s", fmt % a)
    return Handler


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    C.check_flags((args.max_prompt_length >= 1, "--max-prompt-length: must be at least 1"),
                  (args.max_tokens is None or args.max_tokens >= 1, "--max-tokens: must be at least 1"))
    server = Server(args)
    httpd = ThreadingHTTPServer((args.host, args.port), handler_for(server))
    C.log.info("serving %s on http://%s:%d/v1", server.name, args.host, httpd.server_address[1])
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (run_main's handler)
        code = 143 if C._INTERRUPTED.get("signal") == signal.SIGTERM else 130
        C.log.info("serve: stopped by %s", "SIGTERM" if code == 143 else "Ctrl-C")
        httpd.server_close()
        sys.stdout.flush()
        sys.stderr.flush()
        # a request still generating in its thread would abort the interpreter's shutdown ("terminate called
        # without an active exception", SIGABRT): leave at once, with the signal's exit status
        os._exit(code)
    finally:
        httpd.server_close()


if __name__ == "__main__":
    C.run_main(main)

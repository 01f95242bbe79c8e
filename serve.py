"""A small OpenAI-compatible chat-completions server for one local model (and an optional adapter), on
this project's own generation path: for tests, CPU runs and trying the server path without a GPU.

Most used:  python serve.py --model smollm2-135m --port 8011     (then --judge-server http://127.0.0.1:8011/v1)

For throughput on GPUs serve the models with vLLM or SGLang instead (e.g. `vllm serve
OpenRubrics/RubricARM-8B-Judge`): the stages speak the same protocol to any of them (`--rubric-server`,
`--judge-server`, `common.py cache-rubrics --server`). This one answers GET /v1/models and POST
/v1/chat/completions (messages through the model's chat template, n, max_tokens, temperature, top_p,
seed), one request at a time, and refuses (400) a prompt over --max-prompt-length tokens. It listens on
127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

import common as C


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [flags: listed below]")
    ap.add_argument("--model", required=True, help="model name or folder (smollm2-135m works offline)")
    ap.add_argument("--adapter", default=None, help="a LoRA adapter to serve on it")
    ap.add_argument("--served-name", default=None, help="the model id clients ask for (default: --model)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--max-prompt-length", type=int, default=8192, help="longer prompts are refused with 400")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--trust-remote-code", action="store_true")
    return ap.parse_args(argv)


def text_content(content) -> str:
    """A message's content as text: a string, or (OpenAI's other form) a list of parts whose text parts join."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


class Server:
    def __init__(self, args):
        self.name = args.served_name or args.model
        # as vLLM does: what is behind the served name (the weights and the adapter, by content)
        self.root = str(C.model_identity(args.model)) + (f" + {C.input_identity(args.adapter)}" if args.adapter else "")
        self.max_prompt = args.max_prompt_length
        device = torch.device(args.device) if args.device else C.default_device()
        self.tok = C.load_tokenizer(args.model, args.trust_remote_code)
        model = C.load_base_model(args.model, device=device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
        self.model = C.attach_lora(model, args.adapter, trainable=False) if args.adapter else model
        self.model.eval()
        self.lock = threading.Lock()  # one generation at a time
        self.fail_first = int(os.environ.get("RUBRIC_ARM_SERVER_FAIL_FIRST", "0"))  # fault injection for the tests

    def complete(self, body: dict) -> tuple[int, dict]:
        if body.get("model") not in (None, self.name):
            return 404, {"error": {"message": f"model {body.get('model')!r} is not served here ({self.name})"}}
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return 503, {"error": {"message": "not ready (fault injected by RUBRIC_ARM_SERVER_FAIL_FIRST)"}}
            ids = C.chat_prompt_ids(self.tok, [{**m, "content": text_content(m.get("content"))} for m in body["messages"]])
            if len(ids) > self.max_prompt:
                return 400, {"error": {"message": f"the prompt has {len(ids)} tokens, over the maximum context length "
                                                  f"{self.max_prompt}"}}
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            n = int(body.get("n", 1))
            ro = C.generate(self.model, self.tok, [ids], n=n, max_new_tokens=int(body.get("max_tokens", 256)),
                            temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)))
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
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if not isinstance(body.get("messages"), list):
                    raise ValueError("messages: a list of {role, content} is needed")
            except ValueError as e:
                return self._send(400, {"error": {"message": f"bad request: {e}"}})
            self._send(*server.complete(body))

        def log_message(self, fmt, *a):  # one log line per request, through the project's logger
            C.log.info("serve: %s", fmt % a)
    return Handler


def main(argv=None) -> None:
    C.setup_logging()
    args = parse_args(argv)
    server = Server(args)
    httpd = ThreadingHTTPServer((args.host, args.port), handler_for(server))
    C.log.info("serving %s on http://%s:%d/v1", server.name, args.host, httpd.server_address[1])
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


if __name__ == "__main__":
    C.run_main(main)

"""Manifests: what an output was made from, so that no result is reused stale.

Every output that can be reused or resumed records the flags that change it and the identity of
every input: a local file or folder by the digest of its content, anything else (a hub name, a
number) as written. Reuse needs the same record; otherwise the stage refuses and lists what differs.
So the same file reached by another path resumes, and a changed file at the same path does not.

No torch here: alternate.sh checks and writes its step markers with this file, quickly.

    python manifests.py step-check MARKER -- COMMAND...   # 0 same, 1 no marker, 3 other (differences on stderr),
                                                          # 4 same but its output is gone, 5 an input is gone
    python manifests.py step-done MARKER -- COMMAND...    # record COMMAND and its inputs in MARKER
    python manifests.py check-output [--adapter DIR] [--cache FILE --data FILE]  # 0 only if a step's output is whole
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

# Files larger than this (model weights) are hashed whole once, and the digest is kept in a small cache keyed by
# the file's resolved path, size, modification time and inode: a later run reads the cache instead of hashing
# gigabytes again, and any write to the file (which moves its mtime) makes a new full hash.
BIG_FILE = 64 << 20
SKIPPED_IN_FOLDERS = {"checkpoints", ".lock", ".lock.pid", "logs"}


def content_digest(path: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of a file's bytes, or of a folder's files (their relative names and bytes;
    checkpoints, locks and logs left out)."""
    h = hashlib.sha256()
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not SKIPPED_IN_FOLDERS & set(p.relative_to(path).parts))
    for f in files:
        if f != path:
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        if f.stat().st_size <= BIG_FILE:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(_big_file_sha256(f).encode())
    return h.hexdigest()[:16]


def _file_sha256(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest_cache() -> Path:
    return Path(os.environ.get("RUBRIC_ARM_CACHE") or Path.home() / ".cache" / "rubric-arm") / "digests.json"


def _big_file_sha256(f: Path) -> str:
    """The full sha256 of a large file, from the cache when its path, size, mtime and inode are unchanged."""
    st = f.stat()
    key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    cache = _digest_cache()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = _file_sha256(f)
    known[key] = digest
    try:  # best effort: a read-only cache only costs the hash next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    except OSError:
        pass
    return digest


def input_identity(value):
    """How a flag's value enters a manifest: an existing local file or folder as 'sha256:<digest of its
    content>', anything else as it is."""
    if isinstance(value, str) and value and os.path.exists(value):
        return "sha256:" + content_digest(value)
    return value


def manifest_differences(old: dict, new: dict, keys=None) -> list[str]:
    """'key: old -> new' for every key whose value differs (all keys of either, or only `keys`)."""
    keys = sorted(set(old) | set(new)) if keys is None else keys
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


OUTPUT_FLAGS = {"--out", "--out-dir"}  # what a step writes: named, not digested


def step_manifest(command: list[str]) -> dict[str, object]:
    """A step of alternate.sh as {flag or position: value}, each value by input_identity (a local file
    or folder by its content), except the step's own outputs; the interpreter is left out."""
    made, key = {}, None
    for k, tok in enumerate(command[1:], 1):
        if tok.startswith("--"):
            if key is not None:
                made[key] = True
            key = tok
            continue
        name = key or f"#{k}"
        name = name if name not in made else f"{name}#{k}"  # a repeated flag keeps every value
        made[name] = tok if key in OUTPUT_FLAGS else input_identity(tok)
        key = None
    if key is not None:
        made[key] = True
    # the built-in prompts every stage reads (prompts/*.txt): an edited prompt makes every step new
    made["builtin_prompts"] = input_identity(str(Path(__file__).resolve().parent / "prompts"))
    return made


def check_step(marker: str, command: list[str], write: bool) -> int:
    """alternate.sh's done-marker: 0 if the marker records this command and these inputs, 1 if there is
    none, 3 (and the differences on stderr) if it records another; with write, record them."""
    made = step_manifest(command)
    path = Path(marker)
    if write:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(made, indent=2))
        os.replace(tmp, path)
        return 0
    if not path.exists():
        return 1
    try:
        old = json.loads(path.read_text() or "null")
    except json.JSONDecodeError:
        old = None
    if old == made:
        gone = [v for k, v in made.items() if k.split("#")[0] in OUTPUT_FLAGS and not os.path.exists(v)]
        if gone:  # done once, but what it wrote was deleted since: the step runs again
            print(f"its output {', '.join(gone)} is missing", file=sys.stderr)
            return 4
        return 0
    if not isinstance(old, dict):
        print("(a marker of an older version: it names no inputs)", file=sys.stderr)
        return 3
    # an input digested when the step ran and now absent: a deleted file, not a changed setting
    missing = [made[k] for k in made if isinstance(old.get(k), str) and old[k].startswith("sha256:")
               and isinstance(made[k], str) and not made[k].startswith("sha256:") and not os.path.exists(made[k])]
    if missing:
        print(f"its input {', '.join(missing)} is missing (it was there when the step ran); restore it, or delete "
              f"this step's marker {path} and the steps after it to make them again", file=sys.stderr)
        return 5
    print("; ".join(manifest_differences(old, made)), file=sys.stderr)
    return 3


# ---- a step's output read back whole, before its marker is written --------------------------------

SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                           "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_problem(path: Path) -> str | None:
    """None if PATH is a whole safetensors file: its header parses, each tensor's bytes fit its dtype and
    shape and lie inside the file, and the file ends where the last tensor does. That is what reading
    every tensor back checks (a file cut short or padded), without loading torch."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or 8 + n > size:
            return f"{size} bytes: shorter than its header"
        try:
            meta = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return f"its header is not JSON ({e})"
    end = 0
    for name, t in meta.items():
        if name == "__metadata__":
            continue
        try:
            a, b = t["data_offsets"]
            want = SAFETENSORS_DTYPE_BYTES[t["dtype"]]
            for d in t["shape"]:
                want *= d
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r}: its header entry is damaged"
        if not 0 <= a <= b or b - a != want:
            return f"tensor {name!r}: {b - a} bytes where its dtype and shape need {want}"
        end = max(end, b)
    if 8 + n + end != size:
        return f"{size} bytes where its header accounts for {8 + n + end}"
    return None


def check_output(adapter: str | None, cache: str | None, data: str | None) -> None:
    """A step's output is whole: an adapter folder whose config is JSON and whose weights file is whole,
    a rubric cache that covers every id of DATA exactly once. Else one line, and exit 1."""
    if adapter:
        cfg, weights = Path(adapter) / "adapter_config.json", Path(adapter) / "adapter_model.safetensors"
        try:
            json.loads(cfg.read_text(encoding="utf-8"))
            problem = safetensors_problem(weights)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            problem = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        if problem:
            raise SystemExit(f"error: adapter {adapter} does not read back: {problem}")
    if cache:
        ids = _jsonl_ids(Path(cache))
        want = set(_jsonl_ids(Path(data))) if data else set(ids)
        missing, extra = want - set(ids), set(ids) - want
        dup = len(ids) - len(set(ids))
        if missing or extra or dup:
            raise SystemExit(f"error: rubric cache {cache} has {len(ids)} rubrics: {len(missing)} id(s) of {data} missing"
                             f"{f' (first {sorted(missing)[0]!r})' if missing else ''}, {len(extra)} not in it"
                             f"{f', {dup} repeated' if dup else ''}")


def _jsonl_ids(path: Path) -> list[str]:
    """The 'id' of every line of a JSONL file written by this project (a part, a rubric cache)."""
    ids = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: {path}: cannot be read ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ids.append(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SystemExit(f"error: {path}:{n}: field 'id': missing, or the line is not JSON") from None
    return ids


def _cli() -> None:
    if sys.argv[1:2] == ["check-output"]:
        import argparse
        ap = argparse.ArgumentParser(prog="manifests.py check-output", allow_abbrev=False,
                                     description="exit 0 only if a step's output is whole (alternate.sh, before its marker)")
        ap.add_argument("--adapter", default=None, help="an adapter folder whose files must read back whole")
        ap.add_argument("--cache", default=None, help="a rubric cache that must cover every id of --data exactly once")
        ap.add_argument("--data", default=None)
        args = ap.parse_args(sys.argv[2:])
        check_output(args.adapter, args.cache, args.data)
        return
    if len(sys.argv) < 4 or sys.argv[1] not in ("step-check", "step-done") or sys.argv[3] != "--":
        raise SystemExit("usage: manifests.py step-check|step-done MARKER -- COMMAND... | check-output ...")
    raise SystemExit(check_step(sys.argv[2], sys.argv[4:], write=sys.argv[1] == "step-done"))


if __name__ == "__main__":
    _cli()

"""Benchmark the streaming validator against pandas and a plain json.loads loop.

    python bench/validate.py --mb 200            # generate 200 MB, measure all three
    python bench/validate.py --mb 1024 --skip-pandas
    python bench/validate.py --data /tmp/d.jsonl  # reuse a dataset written with --keep

The contenders, each in its own subprocess (so peak RSS figures do not mix; the child reports
its own ``ru_maxrss``, and the CPU time of all its threads):

* ``ours-msgspec`` / ``ours-json``: ``validate_path`` with every rule, duplicates, stats and
  the SHA-256 of the file (with and without the msgspec fast path);
* ``plain``: a ``json.loads`` loop doing the format checks of the OpenAI cookbook's
  ``Chat_finetuning_data_prep`` notebook (streamed line by line, which is kinder to it than
  the notebook's list of every example);
* ``pandas``: ``pandas.read_json(path, lines=True)`` and the same checks on each row.

Ratios are given on CPU time (what a busy shared machine measures best) and on wall time, with
the load average at the start and the end so a noisy run shows. Also prints the import time of
``function_app`` and checks that ``azure.ai.ml`` and ``torch`` stay unimported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# --- data ---------------------------------------------------------------------------------

_VOCABULARY = (
    "the a model deploy endpoint latency request token batch gradient learning rate epoch "
    "customer order invoice refund shipping account password reset configure install error "
    "warning function storage container blob table queue event trigger retry timeout python "
    "azure cluster compute quota region subscription billing please thanks could would should "
    "because however therefore example result value return string number list dictionary"
)
_WORDS = _VOCABULARY.split()
_UNICODE = ["café", "naïve", "Zürich", "東京", "données", "😀", "–", "“quoted”", "résumé"]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 22))]
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), rng.choice(_UNICODE))
    return " ".join(words).capitalize() + rng.choice([".", "?", "!", "."])


def _text(rng: random.Random, pool: list[str], sentences: tuple[int, int]) -> str:
    parts = [rng.choice(pool) for _ in range(rng.randint(*sentences))]
    if rng.random() < 0.1:  # a code block: quotes, backslashes, newlines to escape
        parts.append('```python\nprint("hello\\tworld")\nx = {"a": [1, 2]}\n```')
    return " ".join(parts) if rng.random() < 0.7 else "\n\n".join(parts)


def generate(path: Path, megabytes: int, seed: int = 7) -> int:
    """Write a realistic multi-turn chat dataset of about ``megabytes`` MiB; return lines."""
    rng = random.Random(seed)
    pool = [_sentence(rng) for _ in range(5000)]
    systems = [" ".join(rng.choice(pool) for _ in range(3)) for _ in range(20)]
    target = megabytes * 1024 * 1024
    written = 0
    lines = 0
    recent: list[bytes] = []
    with path.open("wb") as out:
        while written < target:
            if recent and rng.random() < 0.005:  # a few exact duplicates
                line = rng.choice(recent)
            else:
                messages: list[dict[str, Any]] = []
                if rng.random() < 0.6:
                    messages.append({"role": "system", "content": rng.choice(systems)})
                for _ in range(rng.randint(1, 4)):
                    messages.append({"role": "user", "content": _text(rng, pool, (1, 4))})
                    messages.append({"role": "assistant", "content": _text(rng, pool, (2, 9))})
                example: dict[str, Any] = {"messages": messages}
                if rng.random() < 0.3:
                    example["prompt_id"] = f"p{lines:08d}"
                line = json.dumps(example, ensure_ascii=rng.random() < 0.5).encode() + b"\n"
                if len(recent) < 100:
                    recent.append(line)
            out.write(line)
            written += len(line)
            lines += 1
    return lines


# --- the three contenders (each runs in a child process) ----------------------------------


def _cookbook_checks(ex: Any, format_errors: dict[str, int]) -> None:
    """The format checks of the OpenAI cookbook's chat fine-tuning data preparation notebook."""
    if not isinstance(ex, dict):
        format_errors["data_type"] += 1
        return
    messages = ex.get("messages", None)
    if not messages:
        format_errors["missing_messages_list"] += 1
        return
    for message in messages:
        if "role" not in message or "content" not in message:
            format_errors["message_missing_key"] += 1
        if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
            format_errors["message_unrecognized_key"] += 1
        if message.get("role", None) not in ("system", "user", "assistant", "function"):
            format_errors["unrecognized_role"] += 1
        content = message.get("content", None)
        function_call = message.get("function_call", None)
        if (not content and not function_call) or not isinstance(content, str):
            format_errors["missing_content"] += 1
    if not any(message.get("role", None) == "assistant" for message in messages):
        format_errors["example_missing_assistant_message"] += 1


def run_plain(path: str) -> dict[str, Any]:
    format_errors: dict[str, int] = defaultdict(int)
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            _cookbook_checks(json.loads(line), format_errors)
            n += 1
    return {"examples": n, "errors": sum(format_errors.values())}


def run_pandas(path: str) -> dict[str, Any]:
    import pandas as pd

    df = pd.read_json(path, lines=True)
    format_errors: dict[str, int] = defaultdict(int)
    if "messages" not in df.columns:
        raise SystemExit("no messages column")
    for messages in df["messages"]:  # the same checks on each row's messages
        if isinstance(messages, list):
            _cookbook_checks({"messages": messages}, format_errors)
        else:
            format_errors["missing_messages_list"] += 1
    return {"examples": len(df), "errors": sum(format_errors.values())}


def _import_ours(backend: str) -> None:
    if backend == "json":
        sys.modules["msgspec"] = None  # type: ignore[assignment]  # force the stdlib backend
    sys.path.insert(0, str(ROOT))
    from shared.dataset import _json

    assert backend == _json.BACKEND, _json.BACKEND


def run_ours(path: str, backend: str) -> dict[str, Any]:
    from shared.dataset import ValidationConfig, validate_path

    report = validate_path(path, config=ValidationConfig())
    return {"examples": report.stats["examples"], "errors": report.error_total,
            "warnings": report.warning_total, "valid": report.valid}


def child(which: str, path: str) -> None:
    if which == "pandas":
        import pandas  # noqa: F401  # import time is not part of the measurement
    elif which.startswith("ours"):
        _import_ours(which.split("-", 1)[1])
    start = time.perf_counter()
    cpu_start = time.process_time()
    if which == "plain":
        result = run_plain(path)
    elif which == "pandas":
        result = run_pandas(path)
    else:
        result = run_ours(path, which.split("-", 1)[1])
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu_start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(which: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", which, str(path)],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{which} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def import_check() -> str:
    code = ("import sys, time; t = time.perf_counter(); import function_app; "
            "d = time.perf_counter() - t; "
            "print(f'{d:.3f}', 'azure.ai.ml' in sys.modules, 'torch' in sys.modules, "
            "'transformers' in sys.modules, 'mlflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    if proc.returncode:
        return f"import function_app FAILED: {proc.stderr.strip().splitlines()[-1:]}"
    seconds, aml, torch, transformers, mlflow = proc.stdout.split()
    return (f"import function_app: {float(seconds) * 1000:.0f} ms; in sys.modules afterwards: "
            f"azure.ai.ml={aml} torch={torch} transformers={transformers} mlflow={mlflow}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="dataset size in MiB (default 200)")
    parser.add_argument("--skip-pandas", action="store_true", help="skip the pandas baseline")
    parser.add_argument("--repeat", type=int, default=1,
                        help="interleaved runs per contender (least CPU and wall kept)")
    parser.add_argument("--keep", metavar="PATH", help="write the dataset here and keep it")
    parser.add_argument("--data", metavar="PATH", help="measure this existing dataset instead")
    parser.add_argument("--child", nargs=2, metavar=("WHICH", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        if args.data:
            path = Path(args.data)
            with path.open("rb") as f:
                lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
            made = "given"
        else:
            path = Path(args.keep) if args.keep else Path(tmp) / "bench.jsonl"
            lines = generate(path, args.mb)
            made = f"generated in {time.perf_counter() - t:.1f} s"
        size = path.stat().st_size
        print(f"dataset: {size / 2**20:.0f} MiB, {lines:,} lines, "
              f"{size / max(lines, 1):,.0f} bytes/line ({made})")
        load_start = os.getloadavg()
        contenders = ["ours-msgspec", "ours-json", "plain"]
        if not args.skip_pandas:
            contenders.append("pandas")
        if not _has_msgspec():
            print("ours-msgspec: skipped (msgspec not installed)")
            contenders.remove("ours-msgspec")
        results: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):  # interleaved, so a busy moment hurts every contender
            for which in contenders:
                r = measure(which, path)
                best = results.setdefault(which, r)
                for key in ("cpu_seconds", "seconds", "peak_rss_mb"):  # the least of each
                    best[key] = min(best[key], r[key])
        mib = size / 2**20
        print(f"{'':12s} {'MB/s CPU':>9s} {'MB/s wall':>10s} {'CPU s':>7s} {'wall s':>7s} "
              f"{'peak RSS':>9s}")
        for which, r in results.items():
            print(f"{which:12s} {mib / r['cpu_seconds']:9.1f} {mib / r['seconds']:10.1f} "
                  f"{r['cpu_seconds']:7.2f} {r['seconds']:7.2f} "
                  f"{r['peak_rss_mb']:6.1f} MB  examples={r['examples']:,} "
                  f"errors={r['errors']}")
        # Both ratios: on a shared machine wall time also measures the neighbours.
        ours_key = "ours-msgspec" if "ours-msgspec" in results else "ours-json"
        for mine in dict.fromkeys([ours_key, "ours-json"]):
            for other in ("plain", "pandas"):
                if mine in results and other in results:
                    cpu = results[other]["cpu_seconds"] / results[mine]["cpu_seconds"]
                    wall = results[other]["seconds"] / results[mine]["seconds"]
                    print(f"ratio {mine} vs {other}: {cpu:.2f}x CPU time ({wall:.2f}x wall)")
        load_end = os.getloadavg()
        print(f"machine: {os.cpu_count()} CPUs; load average (1/5/15 min) at start "
              f"{'/'.join(f'{x:.1f}' for x in load_start)}, at end "
              f"{'/'.join(f'{x:.1f}' for x in load_end)}")
    print(import_check())


def _has_msgspec() -> bool:
    try:
        import msgspec  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()

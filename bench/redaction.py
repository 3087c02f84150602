"""Cost of one redaction call on the texts telemetry passes through it (the hot path of every span
attribute and log field): median and range of per-call times over interleaved rounds.

    python bench/redaction.py            # the default redactor, with the known secrets of this process
    python bench/redaction.py --secrets 20   # plus 20 registered secret values

Texts: a short clean field (a model name), a 1 KB clean text, a 1 KB text holding an e-mail address,
a 100 KB clean text, and a structlog event dict of a tool.call line through ``redact_event_dict``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import timeit

from looplet.telemetry.redact import Redactor, add_secret, redact_event_dict, secret_env_names


def texts() -> dict[str, str]:
    rnd = random.Random(1)
    words = [
        "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(2, 9))) for _ in range(4000)
    ]
    kb = " ".join(words)[:1024]
    return {
        "short field": "gpt-4o-mini-2024-07-18",
        "1 KB clean": kb,
        "1 KB with e-mail": kb[:500] + " write to jane.doe@example.com " + kb[530:],
        "100 KB clean": (" ".join(words) * 4)[:100_000],
    }


def event() -> dict[str, object]:
    return {
        "event": "tool.call",
        "run_id": "ab" * 16,
        "agent": "looplet",
        "step": 3,
        "tool": "search",
        "duration_ms": 1.234,
        "ok": True,
        "trace_id": "cd" * 16,
        "span_id": "ef" * 8,
        "level": "info",
        "timestamp": "2026-12-04T16:00:00.000000Z",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secrets", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    rnd = random.Random(2)
    for _ in range(a.secrets):
        add_secret("".join(rnd.choice(string.ascii_letters + string.digits) for _ in range(32)))
    r = Redactor()
    cases = {name: (lambda t=t: r(t)) for name, t in texts().items()}
    cases["log event dict"] = lambda: redact_event_dict(None, "info", event())
    results: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(a.rounds):
        for name, fn in cases.items():
            n = 200 if "100 KB" in name else 20_000
            results[name].append(timeit.timeit(fn, number=n) / n * 1e6)
    print(f"secret values: {a.secrets} registered, plus the environment's {len(secret_env_names())}")
    for name, xs in results.items():
        print(f"{name:18s} median {statistics.median(xs):9.2f} us  range {min(xs):.2f}-{max(xs):.2f}")


if __name__ == "__main__":
    main()

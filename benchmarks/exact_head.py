"""How long does the exact language-model head take? Run by hand, not a test.

    python benchmarks/exact_head.py [--rows 256] [--classes 32000] [--d 512] [--threads 2]
                                    [--dtypes float16 bfloat16 float32] [--rounds 2]

Draws the `head` family's input (as the head runner does, seed 0, with a bias), rounds it to each
dtype and times, with BLAS limited to --threads: the exact logits once, then the loss and the
gradients of the mean (upstream 1/rows) from those logits, for the dtype's own output precision,
as the head runner asks for them. Prints wall seconds per part and their sum, the reference's cost
for one dtype, and the CPU seconds of all threads (on a shared machine, wall time above CPU time
/ threads is time spent waiting for cores), for each of --rounds rounds over the dtypes: the first
round of a process pays for fresh memory (page faults on about a gigabyte of temporaries), later
ones do not.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from harness.dtypes import DTYPES, round_to
from harness.exact.head import exact_head_gradients, exact_head_loss, exact_logits
from harness.sweep.head_inputs import draw_head


def timed(function, *args, **kwargs):
    """(result, wall seconds) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def cpu_seconds(function, *args) -> tuple[dict, float]:
    """function(*args) and the process's CPU seconds (all threads) while it ran."""
    start = time.process_time()
    result = function(*args)
    return result, time.process_time() - start


def time_reference(draw, dtype: str) -> dict[str, float]:
    """Wall seconds of the exact logits, loss and gradients of one rounded input."""
    h, W, b = (round_to(a, dtype).astype(np.float64) for a in (draw.hidden, draw.weight, draw.bias))
    precision = DTYPES[dtype].precision
    upstream = np.full(len(draw.labels), 1.0 / len(draw.labels))
    logits, logits_s = timed(exact_logits, h, W, b)
    _, loss_s = timed(exact_head_loss, h, W, b, draw.labels, precision, logits=logits)
    _, grads_s = timed(exact_head_gradients, h, W, b, draw.labels, upstream, precision, logits=logits)
    return {"logits_s": logits_s, "loss_s": loss_s, "gradients_s": grads_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16", "float32"], choices=sorted(DTYPES))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    draw = draw_head(args.rows, args.classes, args.d, True, 0)
    print(f"exact head {args.rows} x {args.classes} x {args.d}, BLAS threads {args.threads}")
    with threadpool_limits(limits=args.threads):
        for round_number in range(1, args.rounds + 1):
            for dtype in args.dtypes:
                parts, cpu_s = cpu_seconds(time_reference, draw, dtype)
                total = sum(parts.values())
                figures = "  ".join(f"{name} {seconds:5.2f}" for name, seconds in parts.items())
                line = f"round {round_number} {dtype:>9}: {figures}  total {total:5.2f} s (cpu {cpu_s:5.2f} s)"
                print(line, flush=True)


if __name__ == "__main__":
    main()

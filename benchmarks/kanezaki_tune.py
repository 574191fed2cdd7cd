"""Grid search of the ``fast`` Kanezaki preset against tuned felzenszwalb on BSDS500 *train* images.

Never touches val: both the baseline and ``fast`` are tuned on the first ``--images`` train images (sorted
order). Steps:

1. felzenszwalb is tuned over ``FZ_GRID`` (the same grid as ``kanezaki_bsds.py --tune``), objective mean
   covering, and its train scores become the reference.
2. Every point of the ``--grid`` product (overrides of the ``fast`` preset, on top of ``--base``) is run on
   the same images: mean covering / PRI / VoI / best-match mIoU, segments, wall and CPU seconds per image.
3. The table is sorted by the *margin*: the smallest relative improvement over tuned felzenszwalb across
   the four measures (``cov/cov_fz - 1``, ``pri/pri_fz - 1``, ``1 - voi/voi_fz``, ``miou/miou_fz - 1``).
   A positive margin beats felzenszwalb on every measure.

One spawned worker per run (``--processes``, default 1), one torch thread. Finished grid points are saved
to ``--cache`` (JSON, keyed by image count and overrides) as soon as they complete and are reused by
later runs, so a search can be refined in stages without recomputing.

Run (the stages used for the shipped preset are listed in docs/kanezaki.md):
    python benchmarks/kanezaki_tune.py --images 24 --grid min_labels=3|6|10 --grid fz_scale=100|200
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.kanezaki_bsds import (  # noqa: E402  (needs the repository on sys.path first)
    FZ_GRID,
    default_data,
    run_pool,
    split_pairs,
    summarise,
    tune,
)

MEASURES = ("covering", "pri", "voi", "best_miou")


def parse_assignment(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1|V2|...`` -> (KEY, [values]); each value is read as YAML (numbers, lists, booleans)."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise argparse.ArgumentTypeError(f"expected KEY=V1|V2|..., got {text!r}")
    return key.strip(), [yaml.safe_load(v) for v in values.split("|")]


def margin(row: dict[str, float], ref: dict[str, float]) -> float:
    """Smallest relative improvement of ``row`` over ``ref`` across the four BSDS measures (VoI: lower is
    better)."""
    gains = [row[m] / ref[m] - 1.0 for m in ("covering", "pri", "best_miou")]
    gains.append(1.0 - row["voi"] / ref["voi"])
    return float(min(gains))


def fmt(row: dict[str, Any], ref: dict[str, float] | None) -> str:
    text = (
        f"cov {row['covering']:.3f} pri {row['pri']:.3f} voi {row['voi']:.3f} miou {row['best_miou']:.3f} "
        f"seg {row['segments']:.1f} wall {row['wall']:.2f} cpu {row['cpu']:.2f}"
    )
    return text + (f" margin {margin(row, ref):+.3f}" if ref is not None else "")


def main(argv: list[str] | None = None) -> int:
    """Tune felzenszwalb, run the grid of ``fast`` overrides, print the table sorted by margin."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="BSDS500 folder")
    parser.add_argument("--images", type=int, default=24, help="first N train images (default 24)")
    parser.add_argument("--grid", type=parse_assignment, action="append", default=[], help="KEY=V1|V2|...")
    parser.add_argument("--base", type=parse_assignment, action="append", default=[], help="KEY=V fixed")
    parser.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "kanezaki_tune.json")
    args = parser.parse_args(argv)

    pairs = split_pairs(args.data, "train", args.images)
    cache: dict[str, Any] = json.loads(args.cache.read_text()) if args.cache.is_file() else {}

    def save() -> None:
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(args.cache)

    fz_key = f"{len(pairs)} felzenszwalb {json.dumps(FZ_GRID, sort_keys=True)}"
    if fz_key not in cache:
        params = {"sigma": 0.8, **tune("felzenszwalb", FZ_GRID, pairs, args.processes)}
        results, wall = run_pool([("felzenszwalb", params, i, g, False) for i, g in pairs], args.processes)
        cache[fz_key] = {"params": params, "row": summarise(results, wall)}
        save()
    ref = cache[fz_key]["row"]
    print(f"tuned felzenszwalb {cache[fz_key]['params']}: {fmt(ref, None)}", flush=True)

    base = {key: values[0] for key, values in args.base}
    names = [key for key, _ in args.grid]
    points = [
        {**base, **dict(zip(names, values, strict=True))}
        for values in itertools.product(*(v for _, v in args.grid))
    ]
    keys = [f"{len(pairs)} fast {json.dumps(p, sort_keys=True)}" for p in points]
    todo = [(key, p) for key, p in zip(keys, points, strict=True) if key not in cache]
    pending: list[dict[str, Any]] = []

    def collect(result: dict[str, Any]) -> None:
        pending.append(result)
        if len(pending) == len(pairs):
            key, point = todo[0]
            row = summarise(pending, float(sum(r["wall"] for r in pending)))
            row["per_image"] = [{k: v for k, v in r.items() if k in (*MEASURES, "segments")} for r in pending]
            cache[key] = {"params": point, "row": row}
            save()
            print(f"{json.dumps(point, sort_keys=True)}: {fmt(row, ref)}", flush=True)
            pending.clear()
            todo.pop(0)

    tasks = [("fast", p, i, g, False) for _, p in todo for i, g in pairs]
    if tasks:
        run_pool(tasks, args.processes, collect)

    print(f"\n{len(pairs)} train images; reference felzenszwalb {cache[fz_key]['params']}: {fmt(ref, None)}")
    ranked = sorted(zip(keys, points, strict=True), key=lambda kp: -margin(cache[kp[0]]["row"], ref))
    for key, point in ranked:
        print(f"{fmt(cache[key]['row'], ref)}  {json.dumps(point, sort_keys=True)}")
    print("(margin: smallest relative gain over felzenszwalb across the four measures; > 0 beats it on all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

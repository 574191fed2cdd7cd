"""Kanezaki presets vs scikit-image's felzenszwalb and SLIC on BSDS500 val.

For each method: mean covering / PRI / VoI / best-match mIoU over the images (segzoo.metrics.bsds_scores,
averaged over each image's human annotations), mean number of segments, wall and CPU seconds per image and
peak memory. Images are processed by ``--processes`` worker processes (spawned fresh for every method, one
torch thread each); per-image seconds are measured inside the worker around the segmentation call only.

Peak memory: the maximum over the method's workers of ``ru_maxrss`` (peak resident set of the process).
Each method gets new workers, so the number belongs to that method; it includes the interpreter, torch and
scikit-image (the ``baseline`` column: ru_maxrss of a worker right after its imports), so the method's own
extra memory is roughly peak - baseline.

Baselines: felzenszwalb and SLIC run with settings tuned on BSDS500 *train* images (objective mean
covering; ``FZ_DEFAULT`` / ``SLIC_DEFAULT`` below: felzenszwalb from ``benchmarks/kanezaki_tune.py``, the
same optimum on the first 20 and on all 200 train images, SLIC from ``--tune slic`` on the first 20).
``--tune [felzenszwalb] [slic]`` repeats that grid search on the first ``--tune-subset`` train images
instead.

The released presets (icassp18, tip20) allow 1000 updates at full resolution with 100 channels, minutes per
image on a CPU: they run on the first ``--slow-subset`` images only, and ``--max-iter-slow`` caps their
updates (a deviation from the released settings, reported in the table). ``--slow-cache FILE`` saves each
of their per-image results as soon as it is done and reuses it later (``--slow-from-cache`` runs nothing
and reports the cached images), so a long run can go in the background and the table be made afterwards;
two runs can share the file (results are merged under a lock), the second with ``--slow-reverse``.
The cache is keyed by preset name, overrides and image path: delete it after editing a preset file.
When they cover fewer images than ``--subset``, a second table compares every method on their images.
The last table gives, per method, the per-image differences of ``fast`` minus that method on their common
images: mean, standard error and the number of images where ``fast`` is better.

Run:  python benchmarks/kanezaki_bsds.py --subset 10 --presets fast icassp18 --slow-subset 10 \
          --slow-cache runs/kanezaki_slow_cache.json          # the slow preset to its own stopping rule
      python benchmarks/kanezaki_bsds.py --profile      # where fast's time goes on one 481x321 image
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import multiprocessing as mp
import os
import platform
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SLOW_PRESETS = ("icassp18", "tip20")
# min_size reaches 1600 because the earlier, narrower grid (up to 400) had its optimum on the edge.
FZ_GRID = {"scale": [100, 200, 300, 500, 800, 1200], "min_size": [50, 100, 200, 400, 800, 1600]}
SLIC_GRID = {"n_segments": [10, 20, 40, 80, 160], "compactness": [5.0, 10.0, 20.0, 40.0]}
# Used without --tune. felzenszwalb: the FZ_GRID optimum on the first 20 train images (kanezaki_tune.py,
# 2026-11-23; covering 0.543, scale 500 / min_size 400 scored the same to three decimals).
FZ_DEFAULT = {"scale": 500, "sigma": 0.8, "min_size": 800}
# SLIC: the SLIC_GRID optimum on the same images (--tune slic; covering 0.357), a corner of the grid: SLIC
# covers BSDS best with very few segments, and fewer than 10 is hardly a segmentation.
SLIC_DEFAULT = {"n_segments": 10, "compactness": 5.0}


def default_data() -> Path:
    """``$SEGZOO_DATA/bsds500``, else ``../shared/data/bsds500`` next to the repository."""
    if "SEGZOO_DATA" in os.environ:
        return Path(os.environ["SEGZOO_DATA"]) / "bsds500"
    return REPO.parent / "shared" / "data" / "bsds500"


def split_pairs(root: Path, split: str, n: int) -> list[tuple[str, str]]:
    """The first ``n`` (image, ground truth) paths of a BSDS500 split, in the dataset's sorted order."""
    from segzoo.data.datasets.bsds import BSDS500

    samples = BSDS500(root, split=split).samples[:n]
    return [(str(image), str(gt)) for image, gt in samples]


# -- worker side -------------------------------------------------------------------------------------------


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    import segzoo.methods.kanezaki  # noqa: F401  (imports counted in the baseline, not the method)
    import segzoo.metrics.bsds  # noqa: F401

    global _BASELINE_KB
    _BASELINE_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


_BASELINE_KB = 0


def run_method(method: str, params: dict[str, Any], image_path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels of one image (``method`` is ``felzenszwalb``, ``slic`` or a Kanezaki preset name) and, for a
    preset, how the fit ended (updates made, whether ``min_labels`` stopped it)."""
    from segzoo.data.io import read_image_array
    from segzoo.ops.superpixels import felzenszwalb, slic

    image = read_image_array(image_path)
    if method == "felzenszwalb":
        return felzenszwalb(image, params["scale"], params.get("sigma", 0.8), params["min_size"]), {}
    if method == "slic":
        return slic(image, params["n_segments"], params["compactness"]), {}
    from segzoo.methods.kanezaki import segment

    labels, info = segment(image, method, seed=0, return_info=True, **params)
    return labels, {"iterations": info.iterations, "stopped_early": info.stopped_early}


def evaluate_one(task: tuple[str, dict[str, Any], str, str, bool]) -> dict[str, Any]:
    """Segment and score one image in a worker: scores, segment count, wall/CPU seconds, ru_maxrss."""
    from segzoo.data.datasets.bsds import read_bsds_groundtruth
    from segzoo.metrics.bsds import bsds_scores, num_segments

    method, params, image_path, gt_path, keep_labels = task
    wall, cpu = time.perf_counter(), time.process_time()
    labels, fit = run_method(method, params, image_path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = bsds_scores(labels, read_bsds_groundtruth(gt_path), source=image_path)
    result.update(fit)
    result.update(
        segments=num_segments(labels),
        wall=wall,
        cpu=cpu,
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        baseline_kb=_BASELINE_KB,
        image=image_path,
    )
    if keep_labels:
        result["labels"] = labels.astype(np.uint16)
    return result


# -- driver side -------------------------------------------------------------------------------------------


def run_pool(
    tasks: list[tuple], processes: int, on_result: Callable[[dict[str, Any]], None] | None = None
) -> tuple[list[dict[str, Any]], float]:
    """Results of ``evaluate_one`` over ``tasks`` (in order) from fresh spawned workers, and the wall time
    of the whole map (excluding worker start-up). ``on_result`` sees each result as soon as it arrives (in
    task order), e.g. to save it before a long run ends."""
    ctx = mp.get_context("spawn")
    # SIGTERM would end this process without leaving the `with` block, orphaning busy workers for up to
    # a slow image's half hour: raise instead, so the pool terminates them.
    signal.signal(signal.SIGTERM, _raise_exit)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with ctx.Pool(processes, initializer=_init_worker) as pool:
            pool.map(_noop, range(processes))  # wait for start-up so it is not timed
            start = time.perf_counter()
            results = []
            for result in pool.imap(evaluate_one, tasks, chunksize=1):
                results.append(result)
                if on_result is not None:
                    on_result(result)
            return results, time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _noop(_: int) -> None:
    time.sleep(0.2)


def cache_key(method: str, params: dict[str, Any]) -> str:
    """The per-image cache's key of a method run with ``params`` (the images are the keys inside)."""
    return f"{method} {json.dumps(params, sort_keys=True)}"


@contextmanager
def _locked(cache_path: Path) -> Iterator[None]:
    """An exclusive lock on ``<cache>.lock`` (POSIX advisory), held while the cache is read or rewritten."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_path.with_name(cache_path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_cache(cache_path: Path) -> dict[str, Any]:
    return json.loads(cache_path.read_text()) if cache_path.is_file() else {}


def run_cached(
    method: str,
    params: dict[str, Any],
    pairs: list[tuple[str, str]],
    processes: int,
    cache_path: Path,
    cached_only: bool,
    reverse: bool = False,
) -> list[dict[str, Any]]:
    """Per-image results of a slow preset on ``pairs``, reusing the JSON cache at ``cache_path``.

    Images missing from the cache are run (unless ``cached_only``; last first if ``reverse``) and each
    result is merged into the cache file as soon as it arrives, so an interrupted run keeps the images it
    finished and two runs can share the file (one with ``reverse``, so they meet in the middle). Returns
    the results of the ``pairs`` images that are in the cache, in order (fewer than ``pairs`` if some are
    missing)."""
    key = cache_key(method, params)
    with _locked(cache_path):
        entry = _read_cache(cache_path).get(key, {})
    todo = [(image, gt) for image, gt in pairs if image not in entry]
    if reverse:
        todo.reverse()

    def save(result: dict[str, Any]) -> None:
        # Re-read under the lock and merge, so several runs can share one cache file.
        with _locked(cache_path):
            cache = _read_cache(cache_path)
            cache.setdefault(key, {})[result["image"]] = result
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(cache_path)
        entry[result["image"]] = result
        print(
            f"  {method} {Path(result['image']).name}: covering {result['covering']:.3f}, "
            f"{result.get('iterations')} updates, {result['wall']:.0f} s (cached)",
            flush=True,
        )

    if todo and not cached_only:
        run_pool([(method, params, image, gt, False) for image, gt in todo], processes, save)
    return [entry[image] for image, _ in pairs if image in entry]


def summarise(results: list[dict[str, Any]], wall_total: float) -> dict[str, Any]:
    """Means over images of every score, segments and seconds; peak and baseline memory in MB."""
    keys = ("covering", "pri", "voi", "best_miou", "segments", "wall", "cpu")
    row = {k: float(np.mean([r[k] for r in results])) for k in keys}
    row["images"] = len(results)
    row["wall_total"] = wall_total
    row["peak_mb"] = max(r["maxrss_kb"] for r in results) / 1024
    row["baseline_mb"] = max(r["baseline_kb"] for r in results) / 1024
    if all("iterations" in r for r in results):
        row["iterations"] = float(np.mean([r["iterations"] for r in results]))
        row["stopped_early"] = sum(bool(r["stopped_early"]) for r in results)
    return row


def tune(method: str, grid: dict[str, list], pairs: list[tuple[str, str]], processes: int) -> dict[str, Any]:
    """The grid point with the best mean covering on ``pairs`` (ties: first in grid order)."""
    names = list(grid)
    points = [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]
    tasks = [(method, p, image, gt, False) for p in points for image, gt in pairs]
    results, _ = run_pool(tasks, processes)
    best, best_score = points[0], -1.0
    for i, point in enumerate(points):
        score = float(np.mean([r["covering"] for r in results[i * len(pairs) : (i + 1) * len(pairs)]]))
        print(f"  tune {method} {point}: covering {score:.3f}", flush=True)
        if score > best_score:
            best, best_score = point, score
    print(f"tuned {method}: {best} (train covering {best_score:.3f})", flush=True)
    return best


def print_table(rows: dict[str, dict[str, Any]]) -> str:
    """The results table as Markdown (also printed)."""
    head = "| method | images | covering | PRI | VoI | best mIoU | segments | s/image (wall) | s/image (CPU) "
    head += "| peak MB (baseline) | updates (stopped by min_labels) |"
    lines = [head, "|" + "---|" * 11]
    for name, r in rows.items():
        updates = f"{r['iterations']:.0f} ({r['stopped_early']}/{r['images']})" if "iterations" in r else "-"
        lines.append(
            f"| {name} | {r['images']} | {r['covering']:.3f} | {r['pri']:.3f} | {r['voi']:.3f} | "
            f"{r['best_miou']:.3f} | {r['segments']:.1f} | {r['wall']:.2f} | {r['cpu']:.2f} | "
            f"{r['peak_mb']:.0f} ({r['baseline_mb']:.0f}) | {updates} |"
        )
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def print_paired(rows: dict[str, dict[str, Any]], reference: str) -> str:
    """Per-image differences of ``reference`` minus every other method on their common images: mean,
    standard error and how many images ``reference`` is better on (lower VoI is better)."""
    ref = {r["image"]: r for r in rows[reference]["per_image"]}
    lines = [
        f"{reference} minus each method, per image: mean difference (standard error), images where "
        f"{reference} is better",
        "| method | images | covering | PRI | VoI | best mIoU |",
        "|" + "---|" * 6,
    ]
    for name, row in rows.items():
        common = [r for r in row["per_image"] if r["image"] in ref]
        if name == reference or len(common) < 2:
            continue
        cells = []
        for key in ("covering", "pri", "voi", "best_miou"):
            diff = np.array([ref[r["image"]][key] - r[key] for r in common])
            better = int((diff < 0).sum() if key == "voi" else (diff > 0).sum())
            se = diff.std(ddof=1) / np.sqrt(len(diff))
            cells.append(f"{diff.mean():+.3f} ({se:.3f}), {better}")
        lines.append(f"| {name} | {len(common)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def make_figure(path: Path, images: list[str], fast: list[np.ndarray], fz: list[np.ndarray]) -> None:
    """Rows of image | fast (mean colour) | felzenszwalb (mean colour), half size, palette PNG."""
    from PIL import Image

    from segzoo import viz
    from segzoo.data.io import read_image_array

    def half(array: np.ndarray) -> np.ndarray:
        img = Image.fromarray(array)
        return np.array(img.resize((img.width // 2, img.height // 2), Image.Resampling.BILINEAR))

    rows = []
    for image_path, a, b in zip(images, fast, fz, strict=True):
        rgb = read_image_array(image_path)
        rows.append([half(rgb), half(viz.mean_color(rgb, a)), half(viz.mean_color(rgb, b))])
    picture = Image.fromarray(viz.grid(rows)).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    viz.atomic_save(picture, path, format="PNG", optimize=True)
    print(f"figure written to {path} ({path.stat().st_size / 1024:.0f} KB)", flush=True)


def profile(image_path: str, iterations: int) -> dict[str, float]:
    """Seconds the ``fast`` preset (at most ``iterations`` updates, stopping rule on) spends in
    pre-segmentation, forward, targets (argmax + superpixel vote), backward + optimiser step and final
    prediction on one image, and the net's FLOPs per update (2 x multiply-adds forward; backward taken as
    twice the forward)."""
    import torch

    from segzoo.data.io import read_image_array
    from segzoo.methods import kanezaki as K

    torch.set_num_threads(1)
    config = K.resolve_config("fast", max_iter=iterations)
    rgb = read_image_array(image_path)
    output_size, fit_size = K.working_sizes(rgb.shape[0], rgb.shape[1], config)
    dev = torch.device("cpu")
    times = dict.fromkeys(("presegmentation", "forward", "targets", "backward", "predict"), 0.0)
    start = time.perf_counter()
    problem = K._Problem(rgb, config, dev, output_size, fit_size)
    times["presegmentation"] = time.perf_counter() - start
    net = K._new_net(config, 0, dev)
    optimizer = K._make_optimizer(net, config)
    done = 0
    for _ in range(iterations):
        optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        logits = net(problem.x)
        t1 = time.perf_counter()
        target, n_labels = K._targets(logits, problem, config.n_channels)
        t2 = time.perf_counter()
        K._loss(logits, target, problem, config).backward()
        optimizer.step()
        t3 = time.perf_counter()
        times["forward"] += t1 - t0
        times["targets"] += t2 - t1
        times["backward"] += t3 - t2
        done += 1
        if n_labels <= config.min_labels:  # the preset's stopping rule, as in segment()
            break
    t0 = time.perf_counter()
    K._finish(K._predict(net, problem, config), rgb, config, ())
    times["predict"] = time.perf_counter() - t0
    macs = 0
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs += k * module.in_channels * module.out_channels * fit_size[0] * fit_size[1]
    times["iterations"] = done
    times["fit_pixels"] = fit_size[0] * fit_size[1]
    times["forward_gflop"] = 2 * macs / 1e9
    times["update_gflop"] = 3 * 2 * macs / 1e9
    times["total"] = sum(times[k] for k in ("presegmentation", "forward", "targets", "backward", "predict"))
    return times


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="BSDS500 folder")
    parser.add_argument("--subset", type=int, default=10, help="first N val images (default 10)")
    parser.add_argument("--presets", nargs="*", default=["fast", "tip20", "icassp18"])
    parser.add_argument("--slow-subset", type=int, default=2, help="images for icassp18/tip20 (default 2)")
    parser.add_argument(
        "--max-iter-slow",
        type=int,
        default=None,
        help="cap icassp18/tip20 updates (deviation; default: none)",
    )
    parser.add_argument(
        "--slow-cache",
        type=Path,
        default=None,
        help="JSON file of per-image icassp18/tip20 results: finished images are saved there and reused",
    )
    parser.add_argument(
        "--slow-reverse",
        action="store_true",
        help="run the missing slow-preset images last first (for a second run sharing --slow-cache)",
    )
    parser.add_argument(
        "--slow-from-cache",
        action="store_true",
        help="report icassp18/tip20 from --slow-cache only (run nothing; the images found are counted)",
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip felzenszwalb and SLIC")
    parser.add_argument(
        "--tune",
        nargs="*",
        choices=["felzenszwalb", "slic"],
        default=None,
        help="grid-search these baselines (default both) on train images instead of the tuned defaults",
    )
    parser.add_argument("--tune-subset", type=int, default=20, help="train images for --tune (default 20)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    parser.add_argument("--figure", type=Path, default=None, help="save image | fast | felzenszwalb here")
    parser.add_argument("--figure-images", type=int, default=3, help="rows of the figure (default 3)")
    parser.add_argument("--profile", action="store_true", help="only time fast's stages on one val image")
    parser.add_argument(
        "--profile-iter", type=int, default=None, help="updates timed by --profile (default: fast's max_iter)"
    )
    args = parser.parse_args(argv)

    if args.profile:
        image = split_pairs(args.data, "val", 1)[0][0]
        from segzoo.methods.kanezaki import resolve_config

        result = profile(image, args.profile_iter or resolve_config("fast").max_iter)
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps({"profile": result, "image": image}, indent=2))
        return 0

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load = os.getloadavg()
    print(f"{started}, {platform.node()}, {os.cpu_count()} CPUs, load {load[0]:.1f}", flush=True)
    fz_params, slic_params = dict(FZ_DEFAULT), dict(SLIC_DEFAULT)
    if args.tune is not None:
        train = split_pairs(args.data, "train", args.tune_subset)
        tuned = args.tune or ["felzenszwalb", "slic"]
        if "felzenszwalb" in tuned:
            fz_params.update(tune("felzenszwalb", FZ_GRID, train, args.processes))
        if "slic" in tuned:
            slic_params.update(tune("slic", SLIC_GRID, train, args.processes))

    val = split_pairs(args.data, "val", args.subset)
    methods: list[tuple[str, str, dict[str, Any], int]] = []
    for preset in args.presets:
        slow = preset in SLOW_PRESETS
        params = {"max_iter": args.max_iter_slow} if slow and args.max_iter_slow else {}
        label = preset + (f" (max_iter {args.max_iter_slow})" if params else "")
        methods.append((label, preset, params, min(args.slow_subset, len(val)) if slow else len(val)))
    if not args.no_baselines:
        methods.append((f"felzenszwalb {fz_params}", "felzenszwalb", fz_params, len(val)))
        methods.append((f"slic {slic_params}", "slic", slic_params, len(val)))
    if args.slow_from_cache and args.slow_cache is None:
        parser.error("--slow-from-cache needs --slow-cache FILE")

    rows: dict[str, dict[str, Any]] = {}
    kept: dict[str, list[np.ndarray]] = {}
    for label, method, params, n in methods:
        keep = method in ("fast", "felzenszwalb") and args.figure is not None
        tasks = [
            (method, params, image, gt, keep and i < args.figure_images)
            for i, (image, gt) in enumerate(val[:n])
        ]
        print(f"running {label} on {n} images ...", flush=True)
        if method in SLOW_PRESETS and args.slow_cache is not None:
            results = run_cached(
                method,
                params,
                val[:n],
                args.processes,
                args.slow_cache,
                args.slow_from_cache,
                args.slow_reverse,
            )
            if not results:
                print(f"  {label}: no cached results in {args.slow_cache}, left out", flush=True)
                continue
            wall_total = float(sum(r["wall"] for r in results))
        else:
            results, wall_total = run_pool(tasks, args.processes)
        rows[label] = summarise(results, wall_total)
        rows[label]["per_image"] = [{k: v for k, v in r.items() if k != "labels"} for r in results]
        kept[method] = [r["labels"] for r in results if "labels" in r]
        print(
            f"  {label}: covering {rows[label]['covering']:.3f}, {rows[label]['wall']:.2f} s/image, "
            f"{wall_total:.1f} s in all",
            flush=True,
        )
    print()
    table = print_table(rows)
    # The slow presets may cover fewer images than the rest: compare every method on those images too.
    for label, row in list(rows.items()):
        if row["images"] < len(val) and label.split()[0] in SLOW_PRESETS:
            images = [r["image"] for r in row["per_image"]]
            print(f"\nEvery method on the images of {label} ({len(images)}):")
            same = {}
            for other, other_row in rows.items():
                picked = [r for r in other_row["per_image"] if r["image"] in images]
                if len(picked) == len(images):
                    same[other] = summarise(picked, float(sum(r["wall"] for r in picked)))
            table += f"\n\nEvery method on the images of {label} ({len(images)}):\n" + print_table(same)
    if "fast" in rows and len(rows) > 1:
        print()
        table += "\n\n" + print_paired(rows, "fast")
    if args.figure is not None and kept.get("fast") and kept.get("felzenszwalb"):
        images = [image for image, _ in val[: args.figure_images]]
        make_figure(args.figure, images, kept["fast"], kept["felzenszwalb"])
    if args.json:
        payload = {
            "started": started,
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "load_at_start": load,
            "args": {k: str(v) for k, v in vars(args).items()},
            "felzenszwalb": fz_params,
            "slic": slic_params,
            "results": rows,
            "table": table,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

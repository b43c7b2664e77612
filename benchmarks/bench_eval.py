"""Rank evaluation (CMC, mAP, mINP): reidkit.evaluate_rank against per-query numpy loops.

Shapes:

* Market-1501: 3,368 queries x 19,732 gallery images, 751 identities, 6 cameras.
* MSMT17 (``--msmt``): 11,659 x 82,161, 3,060 identities, 15 cameras; reidkit only, with the
  process peak RSS (the baselines' full int64 ``argsort`` alone needs 7.7 GB there).

Distances are random; identities and cameras are drawn uniformly. The Market matrix is float64
so that no two distances of a row tie and every implementation must return the very same
numbers, which is checked (``max_abs_diff`` rows); reidkit is also timed on its float32 copy.

Backends:

* ``reidkit``: :func:`reidkit.evaluate_rank` (chunked, no full sort), with one torch thread and
  with torch's default thread count (its passes are memory-bound: on a shared, loaded 2-core
  machine, two threads waiting on each other are slower than one).
* ``numpy-eval_func``: the per-query implementation found in torchreid (``eval_market1501``,
  python fallback), TransReID and CLIP-ReID (``eval_func``): a full ``argsort`` of the matrix,
  then one Python iteration per query, with precision computed by a list comprehension.
* ``numpy-loop-vectorised``: the same loop with the precision vectorised (``np.arange``), the
  fastest form of the per-query approach.

Run: ``python benchmarks/bench_eval.py`` (``--baseline-queries N`` times the baselines on the
first N queries only and scales by ``Q / N``; ``--msmt`` adds the MSMT17-size run,
``--msmt-queries N`` shrinks it to N queries where memory is short).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch
from harness import (
    RESULTS_DIR,
    BenchmarkRow,
    describe_machine,
    plot_metric,
    print_table,
    save_results,
)

from reidkit import evaluate_rank

MARKET = {"num_q": 3368, "num_g": 19732, "num_ids": 751, "num_cams": 6}
MSMT = {"num_q": 11659, "num_g": 82161, "num_ids": 3060, "num_cams": 15}


def eval_func(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The common per-query implementation (torchreid / TransReID / CLIP-ReID), plus mINP."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    num_valid_q = 0.0
    for q_idx in range(num_q):
        q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)
        raw_cmc = matches[q_idx][keep]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        max_pos_idx = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
        tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    all_cmc = np.asarray(all_cmc).astype(np.float64).sum(0) / num_valid_q
    return all_cmc, float(np.mean(all_ap)), float(np.mean(all_inp))


def eval_loop_vectorised(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The per-query loop with its inner work vectorised; same outputs as :func:`eval_func`."""
    num_g = distmat.shape[1]
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(distmat.shape[0]):
        order = indices[q_idx]
        same = g_pids[order] == q_pids[q_idx]
        keep = ~(same & (g_camids[order] == q_camids[q_idx]))
        hits = np.flatnonzero(same[keep])
        if hits.size == 0:
            continue
        cmc = np.zeros(max_rank)
        cmc[hits[0] :] = 1
        all_cmc.append(cmc)
        all_ap.append(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))
        all_inp.append(hits.size / (hits[-1] + 1))
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap)), float(np.mean(all_inp))


def random_problem(shape: dict, dtype: torch.dtype, seed: int = 0) -> tuple:
    """Random ``(Q, G)`` distances and uniformly drawn identities and cameras."""
    generator = torch.Generator().manual_seed(seed)
    num_q, num_g = shape["num_q"], shape["num_g"]
    distmat = torch.rand(num_q, num_g, generator=generator, dtype=dtype)
    q_pids = torch.randint(0, shape["num_ids"], (num_q,), generator=generator)
    g_pids = torch.randint(0, shape["num_ids"], (num_g,), generator=generator)
    q_cams = torch.randint(0, shape["num_cams"], (num_q,), generator=generator)
    g_cams = torch.randint(0, shape["num_cams"], (num_g,), generator=generator)
    return distmat, q_pids, g_pids, q_cams, g_cams


def shape_name(shape: dict) -> str:
    return f"{shape['num_q']}x{shape['num_g']}"


def run_market(baseline_queries: int | None, repeats: int) -> list[BenchmarkRow]:
    """Market-size timings. The machine's load may drift, so the fast candidates are timed in
    interleaved rounds (median of ``repeats``); ``numpy-eval_func`` is timed once."""
    shape = shape_name(MARKET)
    problem = random_problem(MARKET, torch.float64)
    problem32 = (problem[0].float(), *problem[1:])
    labels = [t.numpy() for t in problem[1:]]
    num_b = baseline_queries or MARKET["num_q"]
    scale = MARKET["num_q"] / num_b
    distmat = problem[0][:num_b].numpy()
    q_labels = (labels[0][:num_b], labels[1], labels[2][:num_b], labels[3])
    scaled = "" if num_b == MARKET["num_q"] else f", timed on {num_b} queries, scaled to all"
    default_threads = torch.get_num_threads()
    candidates = {}  # (backend, note) -> (threads, call)
    for threads in sorted({1, default_threads}):
        for matrix, dtype in ((problem, "float64"), (problem32, "float32")):
            note = f"{dtype}, {threads} torch thread(s)"
            candidates[("reidkit", note)] = (threads, lambda m=matrix: evaluate_rank(*m))
    candidates[("numpy-loop-vectorised", "float64" + scaled)] = (
        default_threads,
        lambda: eval_loop_vectorised(distmat, *q_labels),
    )
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in candidates}
    for _, call in candidates.values():  # warm-up round
        call()
    for _ in range(repeats):
        for key, (threads, call) in candidates.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            call()
            samples[key].append(time.perf_counter() - start)
    torch.set_num_threads(default_threads)
    seconds = {key: sorted(values)[len(values) // 2] for key, values in samples.items()}
    seconds[("numpy-loop-vectorised", "float64" + scaled)] *= scale
    start = time.perf_counter()
    baseline_outputs = {"numpy-eval_func": eval_func(distmat, *q_labels)}
    seconds[("numpy-eval_func", "float64" + scaled)] = (time.perf_counter() - start) * scale
    baseline_outputs["numpy-loop-vectorised"] = eval_loop_vectorised(distmat, *q_labels)

    rows = [
        BenchmarkRow("evaluate_rank", shape, backend, "cpu", "seconds", value, note)
        for (backend, note), value in seconds.items()
    ]
    best = min(value for (backend, note), value in seconds.items() if backend == "reidkit")
    reference = evaluate_rank(distmat, *q_labels)
    for name, (cmc, mean_ap, minp) in baseline_outputs.items():
        diff = max(
            abs(mean_ap - reference.mAP),
            abs(minp - reference.mINP),
            float(np.abs(cmc - reference.cmc).max()),
        )
        elapsed = next(value for (backend, _), value in seconds.items() if backend == name)
        rows.append(BenchmarkRow("evaluate_rank", shape, name, "cpu", "max_abs_diff", diff))
        rows.append(
            BenchmarkRow(
                "evaluate_rank",
                shape,
                name,
                "cpu",
                "speedup_of_reidkit",
                elapsed / best,
                "baseline time / fastest reidkit time",
            )
        )
    print(f"reidkit: {reference.summary()} over {reference.num_valid_queries} queries")
    return rows


def run_msmt(num_queries: int | None) -> list[BenchmarkRow]:
    size = MSMT | ({"num_q": num_queries} if num_queries else {})
    shape = shape_name(size)
    problem = random_problem(size, torch.float32)
    rss_before = _peak_rss_bytes()  # the process peak so far: the input and its generation
    start = time.perf_counter()
    result = evaluate_rank(*problem)
    seconds = time.perf_counter() - start
    rss_after = _peak_rss_bytes()
    print(f"reidkit MSMT17 size: {result.summary()}")
    matrix = problem[0].numel() * problem[0].element_size()
    return [
        BenchmarkRow("evaluate_rank", shape, "reidkit", "cpu", "seconds", seconds, "float32"),
        BenchmarkRow("evaluate_rank", shape, "reidkit", "cpu", "distmat_GB", matrix / 1e9),
        BenchmarkRow(
            "evaluate_rank",
            shape,
            "reidkit",
            "cpu",
            "peak_rss_GB",
            rss_after / 1e9,
            "whole process, input included",
        ),
        BenchmarkRow(
            "evaluate_rank",
            shape,
            "reidkit",
            "cpu",
            "peak_rss_growth_GB",
            (rss_after - rss_before) / 1e9,
            "peak growth during evaluate_rank",
        ),
    ]


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-queries", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--msmt", action="store_true", help="add the MSMT17-size run")
    parser.add_argument(
        "--msmt-queries",
        type=int,
        default=None,
        help="queries of the MSMT17 run (default 11,659; working memory does not depend on it)",
    )
    args = parser.parse_args()
    print(describe_machine())
    rows = run_market(args.baseline_queries, args.repeats)
    if args.msmt:
        rows += run_msmt(args.msmt_queries)
    print_table(rows)
    command = "python benchmarks/" + " ".join(["bench_eval.py", *sys.argv[1:]])
    save_results("bench_eval", rows, command=command)
    plot_metric(
        rows,
        "seconds",
        RESULTS_DIR / "bench_eval.png",
        title="Rank evaluation, Market-1501 size (CPU)",
    )


if __name__ == "__main__":
    main()

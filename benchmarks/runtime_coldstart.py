"""Runtime cold start and batch-1 latency, against PyTorch eager for the same model.

    python benchmarks/runtime_coldstart.py [--checkpoint PATH] [--artifacts DIR] [--runs 7]

Cold start: a fresh process imports ``runtime``, loads one graph (manifest, sha256, session)
and predicts one PNG file; wall time seen by the parent and peak RSS of the child (targets:
<= 0.5 s, <= 150 MB). Latency: per image at batch 1, onnxruntime vs the checkpoint's model in
PyTorch eager (resolved for the configuration, as exported; best of 1 and all threads), same
input, same process (target: lower). Writes the "runtime" section of BENCHMARKS.md.

Without ``--artifacts`` it copies the checkpoint (default: ``artifacts/task1/anychannel/best.pt``,
else the real-photo benchmark's) to ``artifacts/bench/runtime/anychannel/`` and exports its RGB
graph beside it, so a checkpoint rewritten meanwhile by training cannot mix two models.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import machine, write_section  # noqa: E402
from runtime import ChannelConfig, Classifier  # noqa: E402
from runtime.bench import latency, percentile  # noqa: E402
from runtime.device import available_cores  # noqa: E402

CHECKPOINTS = (ROOT / "artifacts/task1/anychannel/best.pt",
               ROOT / "artifacts/bench/task1-real/8ep-32px/anychannel-seed0/anychannel/best.pt")
OUT = ROOT / "artifacts/bench/runtime"
TARGET_SECONDS, TARGET_MB = 0.5, 150

#: What the fresh process runs; it reports its own phases, the parent measures the whole.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from runtime import Classifier
t1 = time.perf_counter()
clf = Classifier(sys.argv[1], device=sys.argv[3])
top = clf.predict(sys.argv[2], channels=sys.argv[4], top_k=1)[0][0]
t2 = time.perf_counter()
# Peak RSS of this process image. Not getrusage: Linux carries ru_maxrss over exec from the
# forked parent, which here has torch loaded.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"import_s": t1 - t0, "load_predict_s": t2 - t1, "label": top.label, "peak_rss_kb": hwm,
                  "providers": clf.providers, "torch_imported": "torch" in sys.modules}))
"""

#: The floor: the same process importing only the runtime's three dependencies.
FLOOR = """
import json, sys, time
t0 = time.perf_counter()
import numpy, onnxruntime, PIL.Image
t1 = time.perf_counter()
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"import_s": t1 - t0, "load_predict_s": 0.0, "peak_rss_kb": hwm, "providers": [],
                  "torch_imported": "torch" in sys.modules}))
"""


def prepare_artifacts(checkpoint: Path, config: ChannelConfig) -> Path:
    """Snapshot the checkpoint and export its graph for ``config`` (the export needs torch)."""
    from export import export_task

    run = OUT / "anychannel"
    run.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, run / "best.pt.tmp")
    os.replace(run / "best.pt.tmp", run / "best.pt")
    return export_task("task1", config.name, checkpoint=run / "best.pt", out=OUT / "onnx").out_dir


def cold_start(label: str, code: str, argv: list[str], runs: int) -> dict:
    """Wall time, CPU time and peak RSS of ``runs`` fresh processes (one untimed first, to warm the page cache)."""
    walls, cpu, rss, reports = [], [], [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        out, _ = proc.communicate()
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"cold-start child failed ({proc.returncode}); run it by hand to see why")
        if i == 0:
            continue
        walls.append(wall)
        # CPU seconds the child used: what the cold start costs without competition for the cores.
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        reports.append(json.loads(out))
        rss.append(reports[-1]["peak_rss_kb"] / 1024)
    return {"device": label, "runs": runs, "wall_p50_s": percentile(walls, 50), "wall_max_s": max(walls),
            "rss_max_mb": max(rss), "cpu_p50_s": percentile(cpu, 50),
            "import_p50_s": percentile([r["import_s"] for r in reports], 50),
            "load_predict_p50_s": percentile([r["load_predict_s"] for r in reports], 50),
            "providers": reports[0]["providers"], "torch_imported": any(r["torch_imported"] for r in reports)}


def batch1_latency(artifacts: Path, checkpoint: Path, config: ChannelConfig, runs: int) -> dict:
    import torch

    from train.checkpoint import load_checkpoint, model_from_checkpoint

    clf = Classifier(artifacts, device="cpu", preload=True)
    size = clf.spec(config).image_size
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    x, _ = clf.preprocess(image, config)
    ort_stats = latency(lambda: clf.run(x, config), 1, runs, warmup=20)
    end_to_end = latency(lambda: clf.predict(image, config), 1, runs, warmup=20)
    module = model_from_checkpoint(load_checkpoint(checkpoint)).resolve(config).eval()
    eager = {}
    for threads in sorted({1, available_cores()}):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            tx = torch.from_numpy(x)
            eager[threads] = latency(lambda: module(tx), 1, runs, warmup=20)
            diff = float(np.abs(module(tx).numpy() - clf.run(x, config)).max())
    best = min(eager, key=lambda t: eager[t].p50_ms)
    return {"image_size": size, "onnxruntime": ort_stats, "predict_end_to_end": end_to_end,
            "eager": eager, "eager_best_threads": best, "max_abs_logit_diff": diff}


def competing_processes() -> list[str]:
    """Other benchmark or training processes running now (they share the CPU with this one)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if "python" in cmd and any(k in cmd for k in ("benchmarks/", "cli.py train", "pytest")):
            found.append(cmd)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=next((p for p in CHECKPOINTS if p.exists()), None))
    parser.add_argument("--artifacts", type=Path, help="Use these exported graphs (default: export the checkpoint).")
    parser.add_argument("--channels", default="RGB")
    parser.add_argument("--runs", type=int, default=11, help="Fresh processes for the cold start.")
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave BENCHMARKS.md alone.")
    args = parser.parse_args()
    if args.checkpoint is None or not args.checkpoint.exists():
        raise SystemExit(f"no checkpoint: train first (python cli.py train task1) or pass --checkpoint")
    config = ChannelConfig.parse(args.channels)
    competing = competing_processes()
    load_before = os.getloadavg()[0]

    artifacts = args.artifacts or prepare_artifacts(args.checkpoint, config)
    checkpoint = args.checkpoint if args.artifacts else OUT / "anychannel" / "best.pt"
    image = OUT / "coldstart.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(image)

    cold = [cold_start(device, CHILD, [str(artifacts), str(image), device, config.name], args.runs)
            for device in ("cpu", "auto")]
    cold.append(cold_start("floor: `import numpy, onnxruntime, PIL.Image` only", FLOOR, [], args.runs))
    lat = batch1_latency(artifacts, checkpoint, config, args.latency_runs)
    load_after = os.getloadavg()[0]
    print(json.dumps({"cold_start": cold, "latency": {k: (v if not hasattr(v, "to_dict") else v.to_dict())
                                                      for k, v in lat.items() if k != "eager"}}, indent=2))
    body = report(args, config, artifacts, checkpoint, cold, lat, competing, (load_before, load_after))
    print(body)
    if not args.no_write:
        write_section("runtime", body)


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def report(args, config, artifacts, checkpoint, cold, lat, competing, loads) -> str:
    ort_ms, eager = lat["onnxruntime"].p50_ms, lat["eager"][lat["eager_best_threads"]]
    lines = [
        "## Runtime: cold start and batch-1 latency",
        "",
        f"`python benchmarks/runtime_coldstart.py{' --checkpoint ' + _rel(args.checkpoint) if args.checkpoint else ''}`"
        f" ({time.strftime('%Y-%m-%d')}; {machine()}).",
        f"Model: `{_rel(checkpoint)}` (anychannel, a snapshot of the checkpoint), its {config.name} graph, "
        f"{lat['image_size']} px; graphs in `{_rel(artifacts)}`.",
        "",
        f"Cold start: a fresh `python` imports `runtime`, loads the graph (manifest, sha256, session) and "
        f"predicts one 128x96 PNG; median wall time of {cold[0]['runs']} runs seen by the parent (interpreter "
        f"start included) and the largest peak RSS.",
        "",
        "| device | wall p50 | wall max | CPU time p50 | of which import | load + predict | peak RSS | providers | "
        f"torch imported | target (<= {TARGET_SECONDS} s, <= {TARGET_MB} MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cold:
        ok = c["wall_p50_s"] <= TARGET_SECONDS and c["rss_max_mb"] <= TARGET_MB
        verdict = "-" if c["device"].startswith("floor") else "met" if ok else "MISSED"
        lines.append(f"| {c['device']} | {c['wall_p50_s']:.3f} s | {c['wall_max_s']:.3f} s | {c['cpu_p50_s']:.3f} s "
                     f"| {c['import_p50_s']:.3f} s "
                     f"| {c['load_predict_p50_s']:.3f} s | {c['rss_max_mb']:.0f} MB | {', '.join(c['providers'])} | "
                     f"{'yes' if c['torch_imported'] else 'no'} | {verdict} |")
    lines += [
        "",
        "The floor row is what any app using numpy, onnxruntime and pillow pays before the runtime does anything. "
        "CPU time is user + system seconds of the child (its threads summed): what a cold start costs when "
        "it has the cores to itself, so it is the better guide while other work competes for them.",
        "",
        "`auto` on this machine: onnxruntime-gpu has a CUDA provider but no NVIDIA driver loads "
        "(libcuda.so.1), so the runtime does not try CUDA (an attempt that cannot succeed, and cost "
        "about 0.1 s of cold start before this check) and runs on the CPU with one warning.",
        "",
        f"Batch-1 latency per image ({args.latency_runs} timed calls after 20 warm-up, same process, same "
        f"normalised input; eager is the checkpoint's model resolved for {config.name}, as exported, "
        f"with the faster of {' and '.join(str(t) for t in lat['eager'])} torch threads):",
        "",
        "| | p50 | p90 | p99 |",
        "|---|---|---|---|",
    ]
    rows = [("onnxruntime (session.run)", lat["onnxruntime"]),
            ("onnxruntime, `Classifier.predict` from a uint8 array (preprocessing + top-k)", lat["predict_end_to_end"])]
    rows += [(f"PyTorch eager, {t} thread{'s' if t > 1 else ''}", s) for t, s in lat["eager"].items()]
    lines += [f"| {name} | {s.p50_ms:.3f} ms | {s.p90_ms:.3f} ms | {s.p99_ms:.3f} ms |" for name, s in rows]
    verdict = "met" if ort_ms < eager.p50_ms else "MISSED"
    lines += [
        "",
        f"onnxruntime is {eager.p50_ms / ort_ms:.1f}x faster than eager at the median (target: lower latency: "
        f"{verdict}); largest logit difference {lat['max_abs_logit_diff']:.1e}.",
    ]
    if competing or loads[0] > 1.0:
        lines += ["", f"Measured while other work competed for the {available_cores()} cores (load average "
                      f"{loads[0]:.1f} before, {loads[1]:.1f} after)"
                      + (": " + "; ".join(f"`{c[:90]}`" for c in competing) if competing else "")
                      + ". Tail latencies and cold-start times are inflated by it; medians less so."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

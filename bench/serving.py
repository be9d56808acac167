"""Benchmark: in-process model time vs. served latency and throughput, on the same images.

`python -m bench.serving [--models-dir DIR] [--out DIR]` measures, for a classifier and a YOLO detector:
- raw: in-process decode + preprocess + invoke + output decoding (the server's own code, no HTTP);
- served: the real server process over HTTP on loopback, at concurrency 1 and 4 (p50, p99, throughput);
- the server's resident memory.
It writes `serving.json` and `serving.md` and prints the table with the targets.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from edge_model_serving.model import LoadedModel
from edge_model_serving.registry import load_version
from edge_model_serving.runtime import tune_allocator
from edge_model_serving.settings import ServingSettings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO / "tests" / "fixtures" / "bench"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_predict.lua"
MODELS = {"classifier": "bench-classifier", "yolo": "bench-yolov8"}


def make_images(count: int, seed: int = 7) -> list[bytes]:
    """Camera-like 640x480 JPEG frames: a textured belt with a few coloured blobs."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        noise = rng.integers(60, 120, (480, 640, 3), dtype=np.uint8)
        frame = cv2.GaussianBlur(noise, (9, 9), 0)
        for _ in range(int(rng.integers(1, 4))):
            center = (int(rng.integers(80, 560)), int(rng.integers(80, 400)))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.ellipse(
                frame,
                center,
                (int(rng.integers(30, 90)), int(rng.integers(20, 60))),
                float(rng.integers(0, 180)),
                0,
                360,
                color,
                -1,
            )
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        images.append(buf.tobytes())
    return images


def machine() -> dict[str, Any]:
    """What every benchmark report says about where it ran."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


Block = dict[str, float]  # p50_ms, p99_ms, requests, wall_s of one measurement block


def block(latencies_s: list[float], wall_s: float) -> Block:
    ms = [v * 1000 for v in latencies_s]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "requests": len(ms), "wall_s": wall_s}


def pool_blocks(blocks: list[Block]) -> dict[str, float]:
    """Median of the blocks' percentiles; throughput over all blocks together."""
    return {
        "p50_ms": round(statistics.median(b["p50_ms"] for b in blocks), 3),
        "p99_ms": round(statistics.median(b["p99_ms"] for b in blocks), 3),
        "throughput_per_s": round(sum(b["requests"] for b in blocks) / sum(b["wall_s"] for b in blocks), 2),
        "requests": int(sum(b["requests"] for b in blocks)),
    }


def load_in_process(folder: Path, settings: ServingSettings) -> LoadedModel:
    """The server's own loading and model class, one interpreter: the in-process reference."""
    return load_version(folder, "bench", 1, settings.interpreter_threads, 1)[0]


def bench_in_process(model: LoadedModel, images: list[bytes], rounds: int) -> Block:
    for image in images[:3]:
        model.predict(image)
    latencies = []
    start = time.perf_counter()
    for _ in range(rounds):
        for image in images:
            t0 = time.perf_counter()
            model.predict(image)
            latencies.append(time.perf_counter() - t0)
    return block(latencies, time.perf_counter() - start)


def bench_wrk(port: int, name: str, image_files: list[Path], seconds: int, concurrency: int) -> Block:
    """Served latency and throughput measured by wrk: a C load generator that leaves the CPU to the server."""
    url = f"http://127.0.0.1:{port}/v1/models/{name}:predict"
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(WRK_SCRIPT), url]
    output = subprocess.run(
        [*command, "--", *map(str, image_files)], capture_output=True, text=True, check=True
    )
    summary = json.loads(output.stdout.strip().splitlines()[-1])
    if summary["errors"]:
        raise RuntimeError(f"{summary['errors']} failed requests to {url}")
    return {
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "requests": summary["requests"],
        "wall_s": summary["duration_us"] / 1e6,
    }


def bench_served(port: int, name: str, images: list[bytes], rounds: int, concurrency: int) -> Block:
    """`concurrency` clients, each a thread with its own keep-alive connection, sharing one job list.

    The stdlib client keeps the client's own CPU cost small: on 2 cores it competes with the server.
    """
    path = f"/v1/models/{name}:predict"
    headers = {"Content-Type": "image/jpeg"}
    jobs = [image for _ in range(rounds) for image in images]
    latencies: list[float] = []
    lock = threading.Lock()
    cursor = iter(range(len(jobs)))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for image in images[:3]:  # warm the connection and the server's path
            conn.request("POST", path, body=image, headers=headers)
            conn.getresponse().read()
        barrier.wait()
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                break
            t0 = time.perf_counter()
            conn.request("POST", path, body=jobs[index], headers=headers)
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - t0
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}")
            with lock:
                latencies.append(elapsed)
        conn.close()

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return block(latencies, time.perf_counter() - start)


def rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


def start_server(models_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGE_SERVING_LOG_LEVEL": "warning", "EDGE_SERVING_WATCH_INTERVAL_S": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_model_serving", "--models-dir", str(models_dir), "--port", str(port)],
        env=env,
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| model | path | p50 ms | p99 ms | throughput /s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for kind, r in results["models"].items():
        for path in ("in_process", "served_c1", "served_c4"):
            s = r[path]
            lines.append(f"| {kind} | {path} | {s['p50_ms']} | {s['p99_ms']} | {s['throughput_per_s']} |")
    return "\n".join(lines + checks_table(results["checks"])) + "\n"


def checks_table(checks: list[dict[str, Any]]) -> list[str]:
    """The targets as markdown rows: measured, limit, met (shared by every benchmark's report)."""
    lines = ["", "| target | measured | limit | met |", "| --- | ---: | ---: | :---: |"]
    for check in checks:
        met = "yes" if check["ok"] else "NO"
        lines.append(f"| {check['name']} | {check['measured']} | {check['limit']} | {met} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4, help="passes over the images per block")
    parser.add_argument("--repeats", type=int, default=4, help="alternating blocks per path")
    parser.add_argument("--port", type=int, default=8599)
    parser.add_argument("--seconds", type=int, default=3, help="duration of each wrk block")
    parser.add_argument("--python-client", action="store_true", help="measure with Python threads, not wrk")
    args = parser.parse_args()

    tune_allocator()  # the server does the same at start: compare like with like
    settings = ServingSettings()
    images = make_images(args.images)
    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "num_threads": settings.interpreter_threads,
            "pool_size": settings.pool_size,
        },
        "images": {"count": len(images), "size": "640x480 JPEG"},
        "models": {},
    }
    # The machine's speed drifts (other processes, clocks): alternate short blocks of each path
    # and pool them, so every ratio compares measurements taken over the same minutes.
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    results["client"] = "wrk" if use_wrk else "python http.client threads"
    proc = start_server(args.models_dir, args.port)
    with tempfile.TemporaryDirectory() as tmp:
        image_files = []
        for index, image in enumerate(images):
            image_files.append(Path(tmp) / f"{index:03d}.jpg")
            image_files[-1].write_bytes(image)
        try:
            for kind, name in MODELS.items():
                model = load_in_process(args.models_dir / name / "1", settings)
                blocks: dict[str, list[Block]] = {"in_process": [], "served_c1": [], "served_c4": []}
                for _ in range(args.repeats):
                    blocks["in_process"].append(bench_in_process(model, images, args.rounds))
                    for concurrency in (1, 4):
                        key = f"served_c{concurrency}"
                        if use_wrk:
                            blocks[key].append(
                                bench_wrk(args.port, name, image_files, args.seconds, concurrency)
                            )
                        else:
                            blocks[key].append(
                                bench_served(args.port, name, images, args.rounds, concurrency)
                            )
                results["models"][kind] = {"model": name, **{k: pool_blocks(v) for k, v in blocks.items()}}
                del model
            results["server_memory"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    cls, yolo = results["models"]["classifier"], results["models"]["yolo"]
    checks = [
        ("yolo served p50 / in-process p50", yolo["served_c1"]["p50_ms"] / yolo["in_process"]["p50_ms"], 1.3),
        (
            "classifier served p50 - in-process p50 (ms)",
            cls["served_c1"]["p50_ms"] - cls["in_process"]["p50_ms"],
            3.0,
        ),
        (
            "yolo c4 throughput / in-process throughput (min)",
            yolo["served_c4"]["throughput_per_s"] / yolo["in_process"]["throughput_per_s"],
            0.9,
        ),
        (
            "classifier c4 throughput / in-process throughput (min)",
            cls["served_c4"]["throughput_per_s"] / cls["in_process"]["throughput_per_s"],
            0.9,
        ),
        ("server resident memory MB", results["server_memory"]["rss_mb"], 200.0),
    ]
    results["checks"] = [
        {"name": n, "measured": round(v, 3), "limit": lim, "ok": v >= lim if "(min)" in n else v <= lim}
        for n, v, lim in checks
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.out / "serving.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()

"""Benchmark `deepfake serve` under load: N clips posted by C concurrent clients, then an overload.

    python bench/serve.py                                   # 50 clips, 8 clients, a server of its own
    python bench/serve.py --clips 6 --concurrency 2 --resolution 320x240 --seconds 2 --backbone test_efficientnet
    python bench/serve.py --compare-720p                    # also: a 10-s 720p clip, server vs predict in-process
    python bench/serve.py --url http://127.0.0.1:8000/ --token T    # a server already running (no memory figures)
    python bench/serve.py --durable 10 --backbone test_efficientnet --resolution 320x240 --seconds 3 --fps 10

What is measured:
- ``load``: `--clips` uploads of a `deepfake synth` clip (real and fake alternating) by `--concurrency` client
  threads, each posting and then polling its job until done: throughput (clips/s over the whole run), latency
  from the start of the upload to the job's end (p50, p95, max), failures (anything but 202 then ``done``: must
  be 0). The server's queue (`--queue`) is set to hold every client's job, so no 429 is expected here.
- ``memory``: RSS of the server process and its workers (psutil, sampled every 0.2 s): peak, and the median over
  the first and the last fifth of the run ("flat" when they are close).
- ``overload``: `--overload` uploads at once against the same server: the answers are 202 (queued) or 429
  (queue full), never anything else, and the server still answers /health afterwards.
- ``durable`` (with `--durable N`, instead of the load test): a server with `--state-dir` and one worker gets N
  uploads; it is killed with SIGKILL while one job runs and the others wait, started again on the same folder, and
  every job is polled to its end: done, failed and lost (unknown after the restart: must be 0), the restart's
  seconds to a loaded model and to the last job done. Then ``stalled_upload``: a client that sends half an upload
  and goes quiet gets 408 after the server's `--upload-timeout-s` (set to 2 here), and its place is free again.
- ``compare_720p`` (with `--compare-720p`): one 10-s 1280x720 30-fps clip, `--repeat` times through the server
  (one client, plot off: predict makes no plot either) and through `deepfake.inference.predict_video` in this
  process (model loaded once, one warm-up), medians and their ratio (target: under 2x).

The server is `deepfake serve` started here on a free port (or `--url`), with `--weights` or else a random-init
detector of `--backbone` (as fast as a trained one; nothing downloaded). One warm-up job runs before any timing.
Results go to stdout and, with `--out`, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def make_clips(folder: Path, resolution: str, seconds: float, fps: float) -> list[Path]:
    """A real and a fake clip from `deepfake synth` (reused when already in `folder`)."""
    from deepfake.cli import synth

    if not (folder / "real" / "clip_0000.mp4").is_file():
        status = synth.main([str(folder), "--count", "2", "--resolution", resolution, "--seconds", str(seconds),
                             "--fps", str(fps), "--seed", "0", "--no-progress"])
        if status != 0:
            raise SystemExit(f"bench: deepfake synth failed (status {status})")
    return [folder / "real" / "clip_0000.mp4", *sorted((folder / "fake").glob("*.mp4"))[:1]]


def make_weights(path: Path, backbone: str, seq_len: int, stride: int) -> Path:
    """A random-init detector file of `backbone`."""
    import torch

    from deepfake.checkpoint import build_meta, save_detector
    from deepfake.model import DeepfakeDetector

    torch.manual_seed(0)
    net = DeepfakeDetector(backbone=backbone, pretrained=False)
    return save_detector(path, net, build_meta(net, seq_len=seq_len, margin=0.3, stride=stride))


class Server:
    """`deepfake serve` in a subprocess on a free port."""

    def __init__(self, weights: Path, args, log: Path, extra: tuple[str, ...] = (), port: int = 0) -> None:
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.log = open(log, "a")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-c", "import sys; from deepfake.cli import main; sys.exit(main())", "serve",
               "--weights", str(weights), "--port", str(port), "--workers", str(args.workers),
               "--queue", str(args.queue), "--device", args.device, "--precision", args.precision,
               "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "DEEPFAKE_TOKEN": ""})

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: the server exited ({self.proc.returncode}); see {self.log.name}")
            try:
                if get_json(self.url + "health", None)["model_loaded"]:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"bench: the server did not load its model in {timeout:.0f} s")

    def stop(self) -> int | None:
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        self.log.close()
        return code


class MemorySampler(threading.Thread):
    """RSS of a process and its children, every `every` seconds, until stopped."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root, self.every, self.samples, self._done = psutil.Process(pid), every, [], threading.Event()

    def rss(self) -> int:
        import psutil

        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.monotonic(), self.rss()))
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _headers(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def get_json(url: str, token: str | None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=_headers(token)), timeout=30) as r:
        return json.load(r)


def post_clip(base: str, clip: Path, token: str | None, plot: bool = True) -> tuple[int, dict]:
    """Upload one clip (multipart, streamed from the file by httpx); (HTTP status, JSON body)."""
    import httpx

    with open(clip, "rb") as f:
        r = httpx.post(base + "api/v1/videos", files={"file": (clip.name, f, "video/mp4")},
                       data={"plot": "true" if plot else "false"}, headers=_headers(token), timeout=300)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, {"error": r.text[:200]}


def run_one(base: str, clip: Path, token: str | None, plot: bool = True) -> dict:
    """Post a clip and poll its job to the end: {"ok", "seconds", "status", "state", "error"}."""
    start = time.perf_counter()
    try:
        status, body = post_clip(base, clip, token, plot)
        if status != 202:
            return {"ok": False, "status": status, "error": body.get("error"), "seconds": time.perf_counter() - start}
        while True:
            job = get_json(base + body["status_url"].lstrip("/"), token)
            if job["state"] in ("done", "failed"):
                return {"ok": job["state"] == "done", "status": status, "state": job["state"],
                        "error": job["error"], "seconds": time.perf_counter() - start}
            time.sleep(0.05)
    except Exception as err:  # noqa: BLE001 - a failed request is a counted failure, not the end of the bench
        return {"ok": False, "status": None, "error": f"{type(err).__name__}: {err}",
                "seconds": time.perf_counter() - start}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def load_test(base: str, clips: list[Path], n: int, concurrency: int, token: str | None, plot: bool,
              sampler: MemorySampler | None) -> dict:
    start = time.perf_counter()
    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        runs = list(pool.map(lambda i: run_one(base, clips[i % len(clips)], token, plot), range(n)))
    wall = time.perf_counter() - start
    latencies = [r["seconds"] for r in runs if r["ok"]]
    failures = [r for r in runs if not r["ok"]]
    out = {"clips": n, "concurrency": concurrency, "wall_s": round(wall, 2), "clips_per_s": round(n / wall, 3),
           "failures": len(failures), "failure_examples": [f"{f['status']}: {f['error']}" for f in failures[:3]]}
    if latencies:
        out.update({"latency_p50_s": round(percentile(latencies, 0.5), 2),
                    "latency_p95_s": round(percentile(latencies, 0.95), 2), "latency_max_s": round(max(latencies), 2)})
    if sampler is not None:
        during = [rss for t, rss in sampler.samples if t >= t0]
        fifth = max(1, len(during) // 5)
        out.update({"rss_peak_mb": round(max(rss for _, rss in sampler.samples) / 2**20),
                    "rss_first_fifth_mb": round(statistics.median(during[:fifth]) / 2**20),
                    "rss_last_fifth_mb": round(statistics.median(during[-fifth:]) / 2**20)})
    return out


def overload(base: str, clip: Path, n: int, token: str | None) -> dict:
    """`n` uploads at once: 202 or 429 only, and /health still answers."""
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait()
        try:
            return post_clip(base, clip, token, plot=False)
        except Exception as err:  # noqa: BLE001
            return None, {"error": f"{type(err).__name__}: {err}"}

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(one, range(n)))
    codes = [status for status, _ in answers]
    accepted = [body["status_url"] for status, body in answers if status == 202]
    alive = get_json(base + "health", None)["status"] == "ok"
    deadline = time.monotonic() + 600  # let the accepted ones finish, so the server is idle again
    while accepted and time.monotonic() < deadline:
        accepted = [u for u in accepted if get_json(base + u.lstrip("/"), token)["state"] in ("queued", "running")]
        time.sleep(0.2)
    return {"posted": n, "accepted_202": codes.count(202), "refused_429": codes.count(429),
            "other": len(codes) - codes.count(202) - codes.count(429), "server_alive": alive}


def compare_720p(base: str, weights: Path, args, data: Path, token: str | None) -> dict:
    """A 10-s 720p clip: the server (one client, no plot) vs predict_video in this process, medians."""
    from deepfake.inference import PredictConfig, load_predictor, predict_video

    clip = make_clips(data / "clip_1280x720_10s", "1280x720", 10.0, 30.0)[0]
    served = [run_one(base, clip, token, plot=False) for _ in range(args.repeat + 1)][1:]  # first: warm-up
    if not all(r["ok"] for r in served):
        return {"error": f"server failed: {[r['error'] for r in served if not r['ok']]}"}
    detector, extractor, _ = load_predictor(weights, PredictConfig(device=args.device, precision=args.precision))
    predict_video(clip, detector, extractor)  # warm-up
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        predict_video(clip, detector, extractor)
        times.append(time.perf_counter() - start)
    server_s, predict_s = statistics.median(r["seconds"] for r in served), statistics.median(times)
    return {"server_s": round(server_s, 2), "predict_in_process_s": round(predict_s, 2),
            "ratio": round(server_s / predict_s, 2), "repeat": args.repeat}


def durable(weights: Path, clip: Path, args, data: Path) -> dict:
    """N uploads, SIGKILL while one runs and the others wait, a restart on the same --state-dir: all N must end."""
    import signal

    state = Path(tempfile.mkdtemp(prefix="state-", dir=data))
    extra = ("--state-dir", str(state), "--upload-timeout-s", "2")
    args.queue, args.workers = max(args.queue, args.durable), 1
    server = Server(weights, args, data / "durable.log", extra)
    server.wait_ready()
    ids = []
    for _ in range(args.durable):
        status, body = post_clip(server.url, clip, None, plot=False)
        if status != 202:
            raise SystemExit(f"bench: upload refused ({status}): {body}")
        ids.append(body["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        at_kill = [get_json(server.url + f"api/v1/videos/{i}", None)["state"] for i in ids]
        if "running" in at_kill:
            break
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.log.close()
    start = time.perf_counter()
    server = Server(weights, args, data / "durable.log", extra, port=server.port)
    try:
        server.wait_ready()
        ready_s = time.perf_counter() - start
        final: dict = {}
        while time.monotonic() < deadline + 600:
            final = {}
            for i in ids:
                try:
                    final[i] = get_json(server.url + f"api/v1/videos/{i}", None)["state"]
                except urllib.error.HTTPError as err:
                    final[i] = f"http {err.code}"
            if all(v in ("done", "failed") or v.startswith("http") for v in final.values()):
                break
            time.sleep(0.2)
        done_s = time.perf_counter() - start
        stalled = stalled_upload(server.port, clip)
    finally:
        server.stop()
    states = list(final.values())
    return {"posted": len(ids), "at_kill": {s: at_kill.count(s) for s in sorted(set(at_kill))},
            "done": states.count("done"), "failed": states.count("failed"),
            "lost": len(ids) - states.count("done") - states.count("failed"),
            "restart_to_ready_s": round(ready_s, 1), "restart_to_all_done_s": round(done_s, 1),
            "stalled_upload": stalled}


def stalled_upload(port: int, clip: Path) -> dict:
    """Half an upload over a raw socket, then silence: the answer's status line and how long it took."""
    body = clip.read_bytes()
    head = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.mp4\"\r\n\r\n"
            + body[: len(body) // 2])
    request = (f"POST /api/v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b"
               f"\r\nContent-Length: {len(body) + 200}\r\n\r\n").encode() + head
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        answer = sock.recv(4096).decode("latin-1")
    receiving = get_json(f"http://127.0.0.1:{port}/health", None)["queue"]["receiving"]
    return {"status_line": answer.split("\r\n", 1)[0], "after_s": round(time.perf_counter() - start, 2),
            "places_held_after": receiving}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    from deepfake.inference import PRECISIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server (default: start one here)")
    p.add_argument("--token", default=os.environ.get("DEEPFAKE_TOKEN") or None, help="its token, if any")
    p.add_argument("--weights", help="a detector checkpoint (default: random-init --backbone)")
    p.add_argument("--backbone", default="efficientnet_b1", help="without --weights (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=10, help="window length without --weights (default %(default)s)")
    p.add_argument("--stride", type=int, default=5, help="training stride without --weights (default %(default)s)")
    p.add_argument("--device", default="cpu", help="the server's --device (default %(default)s)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--workers", type=int, default=1, help="the server's --workers (default %(default)s)")
    p.add_argument("--clips", type=int, default=50, help="uploads in the load test (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default %(default)s)")
    p.add_argument("--resolution", default="640x360", help="load-test clip size (default %(default)s)")
    p.add_argument("--seconds", type=float, default=3.0, help="load-test clip length (default %(default)s)")
    p.add_argument("--fps", type=float, default=30.0, help="load-test clip frame rate (default %(default)s)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="post the load test's clips with plot=false")
    p.add_argument("--overload", type=int, default=0,
                   help="uploads at once in the overload check (default: queue + workers + 8; -1: skip)")
    p.add_argument("--compare-720p", action="store_true", help="also time a 10-s 720p clip, server vs predict")
    p.add_argument("--repeat", type=int, default=3, help="runs per 720p measurement, median (default %(default)s)")
    p.add_argument("--data", help="folder for the generated clips (kept; default a temporary folder)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--durable", type=int, default=0, metavar="N",
                   help="instead of the load test: N uploads, SIGKILL while 1 runs, restart, count the lost")
    args = p.parse_args(argv)
    args.queue = max(16, args.concurrency * 2)

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-serve-"))
    data.mkdir(parents=True, exist_ok=True)
    clips = make_clips(data / f"clip_{args.resolution}_{args.seconds:g}s_{args.fps:g}fps", args.resolution,
                       args.seconds, args.fps)
    weights = Path(args.weights) if args.weights else make_weights(data / f"{args.backbone}.pt", args.backbone,
                                                                   args.seq_len, args.stride)
    server = sampler = None
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
                     "settings": {k: v for k, v in vars(args).items() if k != "token"}}
    if args.durable:
        results["durable"] = durable(weights, clips[0], args, data)
        print(json.dumps(results, indent=2))
        d = results["durable"]
        return 1 if d["lost"] or d["done"] != d["posted"] or "408" not in d["stalled_upload"]["status_line"] else 0
    try:
        if args.url:
            base = args.url.rstrip("/") + "/"
        else:
            server = Server(weights, args, data / "server.log")
            start = time.perf_counter()
            server.wait_ready()
            results["server_start_s"] = round(time.perf_counter() - start, 1)
            base = server.url
            sampler = MemorySampler(server.proc.pid)
            sampler.start()
        health = get_json(base + "health", None)
        results["server"] = {k: health.get(k) for k in ("device", "version", "queue")}
        warm = run_one(base, clips[0], args.token, args.plot)
        results["warm_up_s"] = round(warm["seconds"], 2)
        if not warm["ok"]:
            raise SystemExit(f"bench: the warm-up job failed: {warm['error']}")
        results["load"] = load_test(base, clips, args.clips, args.concurrency, args.token, args.plot, sampler)
        print(json.dumps({"load": results["load"]}), file=sys.stderr)
        queue = health["queue"]["capacity"] + health["queue"]["workers"]
        n = args.overload if args.overload > 0 else queue + 8
        if args.overload >= 0:
            results["overload"] = overload(base, clips[0], n, args.token)
        if args.compare_720p:
            results["compare_720p"] = compare_720p(base, weights, args, data, args.token)
    finally:
        if sampler is not None:
            sampler.stop()
            results["rss_peak_mb_all"] = round(max(rss for _, rss in sampler.samples) / 2**20)
        if server is not None:
            results["server_exit"] = server.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    bad = results["load"]["failures"] or results.get("overload", {}).get("other")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

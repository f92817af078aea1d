"""What ``poet-run --preview`` costs: poet-run's FPS on one video without it, with it and nobody watching, with one
viewer reading the MJPEG stream, and with a viewer that stopped reading; in turns, over several rounds.

    python benchmarks/scripts/preview_fps.py [--model runs/quickstart/variants/model.onnx] [--rounds 10]

The video is made from the repository's COCO photographs at 640x480 (``--frames`` of them, in turn). Each run is
the installed ``poet-run`` (``--jsonl`` to a scratch file, no progress bar); its FPS is the one its summary line
prints, from the first frame to the last, so the model's loading is not in it. This machine's speed drifts 2-3x
over minutes, so each setting is compared with the run without preview of the same round (median of those
ratios), and the CPU time of each run (its process and threads, start-up included) is shown per frame.
"""

from __future__ import annotations

import argparse
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import cv2

from poet.images import read_image

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "tests" / "data" / "coco" / "val2017"
DEFAULT_MODEL = Path("runs/quickstart/variants/model.onnx")
SIZE = (640, 480)
SETTINGS = ("no preview", "preview, no viewer", "preview, one viewer", "preview, a stalled viewer")


def make_video(path: Path, frames: int) -> None:
    photos = [cv2.resize(read_image(p), SIZE) for p in sorted(PHOTOS.glob("*.jpg"))]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, SIZE)
    for index in range(frames):
        writer.write(photos[index % len(photos)])
    writer.release()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def watch(port: int, stalled: bool, done: threading.Event) -> None:
    """A viewer of the stream: reads every part as it comes, or (``stalled``) asks and never reads again."""
    with socket.create_connection(("127.0.0.1", port)) as viewer:
        if stalled:
            viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        viewer.sendall(b"GET /streams/clip.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        viewer.settimeout(1.0)
        while not done.is_set():
            if stalled:
                done.wait(0.5)
                continue
            try:
                if not viewer.recv(1 << 16):
                    return
            except TimeoutError:
                continue


def run(model: Path, video: Path, work: Path, setting: str) -> tuple[float, float]:
    """One poet-run in ``setting``; its end-to-end FPS and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = ["poet-run", str(video), "--model", str(model), "--jsonl", str(work / "p.jsonl"), "--no-progress"]
    port = free_port()
    if setting != "no preview":
        command += ["--preview", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()
    viewer = None
    if setting in ("preview, one viewer", "preview, a stalled viewer"):
        assert process.stderr is not None
        line = process.stderr.readline()
        if "preview of" not in line:
            raise SystemExit(f"poet-run did not start its preview: {line}")
        viewer = threading.Thread(target=watch, args=(port, setting.endswith("stalled viewer"), done), daemon=True)
        viewer.start()
    out, err = process.communicate()
    done.set()
    if viewer is not None:
        viewer.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.search(r"([\d.]+) FPS end to end", out)
    if process.returncode != 0 or found is None:
        raise SystemExit(f"poet-run failed ({process.returncode}): {err.strip()[-500:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return float(found.group(1)), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"poet-edge model (default: {DEFAULT_MODEL})")
    parser.add_argument("--frames", type=int, default=600, help="frames of the video (default: 600)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of all settings in turn (default: 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        video = work / "clip.avi"
        make_video(video, args.frames)
        fps: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
        cpu: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
        for round_number in range(args.rounds):
            for setting in SETTINGS:
                rate, seconds = run(args.model, video, work, setting)
                fps[setting].append(rate)
                cpu[setting].append(1000.0 * seconds / args.frames)
            print(f"round {round_number + 1}: " + ", ".join(f"{s} {f[-1]:.1f}" for s, f in fps.items()))
            sys.stdout.flush()
    base = fps["no preview"]
    print(f"\n{args.model}, {args.frames} frames of {SIZE[0]}x{SIZE[1]}, {args.rounds} rounds in turns\n")
    print("| setting | FPS (median) | vs no preview, same round (median, min-max) | CPU ms a frame (median) |")
    print("|---|---:|---:|---:|")
    for setting in SETTINGS:
        ratios = [value / reference for value, reference in zip(fps[setting], base, strict=True)]
        print(
            f"| {setting} | {statistics.median(fps[setting]):.1f} | {statistics.median(ratios):.3f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {statistics.median(cpu[setting]):.2f} |"
        )


if __name__ == "__main__":
    main()

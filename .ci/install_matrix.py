"""CI's install matrix: build the sdist and wheel once, then install each documented install line from the wheel
into a fresh venv and use it as its users would.

For each line: every console script the line claims answers ``--help``; one small real run per tool; every tool
whose extra the line lacks answers with one ``error:`` line naming the extra; the venv holds none of the packages
the line must not pull in. Prints one table (install line, venv size, wall time, commands run, result) and writes
it to ``WORK/matrix.md`` and ``WORK/matrix.json``. Needs the dev install (for the small model it exports) and
only the standard library otherwise. Exit code 1 when any line fails.

Run: ``python3 .ci/install_matrix.py [--work DIR] [--lines base,model,...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from poet.console import COMMANDS  # noqa: E402  (stdlib only: the table of tools and their extras)
from poet.extras import EXTRAS  # noqa: E402

PHOTO = REPO / "tests" / "data" / "coco" / "val2017" / "000000397133.jpg"
COCO = REPO / "tests" / "data" / "coco"
# Which extras each extra includes, read from pyproject's own "poet-edge[...]" entries.
OPTIONAL = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def included(extra: str) -> set[str]:
    """``extra`` and every extra its requirements name as ``poet-edge[...]``, transitively."""
    found = {extra}
    for requirement in OPTIONAL.get(extra, []):
        if requirement.startswith("poet-edge["):
            for name in requirement[len("poet-edge[") :].split("]")[0].split(","):
                found |= included(name.strip())
    return found


# The modules a line must not bring, by the extras it has (those of every extra it lacks, TensorRT aside),
# less those a dependency of one of its extras requires: nvidia-modelopt requires scipy and PyYAML.
ALL_MODULES = {module for extra, (_, modules) in EXTRAS.items() if extra != "tensorrt" for module in modules}
BROUGHT_BY_DEPENDENCIES = {"optimize": {"scipy", "yaml"}}


@dataclass
class Check:
    argv: list[str]
    expect_code: int = 0
    expect_text: str = ""  # must appear in stdout or stderr
    one_error_line: bool = False  # stderr is exactly one "error: " line
    files: list[str] = field(default_factory=list)  # must exist afterwards (relative to the line's work folder)


@dataclass
class Line:
    name: str
    extras: list[str]
    checks: list[Check]
    then: Line | None = None  # a second line installed on top of this venv (e.g. [bench], then [train,bench])


def covered(extras: list[str]) -> set[str]:
    return set().union(*(included(extra) for extra in extras))


def claimed_commands(extras: list[str]) -> list[str]:
    have = covered(extras)
    return [name for name, command in COMMANDS.items() if set(command.extras) <= have]


def help_checks(extras: list[str]) -> list[Check]:
    return [Check([name, "--help"], expect_text="usage:") for name in claimed_commands(extras)]


# A run of each tool that the line lacks: one line naming the extra to install, before any work.
LACKING_RUNS = {
    "poet": ["quickstart", "--output", "quick"],
    "poet-eval": ["tiny.pth", "--data", str(COCO)],
    "poet-predict": [str(PHOTO), "--checkpoint", "tiny.pth"],
    "poet-train": ["--config", "synthetic-small", "--data", "synth"],
    "poet-export": ["tiny.pth", "-o", "tiny.onnx"],
    "poet-bench": ["--checkpoint", "tiny.pth", "--data", str(COCO)],
    "poet-serve": ["tiny.onnx"],
}


def lacking_checks(extras: list[str]) -> list[Check]:
    claimed = claimed_commands(extras)
    checks = []
    for name, argv in LACKING_RUNS.items():
        if name not in claimed:
            wanted = ",".join(COMMANDS[name].extras)
            checks.append(Check([name, *argv], 2, f"pip install 'poet-edge[{wanted}]'", one_error_line=True))
    return checks


def forbidden_check(extras: list[str]) -> Check:
    allowed = {module for extra in covered(extras) for module in EXTRAS.get(extra, ("", ()))[1]}
    allowed |= {module for extra in covered(extras) for module in BROUGHT_BY_DEPENDENCIES.get(extra, set())}
    forbidden = sorted(ALL_MODULES - allowed)
    code = (
        f"import importlib.util, sys\nfound = [m for m in {forbidden!r} if importlib.util.find_spec(m)]\n"
        f"sys.exit(f'installed: {{found}}') if found else print('not installed: {', '.join(forbidden)}')"
    )
    return Check(["python", "-c", code], expect_text="not installed")


# poet-serve on loopback, poet-run against it over gRPC from the same venv (the serve extra brings the client),
# then SIGTERM: the server must have answered and exit 0.
SERVE_AND_ASK = """
import signal, socket, subprocess
ports = []
for _ in range(3):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ports.append(probe.getsockname()[1])
server = subprocess.Popen(
    ["poet-serve", "{model}", "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
     "--metrics-port", str(ports[2]), "--no-progress"], stdout=subprocess.PIPE, text=True)
try:
    assert server.stdout.readline().startswith("serving poet"), "poet-serve printed no ready line"
    run = subprocess.run(["poet-run", "{photo}", "--model", f"grpc://127.0.0.1:{{ports[1]}}/poet", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "1 frame from" in run.stdout, run.stdout + run.stderr
finally:
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=120) == 0, "poet-serve did not exit 0 on SIGTERM"
print("served and asked")
"""


def lines(fixtures: Path) -> list[Line]:
    onnx, checkpoint = str(fixtures / "tiny.onnx"), str(fixtures / "tiny.pth")
    calibration = ["--calib-images", str(COCO / "train2017"), "--calib-count", "4"]
    quickstart = ["poet", "quickstart", "--output", "quick", "--train-images", "16", "--val-images", "4"]
    bench_run = ["poet-bench", "--checkpoint", checkpoint, "--data", str(COCO), "--variants", "torch", "onnx-fp32"]
    bench_run += ["trt-fp16"]
    run_photo = ["poet-run", str(PHOTO), "--model", onnx]
    train = ["poet-train", "--config", "synthetic-small", "--data", "synth", "--output", "run", "--eval-every", "0"]
    train += ["--num-workers", "0", "--no-progress", "--epochs", "1", "--max-steps-per-epoch", "2", "--batch", "4"]
    train += ["--input-size", "64", "64"]
    # Tests run against the installed wheel, not the checkout (pytest is started outside it).
    wheel_tests = ("test_torch_free.py", "test_runtime.py", "test_packaging.py")
    missing_name = (
        "import poet\nfrom poet.errors import MissingExtraError\ntry:\n    poet.load_model\n"
        "except MissingExtraError as error:\n    print(error)"
    )
    bench = Line(
        "[bench]",
        ["bench"],
        [
            Check(
                [*bench_run, "--iters", "2", "--warmup", "1", "--limit", "4", "--output", "bench", "--no-progress"],
                expect_text="trt-fp16",
                files=["bench/bench.json", "bench/bench.md", "bench/bench.png"],
            ),
        ],
        then=Line(
            "[train,bench]",
            ["train", "bench"],
            [Check([*quickstart, "--epochs", "1"], expect_text="report written to", files=["quick/report.md"])],
        ),
    )
    return [
        Line(
            "base",
            [],
            [
                Check(
                    [*run_photo, "--jsonl", "poses.jsonl", "--save-images", "drawn", "--no-progress"],
                    expect_text="1 frame from",
                    files=["poses.jsonl", "drawn/000000397133.jpg"],
                ),
                Check(["poet-synth", "synth", "--train", "4", "--val", "2", "--size", "64", "64", "--no-progress"]),
                Check(["python", "-c", missing_name], expect_text="pip install 'poet-edge[model]'"),
                Check(
                    [*run_photo, "--backend", "openvino", "--no-progress"],
                    2,
                    "pip install 'poet-edge[openvino]'",
                    one_error_line=True,
                ),
            ],
        ),
        Line(
            "[openvino]",
            ["openvino"],
            [
                Check(
                    [*run_photo, "--backend", "openvino", "--precision", "fp32", "--jsonl", "poses.jsonl"],
                    expect_text="1 frame from",
                    files=["poses.jsonl"],
                ),
            ],
        ),
        Line(
            "[client]",
            ["client"],
            [
                # Nothing listens on port 1: the client is installed and says where it found no server.
                Check(
                    [*run_photo, "--model", "grpc://127.0.0.1:1/poet", "--no-progress"],
                    2,
                    "no Triton server answers at grpc://127.0.0.1:1",
                    one_error_line=True,
                ),
            ],
        ),
        Line(
            "[serve]",
            ["serve"],
            [
                Check(
                    ["poet-serve", onnx, "--write-repository", "repo"],
                    files=["repo/poet/config.pbtxt", "repo/poet/1/model.onnx"],
                ),
                Check(["python", "-c", SERVE_AND_ASK.format(model=onnx, photo=PHOTO)], expect_text="served and asked"),
            ],
        ),
        Line(
            "[model]",
            ["model"],
            [
                Check(["poet-eval", checkpoint, "--data", str(COCO), "--limit", "2"], expect_text="AP"),
                Check(
                    ["poet-predict", str(PHOTO), "--checkpoint", checkpoint, "-o", "poses"], files=["poses/poses.json"]
                ),
            ],
        ),
        Line(
            "[train]",
            ["train"],
            [
                Check(["poet-synth", "synth", "--train", "8", "--val", "2", "--size", "64", "64", "--no-progress"]),
                Check(train, files=["run/checkpoint.pth"]),
            ],
        ),
        Line(
            "[optimize]",
            ["optimize"],
            [
                Check(["poet-export", checkpoint, "-o", "tiny.onnx"], files=["tiny.onnx"]),
                Check(["poet-export", checkpoint, "-o", "tiny-fp16.onnx", "--precision", "fp16"]),
                Check(
                    [
                        "poet-export",
                        checkpoint,
                        "-o",
                        "int8.onnx",
                        "--precision",
                        "int8",
                        "--target",
                        "cpu",
                        *calibration,
                    ],
                    files=["int8.onnx"],
                ),
                # NNCF's INT8 for OpenVINO: the file is made here; running it needs the [openvino] line's package.
                Check(
                    [
                        "poet-export",
                        checkpoint,
                        "-o",
                        "ov.onnx",
                        "--precision",
                        "int8",
                        "--target",
                        "openvino",
                        *calibration,
                    ],
                    files=["ov.int8-openvino.onnx"],
                ),
                # Without TensorRT the FP16 ONNX is made here and the engine is left to the target machine.
                Check(
                    ["poet-build-engine", "tiny.onnx", "-o", "tiny.engine", "--fp16"],
                    2,
                    "passes the TensorRT graph check",  # the parser tables ship in the wheel
                ),
            ],
        ),
        bench,
        Line(
            "[dev]",
            ["dev"],
            [
                Check(["ruff", "--version"]),
                Check(["mypy", "--version"]),
                Check(["python", "-c", "import poet; print(poet.__file__)"], expect_text="site-packages"),
                Check(
                    ["pytest", "-q", "-p", "no:cacheprovider", *[str(REPO / "tests" / name) for name in wheel_tests]],
                    expect_text="passed",
                ),
            ],
        ),
    ]


def run(argv: list[str], cwd: Path, venv: Path, log: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    """Run one command of the line in its venv; the log keeps its exit code and last line of output."""
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    lines = (result.stdout + result.stderr).strip().splitlines()
    log.append({"command": " ".join(argv), "exit": result.returncode, "last_line": lines[-1] if lines else ""})
    return result


def verify(check: Check, result: subprocess.CompletedProcess[str], cwd: Path) -> str | None:
    """None when the check passed, else what went wrong."""
    output = result.stdout + result.stderr
    if result.returncode != check.expect_code:
        return f"exit code {result.returncode}, expected {check.expect_code}"
    if check.expect_text and check.expect_text not in output:
        return f"output lacks {check.expect_text!r}"
    if check.one_error_line:
        lines = result.stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("error: "):
            return f"expected one 'error:' line on stderr, got {len(lines)} lines"
    missing = [name for name in check.files if not (cwd / name).exists()]
    if missing:
        return f"did not write {', '.join(missing)}"
    return None


def folder_size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())


def install(venv: Path, wheel: Path, extras: list[str]) -> subprocess.CompletedProcess[str]:
    target = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    constraints = str(REPO / "constraints.txt")
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", "-c", constraints]
    return subprocess.run([*command, target], capture_output=True, text=True, timeout=1800)


def check_line(line: Line, venv: Path, cwd: Path, wheel: Path) -> list[dict[str, object]]:
    """Install ``line`` into ``venv`` (fresh unless a line before it made it) and run its checks."""
    started = time.perf_counter()
    installed = install(venv, wheel, line.extras)
    install_seconds = time.perf_counter() - started
    log: list[dict[str, object]] = []
    failures: list[str] = []
    if installed.returncode != 0:
        failures.append(f"pip install failed: {installed.stderr.strip()[-2000:]}")
    else:
        checks = [*help_checks(line.extras), *lacking_checks(line.extras), forbidden_check(line.extras), *line.checks]
        for check in checks:
            result = run(check.argv, cwd, venv, log)
            problem = verify(check, result, cwd)
            if problem is not None:
                tail = (result.stdout + result.stderr).strip()[-3000:]
                failures.append(f"{' '.join(check.argv)}: {problem}\n{tail}")
    row: dict[str, object] = {
        "line": f"pip install 'poet-edge{('[' + ','.join(line.extras) + ']') if line.extras else ''}'",
        "venv_mib": round(folder_size(venv) / 2**20),
        "install_s": round(install_seconds, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "commands": log,
        "failures": failures,
    }
    print(f"{row['line']}: {'ok' if not failures else 'FAILED'} in {row['wall_s']} s", flush=True)
    for failure in failures:
        print("  " + failure.replace("\n", "\n    "), flush=True)
    rows = [row]
    if line.then is not None and not failures:
        rows += check_line(line.then, venv, cwd, wheel)
    return rows


def make_fixtures(folder: Path) -> None:
    """A small random-weight POET checkpoint and its ONNX export, made with the dev install."""
    code = f"""
import torch
from poet.checkpoint import save_checkpoint
from poet.model import PoetConfig, build_model
from poet.optimize.export import export_onnx
from poet.processing import PreprocessConfig

torch.manual_seed(0)
config = PoetConfig(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dim_feedforward=64,
                    num_queries=4)
save_checkpoint({str(folder / "tiny.pth")!r}, build_model(config, PreprocessConfig(input_size=(128, 128))))
export_onnx({str(folder / "tiny.pth")!r}, {str(folder / "tiny.onnx")!r}, progress=False)
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def table(rows: list[dict[str, object]]) -> str:
    out = ["| install line | venv | install | wall time | commands run | result |", "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        result = "pass" if not row["failures"] else f"FAIL ({len(row['failures'])})"  # type: ignore[arg-type]
        out.append(
            f"| `{row['line']}` | {row['venv_mib']} MiB | {row['install_s']} s | {row['wall_s']} s "
            f"| {len(row['commands'])} | {result} |"  # type: ignore[arg-type]
        )
    return "\n".join(out)


def check_distributions(sdist: Path, wheel: Path) -> None:
    """The wheel carries the package only; the sdist also what its test suite needs (data, measurement scripts)."""
    with zipfile.ZipFile(wheel) as archive:
        stray = [name for name in archive.namelist() if "/scripts/" in name or name.startswith("tests/")]
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    lacking = [
        part
        for part in ("/benchmarks/scripts/device_check.sh", "/tests/data/coco/")
        if not any(part in n for n in names)
    ]
    if stray or lacking:
        raise SystemExit(f"distributions: wheel holds {stray[:3]}, sdist lacks {lacking}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/install-matrix"), help="scratch folder")
    parser.add_argument("--lines", help="comma-separated subset, e.g. base,model (default: all)")
    args = parser.parse_args()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "fixtures").mkdir(parents=True)
    started = time.perf_counter()
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], check=True, capture_output=True)
    wheel = next(dist.glob("poet_edge-*.whl"))
    sdist = next(dist.glob("poet_edge-*.tar.gz"))
    print(f"built {sdist.name} and, from it, {wheel.name} in {time.perf_counter() - started:.0f} s", flush=True)
    check_distributions(sdist, wheel)
    make_fixtures(work / "fixtures")
    wanted = set(args.lines.split(",")) if args.lines else None
    rows: list[dict[str, object]] = []
    for line in lines(work / "fixtures"):
        key = line.name.strip("[]")
        if wanted is not None and key not in wanted:
            continue
        venv, cwd = work / f"venv-{key}", work / f"run-{key}"
        cwd.mkdir()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        rows += check_line(line, venv, cwd, wheel)
        shutil.rmtree(venv)
    text = table(rows)
    total = time.perf_counter() - started
    print(f"\nInstall matrix ({total / 60:.1f} min, from {wheel.name}):\n\n{text}\n", flush=True)
    (work / "matrix.md").write_text(text + "\n")
    (work / "matrix.json").write_text(
        json.dumps({"wheel": wheel.name, "total_s": round(total), "rows": rows}, indent=1)
    )
    return 1 if any(row["failures"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

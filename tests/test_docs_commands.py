"""Every command in a fenced ``bash`` block of README.md and docs/*.md runs, with its
placeholders filled by this test's own data (a tiny trained model and checkpoint, synthetic DICOM
in the demo's patient-folder layout, keys, a bundle): documentation cannot drift from the code.

A command runs in one shared work folder (so ``edgemed build ... -o out/`` feeds the commands
after it), with a timeout, and must exit 0. Commands too slow for the default run are in ``SLOW``
(run by ``pytest -m slow``); commands that cannot run here are in ``SKIP``, each with its reason.
Both tables must name commands the docs still show (a stale entry fails), and every documented
command is in exactly one of: the default run, ``SLOW``, ``SKIP``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
TIMEOUT_S = 300
SLOW_TIMEOUT_S = 1800  # bench --peers / --processes 3 ran over 300 s on 2 cores at load 13-20

SKIP: dict[str, str] = {
    "pip install -e '.[test]' -c constraints.txt && pytest":
        "the whole test suite, of which this test is part; .ci/run runs this line in a fresh venv",
    "edgemed search -m \"monai:DenseNet121 spatial_dims=2 in_channels=1 out_channels=2\" "
    "--weights w.pt --train data/train --val data/val --input 1x1x224x224 "
    "--storage postgresql://user@db/edgemed --study-name ward7 --trials 100 --out s3":
        "needs a PostgreSQL server and 100 DenseNet-121 trials; the storage option is the same "
        "Optuna URL the --demo searches use with SQLite (tests/test_search.py)",
    "pip install 'edgemed-runtime[node]'":
        "installs into the test venv (the node extra is already in it); tests/backends' fresh-venv "
        "test installs ./runtimes the documented way",
    "edgemed-run serve node.toml":
        "a server that runs until SIGTERM; tests/node/ starts and stops it",
    "edgemed-run run out/model data/SYN000P0000":
        "needs a 3D volume model and a synthetic series folder (docs/volumes.md, another "
        "helper's); tests/volumes/test_build_volume.py runs edgemed-run run on a series folder",
    "edgemed predict out/model data/SYN000P0000 --seg-out segs/":
        "needs a 3D segmentation model and a series folder (docs/volumes.md); "
        "tests/segmentation/test_build_segmentation.py runs edgemed predict --seg-out on a trained "
        "3D UNet and reads the SEGs back",
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu":
        "downloads from the PyTorch index (nothing here reaches a network); the test venv holds "
        "that CPU wheel",
    "pip install -e '.[executorch,litert]' -c constraints.txt":
        "installs into the test venv; .ci/run's mobile step installs these extras the same way",
    "python -m venv .venv-litert && .venv-litert/bin/pip install -r constraints-litert.txt":
        "a 2 GB converter venv (jax, transformers); .ci/run makes it with EDGEMED_CI_LITERT=1",
    "edgemed-run serve node.toml --redeliver":
        "a server that runs until SIGTERM; tests/node/ covers the dead-letter redelivery",
}

SLOW: dict[str, str] = {
    "pip install -e . -c constraints.txt && edgemed demo":
        "the full demo (minutes); run without the pip install, which the test venv has done",
    "edgemed release edgemed.toml":
        "a whole release (build, seal, device check in a fresh process) of the tiny model",
    "edgemed registry list --db release/registry.sqlite": "reads the release above",
    "edgemed search --demo --trials 20 --out search-demo": "20 training trials",
    "edgemed bench out/ --peers": "quantizes and times three peer models (minutes on 2 loaded cores)",
    "edgemed bench out/ --backend openvino --batch 1,4,8 --threads 2 --runs 100 --processes 3":
        "3 cold-start processes x 3 batch sizes x 100 runs",
    "edgemed bench out/ --with mobile-out/ --json --save bench.json --enforce-budget":
        "a benchmark of two artifacts (budgets enforced: the tiny model is far under them)",
    "edgemed report bench.json -o report/": "reads the bench.json the command above saves",
    "edgemed build --model mypkg.nets:make_net --weights ckpt.pt --input 1x1x224x224 "
    "--calib data/calib/ --target ~/my-targets/my-board.toml -o my-board-out/":
        "a second build (the README's build command runs by default)",
    "edgemed search --demo --strategy anneal --objective size --out s2": "a search of its own",
}

# documented placeholder -> what this test gives instead ({w}: the work folder)
PLACEHOLDERS: tuple[tuple[str, str], ...] = (
    ("mypkg.nets:make_net", "tests.helpers.tiny_models:make_net"),
    ("1x1x224x224", "1x1x16x16"),
    ("mobile-out/", "out/reference/"),  # a second artifact to compare with: the FP32 reference
)
# (``~`` is the work folder's home/: HOME is set there, so ~/my-targets needs no placeholder)

PROJECT = """
[model]
source = "tests.helpers.tiny_models:make_net"
weights = "ckpt.pt"
input = [1, 1, 16, 16]
labels = ["no_lesion", "lesion"]

[data]
dicom = "data/val"
split = [0.5, 0.25, 0.25]

[preprocess]
window = [40, 400]

[release]
family = "docs-ct"
version = "0.1.0"
counter = 1
targets = ["cpu-x86"]
out = "release"

[signing]
publisher_key = "publisher.key"
publisher_pub = "publisher.pub"
devices = ["device.pub"]
verify_device_key = "device.key"

[bench]
enabled = false
"""


@dataclass(frozen=True)
class Command:
    """One documented command: its text (comments dropped, lines joined), file and line."""

    text: str
    doc: str
    line: int

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def documented_commands() -> list[Command]:
    """Every command of every fenced ``bash`` block, in document order."""
    out: list[Command] = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        in_bash, pending, start = False, "", 0
        for n, raw in enumerate(lines, start=1):
            if raw.startswith("```"):
                in_bash = (not in_bash) and raw.strip() == "```bash"
                continue
            if not in_bash:
                continue
            text = _strip_comment(raw)
            if not pending:
                start = n
            if text.endswith("\\"):
                pending += text[:-1].strip() + " "
                continue
            text = " ".join((pending + text.strip()).split())
            pending = ""
            if text:
                out.append(Command(text, doc.relative_to(REPO).as_posix(), start))
    return out


COMMANDS = documented_commands()
SETUP = [c for c in COMMANDS if c.text.startswith(("edgemed keys generate", "edgemed bundle "))]
"""Run once, in this order, by the work-folder fixture (they make the keys and the bundle)."""
DEFAULT = [c for c in COMMANDS if c.text not in SKIP and c.text not in SLOW and c not in SETUP]


def test_docs_have_commands_and_the_tables_are_current() -> None:
    texts = {c.text for c in COMMANDS}
    assert len(COMMANDS) >= 20 and len(DEFAULT) >= 10 and len(SETUP) == 3
    stale = [t for t in (*SKIP, *SLOW) if t not in texts]
    assert not stale, f"listed in SKIP/SLOW but no longer in the docs: {stale}"
    assert not set(SKIP) & set(SLOW)
    assert all(reason.strip() for reason in (*SKIP.values(), *SLOW.values()))


def _fill(text: str, work: Path) -> str:
    for doc, ours in PLACEHOLDERS:
        text = text.replace(doc, ours.format(w=work))
    return text


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ, HOME=str(work / "home"), ORT_DISABLE_TELEMETRY="1", CI="true",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
               EDGEMED_REGISTRY=str(work / "home" / "registry.db"), COLUMNS="200")
    return env


def run_documented(cmd: Command, work: Path, *, timeout: float = TIMEOUT_S
                   ) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (placeholders filled) with bash in ``work``; fail with its output unless 0."""
    text = _fill(cmd.text, work)
    proc = subprocess.run(["bash", "-c", text], cwd=work, env=_env(work), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{cmd}\n(ran: {text})\nexit {proc.returncode}\n"
                                  f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, trained_tiny, tiny_artifact) -> Path:
    """The work folder: ckpt.pt; data/calib (patient folders, no labels), data/val (with
    labels.csv), study/IM0001.dcm, IM0001.dcm, scans/; out/ (a built artifact, rebuilt by the
    README's build command); keys and model.edgemed; my-board.toml; edgemed.toml."""
    import torch

    from edgemed.data.synthetic import make_dataset

    w = tmp_path_factory.mktemp("docs")
    torch.save(trained_tiny.state_dict(), w / "ckpt.pt")
    make_dataset(w / "data" / "val", n_patients=6, slices_per_patient=8, size=32, seed=0)
    shutil.copytree(w / "data" / "val", w / "data" / "calib", ignore=shutil.ignore_patterns("*.csv"))
    first = sorted((w / "data" / "val").rglob("*.dcm"))[0]
    for dest in (w / "study" / "IM0001.dcm", w / "IM0001.dcm", w / "scans" / "IM0001.dcm"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, dest)
    shutil.copytree(tiny_artifact.path, w / "out")
    (w / "home" / "my-targets").mkdir(parents=True)
    profile = (REPO / "targets" / "cpu-x86.toml").read_text()
    (w / "home" / "my-targets" / "my-board.toml").write_text(
        re.sub(r'(?m)^name\s*=\s*"cpu-x86"', 'name = "my-board"', profile, count=1))
    (w / "edgemed.toml").write_text(PROJECT)
    for c in SETUP:  # the keys and the bundle, made by the documented commands themselves
        run_documented(c, w)
    assert (w / "model.edgemed").is_file()
    return w


@pytest.mark.parametrize("cmd", DEFAULT, ids=[f"{c.doc}:{c.line}" for c in DEFAULT])
def test_documented_command_runs(cmd: Command, work: Path) -> None:
    run_documented(cmd, work)


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.text in SLOW],
                         ids=[f"{c.doc}:{c.line}" for c in COMMANDS if c.text in SLOW])
def test_slow_documented_command_runs(cmd: Command, work: Path) -> None:
    text = cmd.text.split("&&", 1)[1].strip() if cmd.text.startswith("pip install") else cmd.text
    run_documented(Command(text, cmd.doc, cmd.line), work, timeout=SLOW_TIMEOUT_S)

"""Several processes (gloo on the CPU, torch's own launcher): the same bytes as one process for
reconstruct and score, DDP training that follows one process, two "nodes" on 127.0.0.1, a
killed rank that leaves its finished images behind, and one-line rendezvous errors."""

import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dvc_project import ENV, REPO, make_project, run_in, set_params, stale_stages

from ddad.diffusion import distributed
from ddad.params import ParamsError, parse_params, validate

# 70 training images: the feature bank and the typical map take two UNet batches each, the
# 42 test and held-out images 21 reconstruction batches and two feature batches
SHARDED = {
    "data": {"synthetic": {"seed": 0, "train": 72, "test_good": 30, "test_defect": 10}},
    "score": {"reference_images": 40},
}
SLOW_RECONSTRUCT = {
    "reconstruct": {"sampler": "ddpm", "timesteps": 30},
    "score": {"map": "reconstruction"},
}
STAGE_ENV = ENV | {"PYTHONPATH": str(REPO)}


def _dist(**values: object) -> dict:
    defaults = {"nproc_per_node": 1, "nnodes": 1, "rdzv_endpoint": "", "timeout_s": 60}
    return {"dist": defaults | values}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stage(project: Path, stage: str, node_rank: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}", "stripes"],
        cwd=project,
        env=STAGE_ENV | {distributed.NODE_RANK_ENV: str(node_rank)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def _ok(project: Path, stage: str) -> str:
    code, err = _finished(_stage(project, stage))
    assert code == 0, err[-3000:]
    return err


def _recon_arrays(project: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every stored reconstruction result."""
    found = {}
    for path in sorted((project / "runs" / "stripes" / "recon").glob("*/*.npz")):
        with np.load(path) as data:
            found[path.name] = {k: data[k] for k in data.files}
    return found


def _same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(np.array_equal(a[k][f], b[k][f]) for f in a[k])
        for k in a
    )


def _copy(project: Path, to: Path, *changes: dict) -> Path:
    shutil.copytree(project, to, symlinks=True)
    set_params(to, SHARDED, *changes)
    return to


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The tiny project run up to score@stripes by one process."""
    project = make_project(tmp_path_factory.mktemp("single") / "project", SHARDED)
    run_in(project, "dvc", "repro", "score@stripes")
    return project


def test_two_ranks_reconstruct_and_score_the_same_bytes_and_only_training_depends_on_dist(
    single, tmp_path
):
    project = _copy(single, tmp_path / "two", _dist(nproc_per_node=2))
    trainings = {"check_params", "train@stripes", "denoiser@stripes"}
    assert stale_stages(project) - stale_stages(single) == trainings
    shutil.rmtree(project / "runs" / "stripes")
    assert "2 process(es)" in _ok(project, "reconstruct")
    _ok(project, "score")
    assert _same_arrays(_recon_arrays(project), _recon_arrays(single))
    for name in ("scores.csv", "maps.npz"):
        produced = project / "runs" / "stripes" / "score" / name
        assert produced.read_bytes() == (single / "runs" / "stripes" / "score" / name).read_bytes()


@pytest.mark.slow
def test_ddp_training_on_two_ranks_follows_one_process(single, tmp_path):
    """Same global batch, gradients averaged by DDP: the weights agree to 1e-5 (2 steps here;
    measured 4e-7), the logged loss to 1e-6 relative."""
    project = _copy(single, tmp_path / "ddp", _dist(nproc_per_node=2))
    _ok(project, "train")
    model = Path("models", "trained", "stripes", "model.pt")
    ours, theirs = (torch.load(p / model, weights_only=True) for p in (project, single))
    assert ours.keys() == theirs.keys()
    for name, weight in theirs.items():
        torch.testing.assert_close(ours[name], weight, rtol=0, atol=1e-5, msg=name)
    assert any(not torch.equal(ours[n], theirs[n]) for n in ours)  # two ranks really ran
    curve = Path("plots", "train", "stripes.json")
    ours_curve, theirs_curve = (yaml.safe_load((p / curve).read_text()) for p in (project, single))
    assert [r["loss"] for r in ours_curve] == pytest.approx([r["loss"] for r in theirs_curve], 1e-6)


@pytest.mark.slow
def test_two_nodes_on_localhost_meet_and_reconstruct_the_same_bytes(single, tmp_path):
    endpoint = f"127.0.0.1:{_free_port()}"
    project = _copy(single, tmp_path / "nodes", _dist(nnodes=2, rdzv_endpoint=endpoint))
    shutil.rmtree(project / "runs" / "stripes")
    nodes = [_stage(project, "reconstruct", node_rank) for node_rank in (0, 1)]
    for node in nodes:
        code, err = _finished(node)
        assert code == 0, err[-3000:]
    assert _same_arrays(_recon_arrays(project), _recon_arrays(single))


def _rank_pid(project: Path, rank: int) -> int | None:
    """The pid of the worker process of ``rank`` running in ``project``, if any."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.joinpath("cwd").resolve() != project.resolve():
                continue
            environ = proc.joinpath("environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_a_killed_rank_ends_in_one_line_and_dvc_repro_finishes_only_the_missing_images(
    single, tmp_path
):
    project = _copy(single, tmp_path / "killed", SLOW_RECONSTRUCT, _dist(nproc_per_node=2))
    shutil.rmtree(project / "runs" / "stripes")
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "reconstruct@stripes"],
        cwd=project,
        env=STAGE_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    # train@stripes runs first (dist is its parameter); its results are not in runs/
    while len(_recon_arrays(project)) < 6 or _rank_pid(project, 1) is None:
        assert repro.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(_rank_pid(project, 1), signal.SIGKILL)
    code, err = _finished(repro)
    assert code != 0
    found = re.findall(r"error: rank 1 \(pid \d+\) was killed by SIGKILL; [^\n]*dvc repro", err)
    assert len(found) == 1, err[-3000:]
    kept = {p: p.stat().st_mtime_ns for p in (project / "runs").glob("stripes/recon/*/*.npz")}
    assert 6 <= len(kept) < 42
    finish = run_in(project, "dvc", "repro", "reconstruct@stripes")
    assert f"42 images ({len(kept)} already done)" in finish.stderr
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in kept.items())
    assert len(_recon_arrays(project)) == 42


def _threads_of_a_rank() -> int:
    """A launched rank's torch thread count once it has joined the group."""
    with distributed.process_group(torch.device("cpu")):
        return torch.get_num_threads()


CORES = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    "omp_num_threads, expected", [(None, max(1, CORES // 2)), ("2", min(2, CORES))]
)
def test_each_of_two_ranks_computes_on_half_the_cores_unless_omp_num_threads_says(
    monkeypatch, omp_num_threads, expected
):
    """Each rank would otherwise start torch's full thread count, and two ranks would fight for
    the same cores. (torch takes OMP_NUM_THREADS up to the cores there are.)"""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    if omp_num_threads:
        monkeypatch.setenv("OMP_NUM_THREADS", omp_num_threads)
    launch = distributed.Launch(nproc_per_node=2)
    threads = distributed.launch(launch, _threads_of_a_rank, [], "nothing to resume")
    assert threads == {0: expected, 1: expected}


def _bare_project(folder: Path, **dist: object) -> Path:
    """Only a params.yaml: the rendezvous fails before a stage reads anything else."""
    folder.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dist"] |= dist
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def _one_line_error(project: Path, node_rank: int) -> str:
    started = time.monotonic()
    code, err = _finished(_stage(project, "reconstruct", node_rank), timeout=60)
    assert code == 2 and time.monotonic() - started < 30
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def _rendezvous_error(folder: Path, endpoint: str, node_rank: int) -> str:
    """The one line of a node of two that cannot meet the other at ``endpoint``."""
    project = _bare_project(folder, nnodes=2, rdzv_endpoint=endpoint, timeout_s=2)
    err = _one_line_error(project, node_rank)
    assert f"node {node_rank} could not join the others at {endpoint}" in err
    return err


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        err = _rendezvous_error(tmp_path / "p", f"127.0.0.1:{taken.getsockname()[1]}", 0)
    assert "address already in use" in err


@pytest.mark.slow
def test_an_unreachable_node_0_is_one_line_within_the_timeout(tmp_path):
    err = _rendezvous_error(tmp_path / "p", f"127.0.0.1:{_free_port()}", 1)  # nobody listens
    assert "dist.timeout_s = 2" in err


@pytest.mark.slow
def test_an_error_in_a_rank_is_its_own_one_line(tmp_path):
    project = _bare_project(tmp_path / "p", nproc_per_node=2)  # no trained model there
    err = _one_line_error(project, node_rank=0)
    assert re.fullmatch(r"error: rank [01] failed: models/trained/stripes: no trained .*\n", err)


def _params(**dist: object) -> dict:
    params = parse_params((REPO / "params.yaml").read_text())
    changed = copy.deepcopy(params)
    changed["dist"] |= dist
    return changed


@pytest.mark.parametrize(
    "dist, key",
    [
        ({"nnodes": 2}, "dist.rdzv_endpoint"),
        ({"nnodes": 2, "rdzv_endpoint": "node0"}, "dist.rdzv_endpoint"),
        ({"nproc_per_node": 0}, "dist.nproc_per_node"),
        ({"nproc_per_node": 32}, "train.batch_size"),
    ],
)
def test_dist_settings_are_checked_with_the_key_to_fix(dist, key):
    with pytest.raises(ParamsError) as caught:
        validate(_params(**dist))
    assert caught.value.key == key


def test_one_process_maps_every_batch_in_order_without_a_group():
    assert not torch.distributed.is_initialized()
    assert distributed.share([1, 2, 3]) == [1, 2, 3]
    assert distributed.sharded_map(lambda x: x * 10, [1, 2, 3]) == [10, 20, 30]
    assert distributed.average_across_ranks(2.5) == 2.5

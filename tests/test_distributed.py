"""torch.distributed helpers, DDP training and sharded pool scoring, on the CPU with gloo.

The multi-process tests start 2 processes once (``torch.multiprocessing.spawn``, the same
environment variables torchrun sets, 1 thread each) and run every scenario in them; each test
then checks one scenario's results. The command-line test runs ``torchrun`` itself.

DDP against a single process: DDP averages the ranks' gradients, and each rank's SSD loss is
normalised by the positives of ITS images (Eq. 6's N). The average equals the global-batch
gradient when every rank has the same number of positives, so the exact comparison trains on
images that have exactly 4 positive anchors each (checked), with the "eff" head (no random
noise in the loss) and frozen BatchNorm (per-rank batch statistics are the other known
difference). Under those conditions the only difference left is float32 summation order, and
the tolerance is stated for that: after 4 steps every weight within 1e-5 x the largest weight
update of the run, and the relative L2 difference of the updates below 1e-5 (measured:
7e-9 absolute against updates up to 1.4e-2, i.e. 5e-7; a wrong batch slice or missing
gradient averaging changes the update by O(1)). On the demo data with the gmm head and BatchNorm the update differed by ~5 % (relative L2) in
a 4-step probe: the documented price of per-rank normalisation, noise and batch statistics.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import Dataset
from torchvision.ops.misc import FrozenBatchNorm2d

from almdn.acquisition.scoring import detections_frame, image_scores, kept_pool_detections
from almdn.acquisition.selection import select_batch
from almdn.data.coco import CocoDetectionDataset
from almdn.engine import distributed
from almdn.engine.checkpoint import save_checkpoint
from almdn.engine.inference import predict
from almdn.engine.train import TrainConfig, TrainingDiverged, _ResumableSampler, train
from almdn.models import build_model

WORLD = 2
BUDGET = 10


# ----------------------------------------------------------------------------- fixtures
class _EqualPositives(Dataset):
    """128 px images with one 32 px square each, placed where it matches exactly 4 anchors of
    ``ssd_small`` (positions 8 mod 16), random class 1..3 and random background."""

    def __init__(self, size: int = 24, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        grid = torch.arange(8, 89, 16)
        self.items = []
        for i in range(size):
            x, y = grid[torch.randint(len(grid), (2,), generator=g)].tolist()
            label = int(torch.randint(1, 4, (1,), generator=g))
            image = torch.rand(3, 128, 128, generator=g) * 0.5
            image[:, y : y + 32, x : x + 32] = torch.tensor([0.3, 0.6, 0.9])[[label - 1, label % 3, (label + 1) % 3], None, None]
            self.items.append((image, {"boxes": torch.tensor([[x, y, x + 32.0, y + 32.0]]), "labels": torch.tensor([label]), "image_id": i}))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        image, target = self.items[index]
        return image.clone(), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in target.items()}


def _freeze_batchnorm(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)


def _exact_model():
    torch.manual_seed(0)
    model = build_model("ssd_small", 4, head="eff")
    _freeze_batchnorm(model)
    return model


def _exact_config() -> TrainConfig:
    # No augmentation: exactness needs every image to keep its 4 positive anchors (a crop or a
    # zoom-out changes them, and each rank then normalises by a different count).
    return TrainConfig(iterations=4, batch_size=8, lr=0.01, warmup_iters=2, milestones=(3,), grad_clip_norm=10.0, checkpoint_every=100, log_every=1, augment="none")


def _demo_model(num_classes: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("ssd_small", num_classes, head="gmm")


def _resume_config(**kw) -> TrainConfig:
    base = TrainConfig(iterations=6, batch_size=4, lr=0.01, warmup_iters=2, milestones=(4,), checkpoint_every=3, log_every=1)
    return TrainConfig(**{**base.__dict__, **kw})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, root: str, demo_train: str) -> None:
    """One of the 2 ranks: every multi-process scenario, results to ``root/rank<r>.pt``."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    root = Path(root)
    ctx = distributed.init_from_env("cpu")
    out: dict = {"context": (ctx.rank, ctx.world_size, ctx.backend, str(ctx.device))}

    parts = distributed.all_gather_tensors(torch.full((rank + 1, 3), float(rank)))
    out["gather"] = [(tuple(p.shape), p.unique().tolist()) for p in parts]
    out["objects"] = distributed.all_gather_objects({"rank": rank})
    out["mean"] = distributed.all_reduce_mean(torch.tensor([float(rank), 2.0])).tolist()
    out["any"] = (distributed.all_reduce_any(rank == 1), distributed.all_reduce_any(False))

    train(_exact_model(), _EqualPositives(), _exact_config(), out_dir=root / "exact", device="cpu", progress=False)

    demo = CocoDetectionDataset(demo_train)
    classes = len(demo.classes)
    train(_demo_model(classes), demo, _resume_config(), out_dir=root / "straight", progress=False)
    # rank 1 alone cancels after step 3: both ranks must stop there
    cut = train(_demo_model(classes), demo, _resume_config(), out_dir=root / "resumed", progress=False, callback=lambda i, n, e: not (rank == 1 and i == 3))
    out["interrupted_at"] = cut.iterations
    train(_demo_model(classes, seed=123), demo, _resume_config(), out_dir=root / "resumed", progress=False)

    try:
        train(_demo_model(classes), demo, _resume_config(max_loss=1e-6, max_bad_steps=2), progress=False)
        out["diverged"] = None
    except TrainingDiverged as exc:
        out["diverged"] = str(exc)

    # Scoring: the original single-process path on rank 0 against the sharded one.
    model = _demo_model(classes, seed=5).eval()
    reference = None
    threshold = None
    if rank == 0:
        preds = predict(model, demo, batch_size=7)
        # a threshold that leaves ~40 % of the images without a kept detection
        threshold = float(np.quantile([float(p["scores"].max()) for p in preds], 0.4))
        reference = image_scores(detections_frame(preds, demo.image_ids, threshold), demo.image_ids)
    threshold = distributed.all_gather_objects(threshold)[0]  # rank 0's
    pool = kept_pool_detections(model, demo, threshold, batch_size=7, device="cpu")
    out["scoring"] = {"threshold": threshold, "reference": reference, "sharded": image_scores(pool.detections, demo.image_ids), "readable": pool.readable}
    out["shard"] = distributed.shard_range(len(demo), 7, rank, WORLD)

    torch.save(out, root / f"rank{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def ddp_run(tiny_demo, tmp_path_factory):
    """Run every 2-process scenario once; the single-process references for the exact run."""
    root = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(root), str(tiny_demo["train_annotations"])), nprocs=WORLD, join=True)
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers
    try:
        single = _exact_model()
        single_result = train(single, _EqualPositives(), _exact_config(), progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "ranks": ranks, "single": single, "single_history": single_result.history}


# ----------------------------------------------------------------- single-process units
def test_rank_slices_are_the_global_batches_and_resume_mid_stream():
    global_batch, batches = 6, 5
    stream = iter(_ResumableSampler(10, seed=1))
    expected = [[next(stream) for _ in range(global_batch)] for _ in range(batches)]
    slices = []
    for r in range(3):
        it = iter(distributed.RankSliceSampler(_ResumableSampler(10, seed=1), global_batch, r, 3))
        slices.append([[next(it) for _ in range(2)] for _ in range(batches)])
    assert [sum((slices[r][b] for r in range(3)), []) for b in range(batches)] == expected
    # resumed at iteration 2: rank 1 continues with its slice of global batch 2
    it = iter(distributed.RankSliceSampler(_ResumableSampler(10, seed=1, start=2 * global_batch), global_batch, 1, 3))
    assert [next(it) for _ in range(4)] == expected[2][2:4] + expected[3][2:4]
    # a finite stream's last partial batch is cut the same way
    assert list(distributed.RankSliceSampler(range(7), 4, 1, 2)) == [2, 3, 6]
    with pytest.raises(ValueError, match="cannot be split evenly over 4 processes"):
        distributed.RankSliceSampler(range(10), 6, 0, 4)


@pytest.mark.parametrize("size", [0, 1, 59, 60, 61])
@pytest.mark.parametrize("batch_size", [1, 7, 8])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_ranges_are_contiguous_whole_batches_covering_the_pool(size, batch_size, world):
    ranges = [distributed.shard_range(size, batch_size, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(start % batch_size == 0 for start, _ in ranges)
    batches = [-(-(stop - start) // batch_size) for start, stop in ranges]
    assert max(batches) - min(batches) <= 1


def test_without_a_process_group_every_helper_is_the_single_process_identity(monkeypatch):
    for var in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    ctx = distributed.init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device, ctx.is_main) == (0, 1, None, torch.device("cpu"), True)
    assert not distributed.is_active() and not distributed.launched_by_torchrun()
    t = torch.arange(6.0).view(3, 2)
    assert distributed.all_gather_tensors(t)[0] is t and distributed.all_reduce_mean(t) is t
    assert distributed.all_gather_objects("x") == ["x"]
    assert distributed.all_reduce_any(True) and not distributed.all_reduce_any(False)
    distributed.barrier()
    distributed.shutdown()


# ------------------------------------------------------------------ two processes (gloo)
@pytest.mark.slow
def test_collectives_gather_variable_sizes_in_rank_order(ddp_run):
    for r, out in enumerate(ddp_run["ranks"]):
        assert out["context"] == (r, WORLD, "gloo", "cpu")
        assert out["gather"] == [((1, 3), [0.0]), ((2, 3), [1.0])]
        assert out["objects"] == [{"rank": 0}, {"rank": 1}]
        assert out["mean"] == [0.5, 2.0]
        assert out["any"] == (True, False)


@pytest.mark.slow
def test_ddp_training_matches_single_process_training_on_the_global_batch(ddp_run):
    # Precondition of exactness: every image has the same number of positive anchors.
    model, data = _exact_model(), _EqualPositives()
    images, targets = zip(*(data[i] for i in range(len(data))))
    image_list, targets, _ = model.preprocess(list(images), list(targets))
    anchors = model.anchor_generator(image_list, model.backbone(image_list.tensors))
    assert set((model.match(targets, anchors)[1] > 0).sum(1).tolist()) == {4}

    initial = _exact_model().state_dict()
    state = torch.load(ddp_run["root"] / "exact" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 4 and state["world_size"] == WORLD
    names = [k for k, v in initial.items() if v.is_floating_point()]
    single = ddp_run["single"].state_dict()
    update = torch.cat([(single[k] - initial[k]).flatten() for k in names])
    difference = torch.cat([(state["state_dict"][k] - single[k]).flatten() for k in names])
    assert float(difference.abs().max()) <= 1e-5 * float(update.abs().max())
    assert float(difference.norm()) <= 1e-5 * float(update.norm())
    ddp_losses = [h["loss"] for h in state["history"]]
    single_losses = [h["loss"] for h in ddp_run["single_history"]]
    assert len(ddp_losses) == 4 and ddp_losses == pytest.approx(single_losses, rel=1e-5)
    assert len(set(single_losses)) == 4  # four different batches, not one repeated


@pytest.mark.slow
def test_resumed_ddp_run_reproduces_the_uninterrupted_one_exactly(ddp_run):
    root = ddp_run["root"]
    assert [out["interrupted_at"] for out in ddp_run["ranks"]] == [3, 3]  # rank 1 cancelled, both stopped
    straight = torch.load(root / "straight" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(root / "resumed" / "checkpoint.pt", weights_only=True)
    assert straight["iteration"] == resumed["iteration"] == 6
    for name, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(straight["history"]) == strip(resumed["history"])
    states = resumed["rank_rng_states"]
    assert len(states) == WORLD and not torch.equal(states[0], states[1])  # each rank its own noise
    assert (root / "resumed" / "history.csv").read_text().count("\n") == 7


@pytest.mark.slow
def test_ddp_divergence_guard_stops_every_rank_with_one_sentence(ddp_run):
    messages = [out["diverged"] for out in ddp_run["ranks"]]
    assert messages[0] is not None and messages[0] == messages[1]
    assert "for 2 steps in a row at iteration 1" in messages[0]


@pytest.mark.slow
def test_sharded_scoring_gives_the_single_process_scores_and_top_b_exactly(ddp_run):
    rank0, rank1 = (out["scoring"] for out in ddp_run["ranks"])
    assert ddp_run["ranks"][0]["shard"] == (0, 28) and ddp_run["ranks"][1]["shard"] == (28, 60)  # 4 and 5 batches of 7
    reference = rank0["reference"]
    assert reference["score"].isna().sum() >= 10 and reference["score"].notna().sum() >= 20  # both kinds of image
    for sharded in (rank0["sharded"], rank1["sharded"]):
        pd.testing.assert_frame_equal(sharded, reference, check_exact=True)
        top = select_batch(sharded.set_index("image_id")["score"], BUDGET).image_ids
        assert top == select_batch(reference.set_index("image_id")["score"], BUDGET).image_ids
    assert rank0["readable"].all() and len(rank0["readable"]) == 60


# ------------------------------------------------------------------ torchrun, end to end
@pytest.mark.slow
def test_torchrun_score_writes_the_single_process_files(tiny_demo, tmp_path):
    from almdn.cli import main

    folder = tmp_path / "pool"
    folder.mkdir()
    for p in sorted((Path(tiny_demo["root"]) / "images" / "train").glob("*.png"))[:30]:
        shutil.copy(p, folder / p.name)
    (folder / "000013b_broken.png").write_bytes(b"\x89PNG truncated")  # mid-pool, in rank 0's shard
    model = _demo_model(10, seed=7).eval()
    save_checkpoint(tmp_path / "model.pt", model)
    # a threshold that leaves ~30 % of the images without a kept detection
    top = [float(p["scores"].max()) for p in predict(model, CocoDetectionDataset(tiny_demo["train_annotations"]).subset(range(30)))]
    threshold = repr(float(np.quantile(top, 0.3)))
    args = ["score", "--checkpoint", str(tmp_path / "model.pt"), "--images", str(folder), "--conf-threshold", threshold, "--batch-size", "4", "--device", "cpu"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers
    try:
        single = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "single")])
    finally:
        torch.set_num_threads(threads)
    assert single.exit_code == 3, single.output  # scored, one unreadable file listed and skipped

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD), "-m", "almdn.cli"]
    run = subprocess.run([*launch, *args, "--out", str(tmp_path / "ddp"), "--workers", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]  # under torchrun the skip is listed, not an exit status
    assert run.stdout.count("Scored 30 images") == 1  # rank 0 alone reports and writes
    assert "Skipped unreadable image: 000013b_broken.png" in run.stderr

    for name in ("images.csv", "detections.csv", "detections.json"):
        assert (tmp_path / "ddp" / name).read_text() == (tmp_path / "single" / name).read_text(), name
    images = pd.read_csv(tmp_path / "ddp" / "images.csv")
    assert len(images) == 30 and images["score"].notna().sum() >= 5 and images["score"].isna().sum() >= 1
    assert not math.isnan(images["score"].iloc[0])

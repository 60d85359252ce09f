"""Two training steps through verl 0.9.1's real v1 path on CPU.

Real: local Ray and TransferQueue, the trainer class verl's ``main_ppo`` picks for
``trainer.v1.trainer_mode=calibadv`` (built by its own constructor, tokenizer, dataloader and
replay buffer), verl's ``AgentLoopManagerTQ`` / ``AgentLoopWorkerTQ`` actor running our
registered agent loop, verl's ``LLMServerClient`` and load balancer, a ``RewardLoopWorker``
actor scoring with our reward, our retrieval server (FAISS + MiniLM on 127.0.0.1), and the
trainer's own ``_compute_advantage``, ``_compute_metrics`` and ``_save_checkpoint``.

Stand-ins, only where a GPU is needed: the vLLM engine behind the client (scripted turns,
``tests/verl/fakes.py``), the FSDP worker group's ``save_checkpoint`` (writes the files
verl's FSDP checkpoint manager writes), the old-log-prob forward (the rollout's log-probs
are copied, as verl's bypass mode does) and the actor update (skipped).

Each step is what ``PPOTrainer.fit`` does: weight sync (``set_global_steps``), submit a batch,
sample it from the replay buffer, compute advantages and metrics, save, clear the queue.
Against the code before issue 12 it fails: with the old trainer mode at the first check
(verl builds ``ReplayBufferAsync`` and forces ``gen_batch_size`` to 1, because the mode is not
named "sync"; its checkpoints would also carry a TransferQueue snapshot), and with only the
old agent loop in ``_compute_metrics`` (``int(None)``: the rollouts lack ``min_global_steps``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.verl import fakes

pytestmark = pytest.mark.slow

TRAIN_BATCH = 2  # questions per step
GROUP = 3  # rollouts per question: one per scripted variant (fakes.VARIANTS)


class FSDPWorkerGroupCheckpoints:
    """The ``save_checkpoint`` of verl's actor worker group (FSDP engine + checkpoint manager)
    with ``save_contents=[model, optimizer, extra, hf_model]``: shards, the HF copy under
    ``huggingface/``, and the manager's own pruning to ``max_ckpt_to_keep``."""

    def __init__(self, hf_dir: Path) -> None:
        self.hf_dir = hf_dir
        self.previous_saved_paths: list[str] = []

    def save_checkpoint(self, local_path: str, hdfs_path: str | None = None,
                        global_step: int = 0, max_ckpt_to_keep: int | None = None) -> None:
        import shutil

        actor = Path(local_path)
        actor.mkdir(parents=True, exist_ok=True)
        for part in ("model", "optim", "extra_state"):
            torch.save({"step": global_step}, actor / f"{part}_world_size_1_rank_0.pt")
        shutil.copytree(self.hf_dir, actor / "huggingface", dirs_exist_ok=True)
        if max_ckpt_to_keep:
            while len(self.previous_saved_paths) >= max_ckpt_to_keep:
                shutil.rmtree(self.previous_saved_paths.pop(0), ignore_errors=True)
        self.previous_saved_paths.append(str(actor))


def write_world(root: Path) -> dict[str, Path]:
    from calibadv.cli import main
    from calibadv.data.prepare import prepare

    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "contents": f'"{t}"\n{x}'}) + "\n"
                              for i, t, x in fakes.CORPUS))
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"q{n}", "question": q, "golden_answers": [a[2]]})
                          + "\n" for n, (q, a) in enumerate(fakes.WORLD.items())))
    prepare([f"hotpotqa={qa}"], root / "train.parquet")
    for args in (["index", "encode", "--corpus", corpus, "--encoder", "bundled:minilm",
                  "--out", root / "emb.npy"],
                 ["index", "merge", "--shards", root / "emb.npy", "--out", root / "index.faiss"]):
        assert main([str(a) for a in args]) == 0
    return {"corpus": corpus, "index": root / "index.faiss", "train": root / "train.parquet"}


def run_config(make_spec, compose_config, model_dir: Path, train: Path, run_dir: Path,
               url: str) -> Any:
    """verl's composed config for a tiny run, resolved as ``TaskRunnerV1.run`` does."""
    from omegaconf import OmegaConf

    from calibadv.train.verl.overrides import build_overrides

    spec = make_spec(
        "calibadv",
        model={"path": str(model_dir)},
        data={"train": str(train), "val": str(train)},
        training={"batch_size": TRAIN_BATCH, "mini_batch_size": TRAIN_BATCH,
                  "group_size": GROUP, "micro_batch_size": 1, "steps": 3, "save_every": 1,
                  "dump_rollouts_at": [2]},
        agent={"max_turns": 2, "max_tokens_per_turn": 32, "max_response_tokens": 256},
        resources={"gpus": 1, "nodes": 1, "cpus": 7},  # the floor with one storage unit
        verl={"agent_num_workers": 1, "max_ckpt_to_keep": 1, "ppo_max_token_len_per_gpu": 2048},
        verl_overrides=["+algorithm.calibadv.agent.retrieval_retries=0",
                        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
                        "data.dataloader_num_workers=0"],
    )
    config = compose_config(build_overrides(spec, run_dir, url))
    config.transfer_queue.enable = True
    OmegaConf.resolve(config)
    return config, spec


def old_log_probs_from_rollout(tq, batch) -> None:
    """Stands in for ``_compute_old_log_prob`` (an FSDP forward on GPU): the rollout's own
    log-probs as ``old_log_probs``, which is what verl's rollout-correction bypass mode does."""
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                           select_fields=["rollout_log_probs"])
    data["old_log_probs"] = data.pop("rollout_log_probs")
    tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=data)


def queue_rows(tq, batch) -> dict[str, Any]:
    """What the queue holds for ``batch``, padded, in batch order."""
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                           select_fields=["rm_scores", "response_mask", "advantages",
                                          "extra_fields", "uid"])
    extras = data["extra_fields"]
    return {"scores": data["rm_scores"].to_padded_tensor(padding=0.0).sum(-1),
            "mask": data["response_mask"].to_padded_tensor(padding=0),
            "advantages": data["advantages"].to_padded_tensor(padding=0.0),
            "extras": list(extras.tolist() if hasattr(extras, "tolist") else extras),
            "uid": [str(u) for u in data["uid"]]}


def expected_advantages(rows: dict[str, Any], real: list[int], method: dict) -> torch.Tensor:
    """``calibrate`` on the real rollouts of the batch, as the local backend would call it."""
    from calibadv.methods.advantage import CalibConfig, calibrate

    ex = [rows["extras"][i] for i in real]
    adv, _ = calibrate(rows["scores"][real], [e["reward_extra_info"]["format_ok"] for e in ex],
                       rows["mask"][real], [rows["uid"][i] for i in real],
                       [e["turn_spans"] for e in ex], [e["doc_ids"] for e in ex],
                       [e["thinks"] for e in ex], CalibConfig.from_dict(method["calibration"]))
    return adv.float()


def test_two_steps_through_verls_v1_trainer(ray_tq, tmp_path, make_spec, compose_config,
                                            tiny_model_dir):
    import ray
    from ray import cloudpickle
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
    from verl.trainer.ppo.v1 import AgentLoopManagerTQ, get_trainer_cls
    from verl.trainer.ppo.v1.replay_buffer import ReplayBufferAsync

    from calibadv.retrieval.launch import serve_in_thread
    from calibadv.train.verl.trainer import FailFastReplayBuffer, RolloutGroupsFailed

    tq = ray_tq
    t0 = time.perf_counter()
    cloudpickle.register_pickle_by_value(fakes)  # the Ray workers cannot import tests/
    world = write_world(tmp_path)
    run_dir = tmp_path / "run"

    def refill_guard(n: int) -> int:
        raise AssertionError(f"the replay buffer refilled {n} failed groups (async behaviour)")

    with serve_in_thread(world["corpus"], world["index"], "bundled:minilm") as url:
        config, spec = run_config(make_spec, compose_config, tiny_model_dir, world["train"],
                                  run_dir, url)
        trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)

        # -- sync behaviour, as verl's own checks see it
        assert trainer.trainer_mode == "sync" and trainer.registered_mode == "calibadv"
        assert isinstance(trainer.replay_buffer, FailFastReplayBuffer)
        assert not isinstance(trainer.replay_buffer, ReplayBufferAsync)
        assert trainer.replay_buffer.gen_batch_size == TRAIN_BATCH
        trainer._init_tokenizer()
        trainer._init_dataloader()
        trainer._init_resource_pool_mgr()
        assert config.data.get("gen_batch_size") is None  # not forced to 1
        assert trainer.train_dataloader.batch_size == TRAIN_BATCH

        server = ray.remote(fakes.ScriptedVLLMServer).remote(str(tiny_model_dir))
        reward = ray.remote(RewardLoopWorker).remote(config, None)
        trainer.agent_loop_manager = AgentLoopManagerTQ.create(
            config=config, llm_client=fakes.real_llm_client(config, server),
            teacher_client=None, reward_loop_worker_handles=[reward])
        trainer.actor_rollout_wg = FSDPWorkerGroupCheckpoints(tiny_model_dir)
        trainer.replay_buffer.refill_fn = refill_guard
        eos = trainer.tokenizer.eos_token_id

        for step in (1, 2):
            ray.get(server.set_global_steps.remote(step - 1))  # the sync trainer's weight sync
            trainer.global_steps = step
            metrics: dict = {}
            trainer._add_batch_to_generate()
            batch, _ = trainer.replay_buffer.sample(global_steps=step, partition_id="train",
                                                    batch_size=TRAIN_BATCH)
            assert len(batch) == TRAIN_BATCH * GROUP
            if step == 2:  # what _balance_batch does when the batch does not divide evenly
                batch = upsample_batch_to_divisible_size(batch, 4, eos)
            old_log_probs_from_rollout(tq, batch)
            batch = trainer._compute_advantage(batch, metrics)

            rows = queue_rows(tq, batch)
            real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding")]
            pads = [i for i in range(len(batch)) if i not in real]
            assert len(real) == TRAIN_BATCH * GROUP and len(pads) == (2 if step == 2 else 0)
            want = expected_advantages(rows, real, spec.method)
            torch.testing.assert_close(rows["advantages"][real], want)
            assert rows["advantages"][real].abs().sum() > 0  # groups have mixed rewards
            assert rows["advantages"][pads].abs().sum() == 0

            trainer._compute_metrics(batch, metrics, {"gen": 1.0, "adv": 0.1, "step": 2.0},
                                     global_steps=step, epoch=0)
            assert metrics["training/global_step"] == step
            assert metrics["training/off_policy/trajectory_staleness/max"] == 0
            assert metrics["training/off_policy/trajectory_spans/max"] == 1
            formats = [bool(rows["extras"][i]["reward_extra_info"]["format_ok"]) for i in real]
            assert metrics["calibadv/format_rate"] == pytest.approx(sum(formats) / len(real))
            assert "critic/advantages/mean" in metrics and "calibadv/c_mean" in metrics

            trainer._save_checkpoint()
            tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)

    # -- bounded checkpoints: one resumable save, the HF copy of every save, no queue snapshot
    ckpts = run_dir / "verl_checkpoints"
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert not (ckpts / "global_step_1" / "actor").exists()
    assert (ckpts / "global_step_2" / "actor" / "huggingface").is_dir()
    assert not any(ckpts.rglob("transfer_queue"))
    for s in (1, 2):
        assert (run_dir / "checkpoints" / f"step_{s:06d}" / "model.safetensors").exists()
    dump = (run_dir / "rollouts" / "step_000002.jsonl").read_text().splitlines()
    assert len(dump) == TRAIN_BATCH * GROUP  # padding rows are not dumped

    # -- the retrieval server is gone: the next step fails instead of training on survivors
    ray.get(server.set_global_steps.remote(2))
    trainer.global_steps = 3
    trainer._add_batch_to_generate()
    with pytest.raises(RolloutGroupsFailed, match=f"{TRAIN_BATCH} of {TRAIN_BATCH} prompt groups"):
        trainer.replay_buffer.sample(global_steps=3, partition_id="train", batch_size=TRAIN_BATCH)
    print(f"real-path test: {time.perf_counter() - t0:.1f} s")

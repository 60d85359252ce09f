"""Two training steps of verl 0.9.1's own FSDP2 actor worker on CPU (gloo), then a resume.

Run in a fresh process by ``tests/verl/test_fsdp_cpu.py`` (verl modules read the platform when
they are imported, so the CPU platform of :mod:`tests.verl.cpu_platform` must be chosen before
the first verl import, which an earlier test of the same session may already have done).

Real: verl's ``ActorRolloutRefWorker`` (role ``actor``: FSDP2 engine, optimizer, checkpoint
manager) and its critic ``TrainingWorker`` (``FSDPEngineWithValueHead``, loaded through the
plugin's value-head loader with sdpa) on a one-rank gloo process group, the v1 trainer our
plugin registers with its own ``_compute_old_log_prob``, ``_compute_values``,
``_compute_advantage``, ``_update_critic``, ``_update_actor``, ``_compute_metrics``,
``_save_checkpoint`` (``hf_model``: ``actor/huggingface``; ``critic/``) with our ``ExportAndPrune``
callback, ``_validate()`` through verl's agent-loop manager running our loop, verl's
``Tracking`` file logger read back by our log conversion, and ``_load_checkpoint`` with
``resume_mode=auto`` in a second trainer with a fresh worker.

Stand-ins: the vLLM engine behind verl's client (:class:`tests.verl.fakes.ScriptedVLLMServer`)
and the weight sync to it (``set_global_steps``, what the sync trainer's checkpoint manager
reports after ``update_weights``); the Ray worker group is :class:`OneRankGroup` (the worker's
methods called in this process; with one rank verl's dispatch hands the whole batch to rank 0
and its collection returns rank 0's output).

    python tests/verl/fsdp_cpu_steps.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _import_tests_package() -> None:
    """``tests.verl.*`` as in pytest (site-packages may hold an unrelated ``tests``)."""
    pkg = types.ModuleType("tests")
    pkg.__path__ = [str(ROOT / "tests")]
    sys.modules["tests"] = pkg
    sys.path.insert(0, str(ROOT))


_import_tests_package()

from tests.verl import cpu_platform  # noqa: E402  (before any other verl import)

cpu_platform.use_cpu_platform()

TRAIN_BATCH = 2
GROUP = 3


class _Done:
    """What a non-blocking Ray worker-group call returns: ``.get()`` gives the output."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.futures: list[Any] = []  # already computed: ``ray.get(output.futures)`` is a no-op

    def get(self) -> Any:
        return self.value


class OneRankGroup:
    """A worker group of one rank in this process (stand-in for ``RayWorkerGroup``)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def __getattr__(self, name: str) -> Any:
        from verl.single_controller.base.decorator import MAGIC_ATTR

        method = getattr(self.worker, name)
        attrs = getattr(method, MAGIC_ATTR, None)
        if attrs is None:
            raise AttributeError(f"{name} is not a registered worker method")

        def call(*args: Any, **kwargs: Any) -> Any:
            out = method(*args, **kwargs)
            return out if attrs.get("blocking", True) else _Done(out)

        return call


def init_gloo() -> None:
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    dist.init_process_group(backend="gloo", rank=0, world_size=1)


def actor_group(config: Any) -> OneRankGroup:
    from verl.workers.engine_workers import ActorRolloutRefWorker

    worker = ActorRolloutRefWorker(config=config.actor_rollout_ref, role="actor")
    worker.init_model()
    return OneRankGroup(worker)


def critic_group(config: Any) -> OneRankGroup:
    """verl's critic ``TrainingWorker`` (value model: ``FSDPEngineWithValueHead``, which loads
    through the plugin's value-head loader), built from ``config.critic`` as the v1 trainer's
    ``_init_workers`` builds it (``trainer/ppo/v1/trainer_base.py`` ~265-284, ~321-324)."""
    from functools import partial

    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import TrainingWorkerConfig
    from verl.workers.engine_workers import TrainingWorker
    from verl.workers.utils.losses import value_loss

    critic_cfg = omega_conf_to_dataclass(config.critic)
    critic_cfg.engine.infer_max_token_len_per_gpu = critic_cfg.ppo_infer_max_token_len_per_gpu
    critic_cfg.engine.max_token_len_per_gpu = critic_cfg.ppo_infer_max_token_len_per_gpu
    worker = TrainingWorker(config=TrainingWorkerConfig(
        model_type="value_model", model_config=critic_cfg.model, engine_config=critic_cfg.engine,
        optimizer_config=critic_cfg.optim, checkpoint_config=critic_cfg.checkpoint))
    group = OneRankGroup(worker)
    group.reset()
    group.set_loss_fn(partial(value_loss, config=critic_cfg))
    return group


#: verl's critic on the tiny model, with the keys our overrides give StepSearch's critic
#: (``overrides._critic`` / ``_critic_engine``) at CPU sizes, FSDP2 and fp32.
CRITIC = ["critic.enable=true", "critic.strategy=fsdp2", "critic.ppo_mini_batch_size=2",
          "critic.ppo_micro_batch_size_per_gpu=2", "critic.use_dynamic_bsz=true",
          "critic.ppo_max_token_len_per_gpu=2048", "+critic.ppo_infer_max_token_len_per_gpu=2048",
          "+critic.fsdp.use_dynamic_bsz=true", "+critic.fsdp.micro_batch_size_per_gpu=2",
          "+critic.fsdp.infer_micro_batch_size_per_gpu=2",
          "+critic.model.override_config.attn_implementation=sdpa",
          "critic.model.enable_gradient_checkpointing=false", "critic.fsdp.model_dtype=fp32",
          "critic.fsdp.dtype=float32", "critic.optim.lr=1e-3", "trainer.max_critic_ckpt_to_keep=1"]


def cpu_config(out: Path, world: dict[str, Path], model_dir: Path, url: str,
               resume: str = "disable") -> tuple[Any, Any]:
    from omegaconf import OmegaConf

    from calibadv.train.verl.overrides import build_overrides
    from tests.verl.conftest import compose, paper_spec

    spec = paper_spec(
        "calibadv", model={"path": str(model_dir), "dtype": "float32"},
        data={"train": str(world["train"]), "val": str(world["train"]), "val_size": 2},
        training={"batch_size": TRAIN_BATCH, "mini_batch_size": TRAIN_BATCH,
                  "group_size": GROUP, "micro_batch_size": 2, "steps": 2, "save_every": 1,
                  "val_every": 1, "dump_rollouts_at": [], "lr": 1e-3},
        agent={"max_turns": 2, "max_tokens_per_turn": 32, "max_response_tokens": 256},
        resources={"gpus": 1, "nodes": 1, "cpus": 7},
        verl={"agent_num_workers": 1, "max_ckpt_to_keep": 1, "ppo_max_token_len_per_gpu": 2048,
              "resume_mode": resume, "loggers": ["console", "file"]},
        verl_overrides=["+algorithm.calibadv.agent.retrieval_retries=0",
                        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
                        "data.dataloader_num_workers=0", "reward.num_workers=1",
                        # the CPU run: verl's FSDP2 on gloo (FSDP1 needs a GPU)
                        "actor_rollout_ref.actor.strategy=fsdp2",
                        "trainer.device=cpu",
                        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
                        "actor_rollout_ref.actor.fsdp_config.model_dtype=fp32",
                        "actor_rollout_ref.actor.fsdp_config.dtype=float32",
                        f"critic.model.path={model_dir}", *CRITIC],
    )
    config = compose(build_overrides(spec, out / "run", url))
    config.transfer_queue.enable = True
    OmegaConf.resolve(config)
    return config, spec


def make_trainer(config: Any, server: Any, loops: bool = True) -> Any:
    """The trainer verl's ``main_ppo`` builds for our mode, wired as ``init()`` wires it,
    with the worker group above and (``loops``) verl's reward-loop manager and agent-loop
    manager on Ray."""
    from verl.experimental.reward_loop import RewardLoopManager
    from verl.trainer.ppo.v1 import AgentLoopManagerTQ, get_trainer_cls

    from tests.verl import fakes

    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer._init_dump_executor()
    trainer._init_resource_pool_mgr()  # read by _compute_metrics (GPU count for throughput)
    trainer.actor_rollout_wg = actor_group(config)
    trainer.ref_policy_wg = trainer.actor_rollout_wg
    trainer.use_critic = True  # what need_critic(config) says for StepSearch's gae
    trainer.critic_wg = critic_group(config)
    if loops:
        trainer.reward_loop_manager = RewardLoopManager(config=config, rm_resource_pool=None)
        trainer.agent_loop_manager = AgentLoopManagerTQ.create(
            config=config, llm_client=fakes.real_llm_client(config, server),
            teacher_client=None, reward_loop_worker_handles=trainer.get_reward_handles())
    return trainer


def one_step(trainer: Any, server: Any, step: int) -> dict[str, Any]:
    """What the sync trainer's ``fit`` does for one step (weight sync stood in)."""
    import ray
    import transfer_queue as tq

    ray.get(server.set_global_steps.remote(step - 1))  # the weight sync's version bump
    trainer.global_steps = step
    metrics: dict[str, Any] = {}
    trainer._add_batch_to_generate()
    batch, _ = trainer.replay_buffer.sample(global_steps=step, partition_id="train",
                                            batch_size=TRAIN_BATCH)
    assert len(batch) == TRAIN_BATCH * GROUP, len(batch)
    batch = trainer._compute_old_log_prob(batch, metrics)
    batch = trainer._compute_values(batch, metrics)
    batch = trainer._compute_advantage(batch, metrics)
    batch = trainer._update_critic(batch, metrics)
    batch = trainer._update_actor(batch, metrics)
    trainer._compute_metrics(batch, metrics, {"gen": 1.0, "step": 2.0}, global_steps=step,
                             epoch=0)
    trainer._save_checkpoint()
    metrics.update(trainer._validate())
    trainer.logger.log(data=metrics, step=step)
    tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
    return metrics


def first_param(trainer: Any, critic: bool = False) -> Any:
    engine = (trainer.critic_wg.worker if critic else trainer.actor_rollout_wg.worker.actor).engine
    return next(engine.module.parameters()).detach().full_tensor().clone()


def main(out: Path) -> dict[str, Any]:
    import ray
    import torch
    import transfer_queue as tq
    from omegaconf import OmegaConf
    from ray import cloudpickle
    from verl.trainer.ppo.v1 import trainer_base
    from verl.utils.tracking import Tracking

    from calibadv.retrieval.launch import serve_in_thread
    from calibadv.train.verl.launcher import convert_logs
    from calibadv.train.verl.overrides import RunPaths
    from tests.verl import fakes
    from tests.verl.conftest import verl_config_dir
    from tests.verl.test_real_path import write_world

    t0 = time.perf_counter()
    cpu_platform.register_engines()
    init_gloo()
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    tq_conf = OmegaConf.load(Path(verl_config_dir()) / "transfer_queue" / "transfer_queue.yaml")
    tq_conf.backend.SimpleStorage.num_data_storage_units = 1
    tq.init(tq_conf)
    cloudpickle.register_pickle_by_value(fakes)
    model_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else out / "model"
    world = write_world(out)
    report: dict[str, Any] = {"steps": {}}
    paths = RunPaths(out / "run")
    paths.logs.mkdir(parents=True, exist_ok=True)  # as the launcher does (_attempt)
    os.environ["VERL_FILE_LOGGER_PATH"] = str(paths.attempt_log(1))
    try:
        with serve_in_thread(world["corpus"], world["index"], "bundled:minilm") as url:
            config, _ = cpu_config(out, world, model_dir, url)
            server = ray.remote(fakes.ScriptedVLLMServer).remote(str(model_dir))
            trainer = make_trainer(config, server)
            trainer.logger = Tracking(project_name="calibadv", experiment_name="cpu",
                                      default_backend=list(config.trainer.logger), config={})
            trainer.validation_generations_logger = trainer_base.ValidationGenerationsLogger(
                project_name="calibadv", experiment_name="cpu")  # as fit() sets them
            before = first_param(trainer)
            for step in (1, 2):
                metrics = one_step(trainer, server, step)
                report["steps"][step] = {k: float(v) for k, v in metrics.items()
                                         if isinstance(v, (int, float)) and (
                                             k.startswith("actor/") or k.startswith("val-")
                                             or k.startswith("critic/")
                                             or k.startswith("calibadv/reward"))}
            after = first_param(trainer)
            critic_after = first_param(trainer, critic=True)
            critic_module = trainer.critic_wg.worker.engine.module
            report["critic_class"] = type(critic_module).__name__
            report["critic_attention"] = critic_module.config._attn_implementation
            report["weights_changed"] = bool((after - before).abs().sum() > 0)
            trainer.logger.finish() if hasattr(trainer.logger, "finish") else None
            report["convert_logs"] = list(convert_logs(paths))

            os.environ["VERL_FILE_LOGGER_PATH"] = str(paths.attempt_log(2))
            resumed_config, _ = cpu_config(out, world, model_dir, url, resume="auto")
            resumed = make_trainer(resumed_config, server, loops=False)
            resumed._load_checkpoint()
            report["resumed_global_steps"] = resumed.global_steps
            report["resumed_weights_equal"] = bool(torch.equal(first_param(resumed), after))
            report["resumed_critic_equal"] = bool(
                torch.equal(first_param(resumed, critic=True), critic_after))
    finally:
        tq.close()
        ray.shutdown()
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    return report


if __name__ == "__main__":
    result = main(Path(sys.argv[1]))
    print("FSDP_CPU_REPORT " + json.dumps(result))

"""The override list of a run composes against verl 0.9.1's real config and means what we say."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibadv.errors import ConfigError
from calibadv.methods.presets import list_methods
from calibadv.train.verl.overrides import SAVE_CONTENTS, build_overrides, hydra_value

RUN = Path("/runs/q7")
URL = "http://127.0.0.1:8123"


def test_paper_run_composes_with_the_paper_setup(composed_paper_config):
    cfg = composed_paper_config
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert cfg.actor_rollout_ref.model.path == "/models/Qwen2.5-7B"
    assert cfg.data.train_batch_size == 512
    assert actor.ppo_mini_batch_size == 256
    assert rollout.n == 5
    assert actor.optim.lr == 5e-7 and actor.optim.weight_decay == 0.01
    assert actor.grad_clip == 1.0 and actor.optim.clip_grad == 1.0
    assert actor.use_kl_loss is False and cfg.algorithm.use_kl_in_reward is False
    assert actor.entropy_coeff == 0
    assert actor.clip_ratio == actor.clip_ratio_low == actor.clip_ratio_high == 0.2
    assert rollout.temperature == 1.0 and rollout.top_p == 0.95
    assert rollout.val_kwargs.temperature == 0 and rollout.val_kwargs.do_sample is False
    assert rollout.name == "vllm" and rollout.tensor_model_parallel_size == 1
    assert cfg.data.max_response_length == 4096
    assert list(actor.checkpoint.save_contents) == list(SAVE_CONTENTS)
    assert "hf_model" in actor.checkpoint.save_contents
    assert cfg.trainer.resume_mode == "auto"
    assert cfg.trainer.n_gpus_per_node == 8 and cfg.trainer.nnodes == 1
    assert cfg.ray_kwargs.ray_init.num_cpus == 64
    assert "file" in cfg.trainer.logger
    assert cfg.trainer.default_local_dir == str(RUN.resolve() / "verl_checkpoints")


def test_our_plugin_names_are_selected(composed_paper_config):
    cfg = composed_paper_config
    assert cfg.algorithm.adv_estimator == "calibadv"
    assert cfg.trainer.use_v1 is True and cfg.trainer.v1.trainer_mode == "calibadv"
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "calibadv_search"
    fn = cfg.reward.custom_reward_function
    assert fn.path == "pkg://calibadv.train.verl.reward" and fn.name == "compute_score"
    assert dict(fn.reward_kwargs) == {"prethink": True, "require_search": True}


def test_reward_uses_the_current_keys_not_the_legacy_ones(composed_paper_config):
    """verl 0.9 ignores (or migrates) top-level custom_reward_function/reward_model keys."""
    cfg = composed_paper_config
    assert all(v is None for v in cfg.custom_reward_function.values())
    assert cfg.reward_model.reward_manager is None


def test_reward_function_path_loads_with_verls_loader(composed_paper_config):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    from calibadv.train.verl import reward

    fn = get_custom_reward_fn(composed_paper_config)
    assert fn.args[0] is reward.compute_score  # partial(_call_with_kwargs, raw_fn, kwargs)
    assert fn.args[1] == {"prethink": True, "require_search": True}


def test_method_switches_reach_the_estimator_config(composed_paper_config, make_spec):
    from calibadv.methods.advantage import CalibConfig
    from calibadv.train.verl.estimator import calib_config_from_algorithm

    spec = make_spec()
    got = calib_config_from_algorithm(composed_paper_config.algorithm)
    assert got == CalibConfig.from_dict(spec.method["calibration"])
    section = composed_paper_config.algorithm.calibadv
    assert section.prethink is True and section.require_search is True
    assert section.agent.retrieval_url == URL and section.agent.max_turns == 4
    assert list(section.dump_rollouts_at) == [10, 50]


def test_verl_accepts_the_config(composed_paper_config):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = composed_paper_config
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg),
                    use_critic=need_critic(cfg))
    assert need_reference_policy(cfg) is False  # KL 0: no reference model is loaded


def test_every_method_preset_composes(make_spec, compose_config):
    for method in list_methods():
        spec = make_spec(method)
        if "rollout" in spec.method:  # tree rollouts: refused on verl (test_credit_estimators)
            continue
        cfg = compose_config(build_overrides(spec, RUN, URL))
        # PPO (stepsearch): verl's own GAE and critic; every other preset: our estimator
        want = "gae" if spec.method.get("estimator", {}).get("name") == "gae" else "calibadv"
        assert cfg.algorithm.adv_estimator == want, method


def test_stepsearch_runs_verls_gae_with_a_critic_and_the_kl_in_the_reward(make_spec, compose_config,
                                                                          tiny_model_dir):
    """The preset's knobs become verl's algorithm/critic keys, the critic starts from the
    policy, and verl's own config check accepts it with a critic and a reference model."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    spec = make_spec("stepsearch", model={"path": str(tiny_model_dir), "dtype": "bfloat16"})
    cfg = compose_config(build_overrides(spec, RUN, URL))
    algo = cfg.algorithm
    assert (algo.adv_estimator, algo.gamma, algo.lam) == ("gae", 1.0, 1.0)
    assert algo.use_kl_in_reward is True and algo.kl_penalty == "kl"
    assert (algo.kl_ctrl.type, algo.kl_ctrl.kl_coef) == ("fixed", 0.001)
    assert cfg.actor_rollout_ref.actor.use_kl_loss is False
    assert cfg.critic.enable is True and cfg.critic.model.path == cfg.actor_rollout_ref.model.path
    assert cfg.critic.optim.lr == 5e-7 and cfg.critic.cliprange_value == 0.5
    assert cfg.critic.model.override_config.attn_implementation == "sdpa"
    assert cfg.algorithm.calibadv.reward.name == "stepsearch"
    assert need_critic(cfg) and need_reference_policy(cfg)
    validate_config(config=cfg, use_reference_policy=True, use_critic=True)


def test_kl_coefficient_turns_on_the_kl_loss(make_spec, compose_config):
    spec = make_spec(training={"kl_coef": 0.001})
    cfg = compose_config(build_overrides(spec, RUN, URL))
    assert cfg.actor_rollout_ref.actor.use_kl_loss is True
    assert cfg.actor_rollout_ref.actor.kl_loss_coef == 0.001


def test_user_overrides_come_last_and_win(make_spec, compose_config):
    spec = make_spec(verl_overrides=["actor_rollout_ref.rollout.gpu_memory_utilization=0.8"])
    overrides = build_overrides(spec, RUN, URL)
    assert overrides[-1] == "actor_rollout_ref.rollout.gpu_memory_utilization=0.8"
    assert compose_config(overrides).actor_rollout_ref.rollout.gpu_memory_utilization == 0.8


def test_steps_and_epochs_follow_the_spec(make_spec, compose_config):
    cfg = compose_config(build_overrides(make_spec(training={"steps": 410, "epochs": 2}), RUN, URL))
    assert cfg.trainer.total_training_steps == 410 and cfg.trainer.total_epochs == 2


@pytest.mark.parametrize(
    "change, key",
    [({"resources": {"gpus": 0}}, "resources.gpus"),
     ({"model": {"path": ""}}, "model.path"),
     ({"data": {"train": ""}}, "data.train")],
)
def test_bad_specs_name_the_key(make_spec, change, key):
    with pytest.raises(ConfigError, match=key):
        build_overrides(make_spec(**change), RUN, URL)


def test_unknown_method_key_is_rejected(make_spec):
    spec = make_spec()
    spec.method["prethnk"] = True
    with pytest.raises(ConfigError, match="method.prethnk"):
        build_overrides(spec, RUN, URL)


def _parsed(value_text: str):
    """The value as verl sees it: hydra parses the override, OmegaConf resolves the config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    value = OverridesParser.create().parse_override(f"k={value_text}").value()
    return OmegaConf.to_container(OmegaConf.create({"k": value}), resolve=True)["k"]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40))
def test_string_values_survive_hydra_parsing(text):
    assert _parsed(hydra_value(text)) == text


@pytest.mark.parametrize("text", ["${", "${a}", "x\\${y}", "\\${", "a\\", "'${'", "\\\\${z}"])
def test_interpolation_lookalikes_stay_literal(text):
    assert _parsed(hydra_value(text)) == text


def test_values_of_other_types_parse_back():
    for value in (None, True, False, 3, 5e-7, 0.95, [1, 2], ["console", "file"]):
        assert _parsed(hydra_value(value)) == value
    assert _parsed(hydra_value("http://host:8000/retrieve")) == "http://host:8000/retrieve"


# -- what the first GPU run needs (issue 12) -----------------------------------------------
def test_paper_config_is_ready_for_a_gpu_node_without_flash_attn(composed_paper_config):
    cfg = composed_paper_config
    model, actor = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.actor
    assert model.override_config.attn_implementation == "sdpa"
    assert model.use_remove_padding is False  # the packed path needs flash-attn's varlen kernel
    assert actor.use_dynamic_bsz is True and actor.ppo_max_token_len_per_gpu == 16384
    # verl derives the log-prob passes' budgets from the actor's
    assert cfg.actor_rollout_ref.rollout.log_prob_use_dynamic_bsz is True
    assert cfg.actor_rollout_ref.ref.log_prob_max_token_len_per_gpu == 16384
    assert cfg.trainer.max_actor_ckpt_to_keep == 2
    assert cfg.trainer.checkpoint_callback_class == "calibadv.train.verl.checkpoints.ExportAndPrune"
    assert list(cfg.trainer.logger) == ["console", "file"]
    assert cfg.trainer.log_val_generations == 10
    assert cfg.trainer.validation_data_dir == str(RUN.resolve() / "verl_logs" / "val_generations")
    rollout = cfg.actor_rollout_ref.rollout
    assert rollout.gpu_memory_utilization == 0.6 and rollout.max_num_seqs == 256
    assert rollout.max_model_len == 1024 + 4096 and rollout.enforce_eager is False
    assert rollout.agent.num_workers == 8


def test_the_trainer_mode_verl_builds_keeps_sync_behaviour(composed_paper_config):
    """verl branches on ``trainer_mode == "sync"``; ours answers sync (buffer, batch size)."""
    import verl.trainer.ppo.v1  # noqa: F401  (fires the plugin's trainer registration)
    from verl.trainer.ppo.v1.replay_buffer import ReplayBufferAsync
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

    from calibadv.train.verl.trainer import FailFastReplayBuffer

    cfg = composed_paper_config
    trainer = get_trainer_cls(cfg.trainer.v1.trainer_mode)(config=cfg)
    assert trainer.trainer_mode == "sync" and trainer.registered_mode == "calibadv"
    assert type(trainer.replay_buffer) is FailFastReplayBuffer
    assert not isinstance(trainer.replay_buffer, ReplayBufferAsync)
    assert trainer.replay_buffer.gen_batch_size == cfg.data.train_batch_size == 512
    assert trainer.replay_buffer.sync_refill_failed_groups is False
    assert trainer.checkpoint_callback.__class__.__name__ == "ExportAndPrune"


def _load_like_verls_fsdp_engine(overrides, compose_config):
    """HFModelConfig from the composed config, then the ``from_pretrained`` call of verl's
    FSDP engine (``workers/engine/fsdp/transformer_impl.py``)."""
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.model import get_hf_auto_model_class

    cfg = compose_config(overrides)
    model_config = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
    auto_class = get_hf_auto_model_class(hf_config=model_config.hf_config)
    return auto_class.from_pretrained(pretrained_model_name_or_path=model_config.local_path,
                                      config=model_config.hf_config)


def test_the_actor_loads_with_our_attention_and_not_with_verls_default(
        make_spec, compose_config, tiny_model_dir):
    try:
        import flash_attn  # noqa: F401
        has_flash_attn = True
    except ImportError:
        has_flash_attn = False
    spec = make_spec(model={"path": str(tiny_model_dir)})
    ours = build_overrides(spec, RUN, URL)
    model = _load_like_verls_fsdp_engine(ours, compose_config)
    assert model.config._attn_implementation == "sdpa"
    if not has_flash_attn:  # verl's default, flash_attention_2, cannot load without the package
        default = [o for o in ours if "attn_implementation" not in o]
        with pytest.raises(ImportError, match="flash_attn|FlashAttention"):
            _load_like_verls_fsdp_engine(default, compose_config)


@pytest.mark.parametrize("change, key", [
    ({"verl": {"loggers": ["console", "neptune"]}}, "verl.loggers"),
    ({"verl": {"use_remove_padding": True}}, "verl.use_remove_padding"),
    ({"verl": {"max_ckpt_to_keep": 0}}, "verl.max_ckpt_to_keep"),
    ({"verl": {"ppo_max_token_len_per_gpu": 4096}}, "verl.ppo_max_token_len_per_gpu"),
    ({"verl": {"resume_mode": "yesterday"}}, "verl.resume_mode"),
    ({"resources": {"gpus": 8, "cpus": 2}}, "resources.cpus"),
])
def test_bad_verl_settings_name_the_key(make_spec, change, key):
    with pytest.raises(ConfigError, match=key):
        build_overrides(make_spec(**change), RUN, URL)


def test_tracking_is_opt_in_and_offline(make_spec, compose_config):
    spec = make_spec(verl={"loggers": ["console", "file", "tensorboard", "wandb"]})
    cfg = compose_config(build_overrides(spec, RUN, URL))
    env = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert list(cfg.trainer.logger) == ["console", "file", "tensorboard", "wandb"]
    assert env.WANDB_MODE == "offline" and env.WANDB_DIR == str(RUN.resolve() / "verl_logs")
    assert env.TENSORBOARD_DIR == str(RUN.resolve() / "verl_logs" / "tensorboard")


def test_resume_from_a_given_checkpoint(make_spec, compose_config):
    path = "/runs/q7/verl_checkpoints/global_step_40"
    cfg = compose_config(build_overrides(make_spec(verl={"resume_mode": path}), RUN, URL))
    assert cfg.trainer.resume_mode == "resume_path" and cfg.trainer.resume_from_path == path
    off = compose_config(build_overrides(make_spec(verl={"resume_mode": "disable"}), RUN, URL))
    assert off.trainer.resume_mode == "disable"


def test_flash_attn_users_can_switch_back_to_packed_sequences(make_spec, compose_config):
    spec = make_spec(verl={"attn_implementation": "flash_attention_2", "use_remove_padding": True})
    cfg = compose_config(build_overrides(spec, RUN, URL))
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == "flash_attention_2"
    assert cfg.actor_rollout_ref.model.use_remove_padding is True


def test_shipped_paper_config_runs_carry_the_verl_section(compose_config):
    """config/config.yaml → RunSpec.verl → verl's composed config, for a run of the workflow."""
    from calibadv.spec import run_spec_from_dict
    from calibadv.workflow.run_specs import run_spec_dict
    from calibadv.workflow.validation import load_config

    config = load_config(Path(__file__).parents[2] / "config" / "config.yaml")
    config["verl"]["max_ckpt_to_keep"] = 3
    config["models"]["qwen2.5-3b"]["verl"] = {"gpu_memory_utilization": 0.7}
    spec = run_spec_from_dict(run_spec_dict(config, "qwen2.5-3b", "calibadv"))
    assert spec.verl.max_ckpt_to_keep == 3 and spec.verl.gpu_memory_utilization == 0.7
    assert spec.verl.attn_implementation == "sdpa" and spec.verl.retrieval_device == "cpu"
    cfg = compose_config(build_overrides(spec, RUN, URL))
    assert cfg.trainer.max_actor_ckpt_to_keep == 3
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.7
    assert cfg.ray_kwargs.ray_init.num_cpus == 64  # resources.train.cpus, not the default 2


# -- issue 29: what a first StepSearch / small-allocation run would hit ----------------------
def test_the_critic_engine_gets_the_spec_token_budget_not_verls_32768(make_spec, compose_config,
                                                                       tiny_model_dir):
    """verl's v1 trainer builds the critic engine from ``critic.ppo_infer_max_token_len_per_gpu``
    (train and infer budgets, ``trainer/ppo/v1/trainer_base.py`` ``_init_workers`` ~267-268) and
    splits batches by the engine config (``critic.fsdp`` → ``critic.engine``)."""
    from verl.utils.config import omega_conf_to_dataclass

    spec = make_spec("stepsearch", model={"path": str(tiny_model_dir)},
                     verl={"ppo_max_token_len_per_gpu": 12288})
    critic = omega_conf_to_dataclass(compose_config(build_overrides(spec, RUN, URL)).critic)
    assert critic.ppo_infer_max_token_len_per_gpu == 12288  # verl's default: 32768
    assert critic.ppo_max_token_len_per_gpu == 12288
    assert critic.engine.use_dynamic_bsz is True
    assert critic.engine.micro_batch_size_per_gpu == spec.training.micro_batch_size
    assert critic.engine.infer_micro_batch_size_per_gpu == spec.training.micro_batch_size
    fixed = make_spec("stepsearch", model={"path": str(tiny_model_dir)},
                      verl={"use_dynamic_bsz": False})
    engine = omega_conf_to_dataclass(compose_config(build_overrides(fixed, RUN, URL)).critic).engine
    assert engine.use_dynamic_bsz is False  # verl's engine default would be True


def test_vllm_context_is_prompt_plus_response_not_the_models_window(make_spec, compose_config):
    """``max_model_len: null`` reaches verl's vLLM server as the model's
    ``max_position_embeddings`` (``vllm_async_server.py`` ``_validate_configs`` ~1104), so the
    spec's default is written out: prompt budget + response budget."""
    spec = make_spec(agent={"max_response_tokens": 2048})
    cfg = compose_config(build_overrides(spec, RUN, URL))
    assert cfg.actor_rollout_ref.rollout.max_model_len == 1024 + 2048
    given = make_spec(verl={"max_model_len": 8192})
    assert compose_config(build_overrides(given, RUN, URL)).actor_rollout_ref.rollout.max_model_len == 8192


@pytest.mark.parametrize("gpus, nodes, units, floor", [
    # 3 per GPU + 2, + this node's share of the TQ controller and storage units (one CPU each)
    (1, 1, 8, 3 + 2 + 9),
    (8, 1, 8, 24 + 2 + 9),
    (8, 2, 8, 24 + 2 + 5),
    (1, 1, 1, 3 + 2 + 2),
])
def test_the_ray_cpu_floor_counts_transfer_queue(make_spec, gpus, nodes, units, floor):
    from calibadv.train.verl.overrides import min_ray_cpus

    assert min_ray_cpus(gpus, nodes, units) == floor
    ok = make_spec(resources={"gpus": gpus, "nodes": nodes, "cpus": floor},
                   verl_overrides=[f"transfer_queue.backend.SimpleStorage.num_data_storage_units={units}"])
    build_overrides(ok, RUN, URL)
    low = make_spec(resources={"gpus": gpus, "nodes": nodes, "cpus": floor - 1},
                    verl_overrides=[f"transfer_queue.backend.SimpleStorage.num_data_storage_units={units}"])
    with pytest.raises(ConfigError, match=f"at least {floor} CPUs.*got {floor - 1}.*{units} storage units"):
        build_overrides(low, RUN, URL)


def test_one_gpu_with_five_cpus_fails_fast_instead_of_hanging_in_tq_init(make_spec,
                                                                          compose_config):
    """The allocation that hung in ``tq.init`` (> 60 s): verl's 8 storage units + controller."""
    with pytest.raises(ConfigError, match="at least 14 CPUs per node for 1 GPUs.*got 5"):
        build_overrides(make_spec(resources={"gpus": 1, "cpus": 5}), RUN, URL)
    cfg = compose_config(build_overrides(make_spec(), RUN, URL))
    from calibadv.train.verl.overrides import TQ_STORAGE_UNITS
    from omegaconf import OmegaConf
    from tests.verl.conftest import verl_config_dir

    default = OmegaConf.load(Path(verl_config_dir()) / "transfer_queue" / "transfer_queue.yaml")
    assert TQ_STORAGE_UNITS == default.backend.SimpleStorage.num_data_storage_units
    assert cfg.transfer_queue.backend.SimpleStorage.num_data_storage_units == TQ_STORAGE_UNITS

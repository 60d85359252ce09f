"""verl's value-head loader with the configured attention (StepSearch's PPO critic).

verl 0.9.1's ``load_valuehead_model`` (``verl/utils/model.py``, the two ``from_pretrained``
calls at ~649 and ~674) passes ``attn_implementation="flash_attention_2"`` explicitly, which
wins over the attention that verl's own ``HFModelConfig`` put into the HF config from
``critic.model.override_config.attn_implementation``. Without the flash-attn package the
critic then fails at start-up ("FlashAttention2 ... not installed", then "not a value head
model, please install trl"). Our GPU environment trains with ``sdpa``.

:func:`load_valuehead_model` is verl's function with one change: the attention comes from
``model_config._attn_implementation`` (verl's default, flash_attention_2, when the config has
none). The plugin puts it in place of verl's when ``verl.utils.model`` is imported; verl's FSDP
engine looks the name up at call time (``workers/engine/fsdp/transformer_impl.py``,
``_build_module``), so every critic verl builds goes through it. verl's own helpers
(``patch_valuehead_model``, ``is_trl_available``) are used unchanged.
"""

from __future__ import annotations

from typing import Any

#: verl's hard-coded choice, kept when the config names none.
VERL_DEFAULT_ATTENTION = "flash_attention_2"


def configured_attention(model_config: Any) -> str:
    """The attention verl's ``HFModelConfig`` wrote into the HF config (``override_config``)."""
    return getattr(model_config, "_attn_implementation", None) or VERL_DEFAULT_ATTENTION


def load_valuehead_model(local_path: str, torch_dtype: Any, model_config: Any,
                         trust_remote_code: bool) -> Any:
    """A token-classification head (one label) if the architecture has one, else trl's
    ``AutoModelForCausalLMWithValueHead`` around the causal LM, as verl does, with the
    configured attention in both ``from_pretrained`` calls."""
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification
    from verl.utils import model as verl_model

    attn = configured_attention(model_config)
    common = {"pretrained_model_name_or_path": local_path, "torch_dtype": torch_dtype,
              "config": model_config, "attn_implementation": attn,
              "trust_remote_code": trust_remote_code}
    try:
        return AutoModelForTokenClassification.from_pretrained(**common)
    except BaseException as err:  # noqa: BLE001 - verl's own fallback condition
        if not verl_model.is_trl_available():
            raise RuntimeError(
                f"critic model {local_path} (attention {attn}) has no token-classification "
                f"head ({type(err).__name__}: {err}) and trl is not installed for the "
                "value-head fallback: install trl==0.27.0 (envs/train-gpu.yaml)"
            ) from err
    try:
        from trl.experimental.ppo import AutoModelForCausalLMWithValueHead
    except ImportError:
        from trl import AutoModelForCausalLMWithValueHead

    vision = type(model_config) in verl_model.AutoModelForVision2Seq._model_mapping.keys()
    module_class = verl_model.AutoModelForVision2Seq if vision else AutoModelForCausalLM
    ori_model = module_class.from_pretrained(**common)
    if hasattr(model_config, "text_config"):  # vlm models, as verl
        ori_model.config.hidden_size = model_config.text_config.hidden_size
    model = AutoModelForCausalLMWithValueHead.from_pretrained(ori_model)
    verl_model.patch_valuehead_model(model)
    return model


def install(verl_model_module: Any) -> None:
    """Put :func:`load_valuehead_model` in place of verl's (keeping verl's as ``_verl_…``)."""
    current = verl_model_module.load_valuehead_model
    if current is not load_valuehead_model:
        verl_model_module._verl_load_valuehead_model = current
        verl_model_module.load_valuehead_model = load_valuehead_model

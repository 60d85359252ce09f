"""Our settings inside verl's config: one namespace, ``algorithm.calibadv``.

verl hands ``config.algorithm`` to advantage estimators, and agent loops see the whole
config, so every part of the plugin reads the same subtree::

    algorithm.calibadv.prethink / require_search       method switches (agent, reward, format)
    algorithm.calibadv.calibration.*                    fields of calibadv.methods.advantage.CalibConfig
    algorithm.calibadv.agent.*                          Search-R1 loop limits + retrieval server
                                                        (url, topk, retrieval_retries)
    algorithm.calibadv.run_dir / dump_rollouts_at       where the trainer mode writes rollouts
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calibadv.agent.types import AgentConfig


def plain(value: Any) -> Any:
    """DictConfig / ListConfig → plain containers (other values unchanged)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    return value


def calibadv_section(config: Any) -> dict[str, Any]:
    """``algorithm.calibadv`` of a full verl config, or of ``config.algorithm`` itself."""
    if config is None:
        return {}
    algo = config.get("algorithm", None) if hasattr(config, "get") else None
    node = algo if algo is not None else config
    section = node.get("calibadv", None) if hasattr(node, "get") else None
    return dict(plain(section) or {})


@dataclass
class LoopSettings:
    """What one Search-R1 rollout inside verl needs besides the model."""

    agent: AgentConfig
    require_search: bool
    retrieval_url: str
    topk: int = 3
    retrieval_retries: int = 5  # retries of a failed search before the rollout fails
    dump_rollouts_at: list[int] = field(default_factory=list)


def loop_settings(config: Any) -> LoopSettings:
    section = calibadv_section(config)
    agent = dict(section.get("agent") or {})
    url = agent.pop("retrieval_url", None)
    topk = int(agent.pop("topk", 3))
    retries = int(agent.pop("retrieval_retries", 5))
    if not url:
        raise ValueError(
            "algorithm.calibadv.agent.retrieval_url is not set: the calibadv agent loop needs "
            "a retrieval server (the launcher sets it after starting one)"
        )
    return LoopSettings(
        agent=AgentConfig(prethink=bool(section.get("prethink", False)), **agent),
        require_search=bool(section.get("require_search", False)),
        retrieval_url=str(url),
        topk=topk,
        retrieval_retries=retries,
    )

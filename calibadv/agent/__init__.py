"""Search-R1 rollout protocol (engine-agnostic) and the generators that drive it."""

from calibadv.agent.protocol import (
    INVALID_ACTION_MESSAGE,
    STOP_STRINGS,
    Action,
    AgentState,
    extract_think,
    format_observation,
    run_batch,
)
from calibadv.agent.types import (
    AgentConfig,
    GenerateFn,
    Generation,
    GenerationRequest,
    SearchFn,
    Trajectory,
)

__all__ = [
    "INVALID_ACTION_MESSAGE",
    "STOP_STRINGS",
    "Action",
    "AgentConfig",
    "AgentState",
    "GenerateFn",
    "Generation",
    "GenerationRequest",
    "SearchFn",
    "Trajectory",
    "extract_think",
    "format_observation",
    "run_batch",
]

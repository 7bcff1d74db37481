"""The job's configuration: typed dataclasses merged by omegaconf from YAML and `key=value` overrides.

Everything a run needs is decided here, up front, so that a typo or an impossible value fails in
the first second with the full key named, instead of an hour later on a worker.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import GrammarParseError, OmegaConfBaseException
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
from omegaconf.grammar_parser import parse

from specray.policies.sources import AUTO, SOURCES
from specray.policies.kinds import MAX_LOOKAHEAD, probability
from specray.policies.spec import DRAFT_SOURCES, parse_spec
from specray.schema import DOMAINS
from specray.storage import is_remote, local_path, uri_problem

ENV_ALLOWED = re.compile(r"SPECRAY_[A-Z0-9_]+")  # the only environment variables ${oc.env:...} may read
DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: each model in its faster precision, measured at load
DEVICES = ("auto", "cpu", "cuda")
BATCHINGS = ("continuous", "drain")  # a worker streams its batches through one engine, or runs each to its end
TRUNCATE = ("none", "left")
UNIT_KNOB = probability("threshold", None)  # a domain's threshold override: the kind's probability knob
BUILTIN_SETS = ("quick", "demo", "heldout", "distill")  # specray.data.builtin.SPLITS, without importing it here
LOG_LEVELS = ("warning", "info", "debug")
MAX_SEED = 2**63 - 2**32  # a batch's seed is this plus a 32-bit hash of its ids, and must fit torch's int64
MAX_NEW_TOKENS = 1_048_576  # past any context window; the model's own window is checked once workers load it
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a run id becomes a directory name


class ConfigError(ValueError):
    """A configuration that must not start a job; the message names every offending key."""


@dataclass
class DataConfig:
    path: Optional[str] = None  # Parquet file/dir, JSONL, or a `datasets` dir, or a URI (s3://...); None = the built-in set `builtin`
    builtin: str = "quick"  # with no path: quick (8 short prompts, a first look) | demo (40) | heldout | distill
    prompt_column: str = "prompt"
    id_column: str = "id"
    domain_column: str = "domain"
    limit: Optional[int] = None
    truncate: str = "none"  # none | left


@dataclass
class ModelsConfig:
    target: str = "embedded"
    draft: str = "embedded-draft"
    dtype: str = "auto"  # one of DTYPES
    device: str = "auto"  # one of DEVICES
    trust_remote_code: bool = False


@dataclass
class JobGenerationConfig:
    max_new_tokens: int = 64  # a first run on a CPU ends in minutes; batch jobs set their own
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k cut
    seed: int = 0
    batch_size: int = 8
    batching: str = "drain"  # one of BATCHINGS; drain measured faster on a CPU with a drafting policy (docs/job.md)
    stop: list[str] = field(default_factory=list)


@dataclass
class DomainPolicyConfig:
    """One domain's overrides; a None field falls back to `policy.default` and the policy's own budget."""

    name: Optional[str] = None
    k_max: Optional[int] = None
    threshold: Optional[float] = None
    draft: Optional[str] = None  # a draft source (model | ngram | ngram+model | none) or auto; None: the spec's own


@dataclass
class PerDomainConfig:
    code: DomainPolicyConfig = field(default_factory=DomainPolicyConfig)
    math: DomainPolicyConfig = field(default_factory=DomainPolicyConfig)
    logic: DomainPolicyConfig = field(default_factory=DomainPolicyConfig)
    chat: DomainPolicyConfig = field(default_factory=DomainPolicyConfig)


@dataclass
class PolicyConfig:
    default: str = "heuristic"
    per_domain: PerDomainConfig = field(default_factory=PerDomainConfig)
    registry: Optional[str] = None  # directory of trained, versioned policies
    auto_sources: list[str] = field(default_factory=lambda: list(SOURCES))  # what `draft: auto` chooses among


@dataclass
class LabelConfig:
    """`specray label` only: how far every round drafts, so every round is labelled to the same depth."""

    depth: int = 8
    draft_sources: list[str] = field(default_factory=lambda: ["model"])  # each drafts every prompt; traces of all kept


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # None = a local ray.init()
    num_workers: int = 1
    gpus_per_worker: float = 0.0  # 0 = CPU workers; Ray accepts fractions
    max_in_flight: int = 2  # batches queued per worker (backpressure)
    batch_timeout_s: float = 600.0
    max_retries: int = 2
    start_timeout_s: float = 900.0  # waiting longer for workers to be placed and load their models fails the job


@dataclass
class OutputConfig:
    dir: Optional[str] = None  # None = ./runs/<run_id>; a URI (s3://bucket/prefix) puts the run on an object store
    rows_per_file: int = 50_000


@dataclass
class StorageConfig:
    """How URIs in data.path, output.dir and policy.registry are reached; credentials never live here
    (pyarrow reads them from the environment: AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance role, ...)."""

    endpoint: Optional[str] = None  # an S3-compatible store's address (http://minio:9000); None = AWS_ENDPOINT_URL or AWS


@dataclass
class JobConfig:
    run_id: Optional[str] = None  # None = generated; name an old one (with its output.dir) to resume
    # warning: the console shows the progress bar, the summary and errors only (library warnings,
    # model-loading bars and worker logs hidden); info: Ray's and the workers' logs and warnings too;
    # debug: everything, including every repeat of a warning. `--verbose` on the command line = info.
    log_level: str = "warning"
    data: DataConfig = field(default_factory=DataConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    generation: JobGenerationConfig = field(default_factory=JobGenerationConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)


def load_config(path: str | None, overrides: list[str]) -> JobConfig:
    """Merge defaults < YAML file < `key=value` overrides, resolve, validate, fill run_id and output.dir."""
    sources = [_read_yaml(path)] if path else []
    sources.append(_read_dotlist(overrides))
    for source in sources:
        _check_interpolations(OmegaConf.to_container(source, resolve=False))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(JobConfig), *sources)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc)) from None
    cfg = _fill_run_defaults(cfg)
    problems = _config_problems(cfg)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return cfg


def config_to_yaml(cfg: JobConfig) -> str:
    """The resolved config as YAML, so a run can store exactly what produced its outputs."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# Settings a resumed run may change: they decide how fast and where, not what is generated. Every
# other key (models, generation but its batch size and batching, policies, data columns and truncation, label depth)
# changes outputs, and a run whose outputs mixed two settings would be silently wrong.
RESUMABLE = ("run_id", "cluster.", "output.", "storage.", "generation.batch_size", "generation.batching", "data.path",
             "data.limit")


def config_changes(stored_yaml: str, new_yaml: str) -> tuple[list[str], dict[str, list[Any]]]:
    """(refused, allowed): what differs between a run's stored config and a resuming session's, as
    `key: old -> new` lines for settings that change outputs, and {key: [old, new]} for the rest.
    A key the stored config lacks (written by an older specray) is not compared, only recorded."""
    old, new = (_flatten(OmegaConf.to_container(OmegaConf.create(text), resolve=False)) for text in (stored_yaml, new_yaml))
    refused, allowed = [], {}
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if key in old and key in new and not key.startswith(RESUMABLE) and key not in RESUMABLE:
            refused.append(f"{key}: {before!r} -> {after!r}")
        else:
            allowed[key] = [before, after]
    return refused, allowed


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _read_yaml(path: str) -> Any:
    if not Path(path).is_file():
        raise ConfigError(f"config file {path!r}: no such file")
    try:
        source = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise ConfigError(f"config file {path!r}: {exc}") from None
    if not OmegaConf.is_dict(source):
        raise ConfigError(f"config file {path!r}: expected a mapping of keys at the top level")
    return source


def _read_dotlist(overrides: list[str]) -> Any:
    malformed = [item for item in overrides if "=" not in item]
    if malformed:
        raise ConfigError(f"override {malformed[0]!r}: expected key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: OmegaConfBaseException) -> str:
    """omegaconf's first message line, prefixed by the full dotted key it is about."""
    key = getattr(exc, "full_key", None) or "<config>"
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, GrammarParseError):
        return f"{key}: malformed interpolation ({message})"
    if key.startswith("policy.per_domain.") and key.count(".") == 2 and "not in" in message:
        return f"{key}: unknown domain; expected one of {', '.join(DOMAINS)}"
    if "not in" in message:
        return f"{key}: unknown key ({message})"
    return f"{key}: {message}"


def _check_interpolations(raw: Any, prefix: str = "") -> None:
    """Allow only ${node.refs} and ${oc.env:SPECRAY_*}: a config must not run code or read the environment."""
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for key, value in items:
        full_key = f"{prefix}[{key}]" if isinstance(raw, list) else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)):
            _check_interpolations(value, full_key)
        elif isinstance(value, str) and "${" in value:
            _check_interpolation(full_key, value)


def _check_interpolation(key: str, value: str) -> None:
    try:
        tree = parse(value, parser_rule="configValue", lexer_mode="DEFAULT_MODE")
    except GrammarParseError as exc:
        raise ConfigError(f"{key}: malformed interpolation {value!r} ({exc})") from None
    for resolver in _resolver_calls(tree):
        name = resolver.resolverName().getText()
        if name != "oc.env":
            raise ConfigError(f"{key}: resolver {name!r} is not allowed; use ${{a.b}} or ${{oc.env:SPECRAY_...}}")
        args = resolver.sequence().element() if resolver.sequence() else []
        variable = args[0].getText() if args else ""
        if not ENV_ALLOWED.fullmatch(variable):
            raise ConfigError(f"{key}: environment variable {variable!r} is not allowed; only SPECRAY_* can be read")


def _resolver_calls(tree: Any) -> list[Any]:
    found = [tree] if isinstance(tree, OmegaConfGrammarParser.InterpolationResolverContext) else []
    for child in tree.getChildren() if hasattr(tree, "getChildren") else ():
        found.extend(_resolver_calls(child))
    return found


def _fill_run_defaults(cfg: JobConfig) -> JobConfig:
    run_id = cfg.run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    out_dir = cfg.output.dir or str(Path("runs") / run_id)
    return replace(cfg, run_id=run_id, output=replace(cfg.output, dir=out_dir))


def _config_problems(cfg: JobConfig) -> list[str]:
    """Every value omegaconf's types cannot rule out, as `key: expected ..., got ...` lines."""
    return [
        *_data_problems(cfg.data),
        *_models_problems(cfg.models),
        *_generation_problems(cfg.generation),
        *_policy_problems(cfg.policy),
        *_check("label.depth", cfg.label.depth >= 1, "an integer >= 1", cfg.label.depth),
        *_sources_problems("label.draft_sources", cfg.label.draft_sources, DRAFT_SOURCES),
        *_check("log_level", cfg.log_level in LOG_LEVELS, _one_of(LOG_LEVELS), cfg.log_level),
        *_cluster_problems(cfg.cluster),
        *_output_problems(cfg.output),
        *_check("storage.endpoint", cfg.storage.endpoint is None or re.fullmatch(r"https?://[^\s/]+/?", cfg.storage.endpoint),
                "null or an http(s)://host[:port] address", cfg.storage.endpoint),
        *_registry_endpoint_problems(cfg),
        *_check("run_id", RUN_ID.fullmatch(cfg.run_id or ""), "letters, digits, '.', '_' or '-'", cfg.run_id),
    ]


def _check(key: str, ok: Any, expected: str, value: Any) -> list[str]:
    return [] if ok else [f"{key}: expected {expected}, got {value!r}"]


def _one_of(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(choices)


def _uri_problems(key: str, uri: str | None) -> list[str]:
    problem = uri_problem(uri) if uri is not None else None
    return [f"{key}: {problem}"] if problem else []


def _data_problems(data: DataConfig) -> list[str]:
    local = data.path is not None and not is_remote(data.path)
    return [
        *_uri_problems("data.path", data.path),
        *_check("data.prompt_column", data.prompt_column, "a column name", data.prompt_column),
        *_check("data.id_column", data.id_column, "a column name", data.id_column),
        *_check("data.domain_column", data.domain_column, "a column name", data.domain_column),
        *_check("data.limit", data.limit is None or data.limit >= 1, "null or an integer >= 1", data.limit),
        *_check("data.truncate", data.truncate in TRUNCATE, _one_of(TRUNCATE), data.truncate),
        *_check("data.builtin", data.builtin in BUILTIN_SETS, _one_of(BUILTIN_SETS), data.builtin),
        *_check("data.path", not local or Path(local_path(data.path)).exists(), "an existing file or directory", data.path),
    ]


def _models_problems(models: ModelsConfig) -> list[str]:
    return [
        *_check("models.target", models.target, "a model name or path", models.target),
        *_check("models.draft", models.draft, "a model name or path", models.draft),
        *_check("models.dtype", models.dtype in DTYPES, _one_of(DTYPES), models.dtype),
        *_check("models.device", models.device in DEVICES, _one_of(DEVICES), models.device),
    ]


def _generation_problems(gen: JobGenerationConfig) -> list[str]:
    return [
        *_check("generation.max_new_tokens", 1 <= gen.max_new_tokens <= MAX_NEW_TOKENS, f"an integer in [1, {MAX_NEW_TOKENS}]",
                gen.max_new_tokens),
        *_check("generation.temperature", math.isfinite(gen.temperature) and gen.temperature >= 0,
                "a finite number >= 0 (0 = greedy)", gen.temperature),
        *_check("generation.top_p", 0 < gen.top_p <= 1, "a number in (0, 1]", gen.top_p),
        *_check("generation.top_k", gen.top_k >= 0, "an integer >= 0 (0 = off)", gen.top_k),
        *_check("generation.seed", 0 <= gen.seed <= MAX_SEED, f"an integer in [0, {MAX_SEED}]", gen.seed),
        *_check("generation.batch_size", gen.batch_size >= 1, "an integer >= 1", gen.batch_size),
        *_check("generation.batching", gen.batching in BATCHINGS, _one_of(BATCHINGS), gen.batching),
        *_check("generation.stop", all(gen.stop), "non-empty stop strings", gen.stop),
    ]


def worker_device(requested: str, gpus_per_worker: float) -> str:
    """`models.device` made concrete for a worker holding `gpus_per_worker` GPUs."""
    if requested == "auto":
        return "cuda" if gpus_per_worker > 0 else "cpu"
    if requested == "cuda" and gpus_per_worker <= 0:
        raise ConfigError("models.device=cuda needs cluster.gpus_per_worker > 0 (Ray hides GPUs from a worker without any)")
    return requested


def policy_spec_problem(spec: str) -> str | None:
    """Why `spec` ("static:4", "heuristic", "confidence:0.4,refit=true", ...) is not a policy spec, or None."""
    try:
        parse_spec(spec)
    except ValueError as err:
        return str(err)
    return None


def _policy_problems(policy: PolicyConfig) -> list[str]:
    specs = {"policy.default": policy.default}
    problems = []
    for domain in DOMAINS:
        key, override = f"policy.per_domain.{domain}", getattr(policy.per_domain, domain)
        if override.name is not None:
            specs[f"{key}.name"] = override.name
        k_max, threshold = override.k_max, override.threshold
        problems += _check(f"{key}.k_max", k_max is None or 1 <= k_max <= MAX_LOOKAHEAD,
                           f"null or an integer in [1, {MAX_LOOKAHEAD}]", k_max)
        problems += _check(f"{key}.threshold", threshold is None or not UNIT_KNOB.check(threshold), "null or a number in [0, 1]", threshold)
        problems += _check(f"{key}.draft", override.draft in (None, AUTO, *SOURCES),
                           f"a configured draft source for domain {domain}: {_one_of((*SOURCES, AUTO))}", override.draft)
    problems += _sources_problems("policy.auto_sources", policy.auto_sources, SOURCES)
    problems += [f"{key}: {policy_spec_problem(spec)}" for key, spec in specs.items() if policy_spec_problem(spec)]
    if policy.registry is not None and is_remote(policy.registry):
        return problems + _uri_problems("policy.registry", policy.registry)
    registry = Path(local_path(policy.registry)) if policy.registry is not None else None
    usable = registry is None or registry.is_dir() or not registry.exists()  # made by the first retraining
    return problems + _check("policy.registry", usable, "a directory", policy.registry)


def _registry_endpoint_problems(cfg: JobConfig) -> list[str]:
    """Workers load a remote registry's policies themselves, through their environment's AWS_ENDPOINT_URL:
    with storage.endpoint set, that variable must say the same (runtime_env env_vars on a cluster)."""
    endpoint, registry = cfg.storage.endpoint, cfg.policy.registry
    if endpoint is None or registry is None or not is_remote(registry) or os.environ.get("AWS_ENDPOINT_URL") == endpoint:
        return []
    return [f"policy.registry: {registry} is read by the workers through AWS_ENDPOINT_URL; set it to storage.endpoint "
            f"({endpoint}) in the job's environment (runtime_env env_vars on a cluster)"]


def _sources_problems(key: str, sources: list[str], known: tuple[str, ...]) -> list[str]:
    """A non-empty list of distinct draft sources out of `known`."""
    return [
        *_check(key, sources, "at least one draft source", sources),
        *_check(key, all(s in known for s in sources), f"draft sources out of {', '.join(known)}", sources),
        *_check(key, len(set(sources)) == len(sources), "each draft source once", sources),
    ]


def _cluster_problems(c: ClusterConfig) -> list[str]:
    return [
        *_check("cluster.address", c.address is None or c.address, "null (local) or an address", c.address),
        *_check("cluster.num_workers", c.num_workers >= 1, "an integer >= 1", c.num_workers),
        *_check("cluster.gpus_per_worker", c.gpus_per_worker >= 0, "a number >= 0 (0 = CPU)", c.gpus_per_worker),
        *_check("cluster.max_in_flight", c.max_in_flight >= 1, "an integer >= 1", c.max_in_flight),
        *_check("cluster.batch_timeout_s", c.batch_timeout_s > 0, "a number > 0", c.batch_timeout_s),
        *_check("cluster.max_retries", c.max_retries >= 0, "an integer >= 0", c.max_retries),
        *_check("cluster.start_timeout_s", c.start_timeout_s > 0, "a number > 0", c.start_timeout_s),
        *_check("cluster.gpus_per_worker", math.isfinite(c.gpus_per_worker), "a finite number", c.gpus_per_worker),
    ]


def _output_problems(output: OutputConfig) -> list[str]:
    rows = _check("output.rows_per_file", output.rows_per_file >= 1, "an integer >= 1", output.rows_per_file)
    if output.dir is not None and is_remote(output.dir):  # reached when the sink opens, before any model loads
        return rows + _uri_problems("output.dir", output.dir)
    directory = Path(local_path(output.dir or "."))
    return [
        *rows,
        *_check("output.dir", _creatable_dir(directory), "a writable directory", output.dir),
        *_check("output.dir", forbidden_run_dir(directory) is None,
                "a directory of the run's own, not the filesystem root or the home directory", output.dir),
    ]


def forbidden_run_dir(path: Path) -> str | None:
    """Why `path` can never be a run directory (the filesystem root, the home directory), or None."""
    path = Path(path).resolve()
    if path == Path(path.anchor):
        return "is the filesystem root; a run needs a directory of its own"
    if path == Path.home().resolve():
        return "is the home directory; a run needs a directory of its own"
    return None


def _creatable_dir(path: Path) -> bool:
    """True when `path` is a writable dir, or its nearest existing ancestor is one (so it can be made)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)

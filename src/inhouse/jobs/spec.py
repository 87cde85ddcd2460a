"""A job request -> a checked job row -> the training recipe it runs.

The request speaks OpenAI (`hyperparameters` or `method.supervised.hyperparameters`
with n_epochs, batch_size, learning_rate_multiplier, each a number or "auto"; or
`method: {"type": "dpo", "dpo": {"hyperparameters": {..., "beta"}}}`: preference tuning,
recipe method dpo, on a training file of preference pairs),
plus `recipe`: any recipe field (method: qlora, lora_r, max_seq_length...)
except the ones that name files or folders, which the server sets itself,
and `devices`: the GPUs the job runs on ("auto": the first one free).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inhouse import paths
from inhouse.adapters import registry
from inhouse.errors import ConflictError, InvalidInputError, NotFoundError
from inhouse.jobs.files import blob
from inhouse.jobs.store import ACTIVE, Store, new_id, now
from inhouse.model.template import BUILTIN_TEMPLATES
from inhouse.model.tiny import NAME as BUILTIN
from inhouse.recipe import Recipe
from inhouse.train.pair_source import is_pair_file

# devices/strategy too: a job runs as one process on the GPU its request's `devices` names.
SERVER_SET = ("base_model", "train_file", "train_files", "validation_file", "output_name", "devices", "strategy")
DEFAULT_LR = Recipe.model_fields["learning_rate"].default
MAX_DEVICES = 1  # GPUs per job: multi-GPU training is issue #20


class BadField(InvalidInputError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


METHODS = ("supervised", "dpo")  # OpenAI's method types this server trains


def hyperparameters(given: dict[str, Any] | None, method: str = "supervised") -> dict[str, Any]:
    """OpenAI's three (and DPO's beta), with "auto" resolved to the recipe's defaults."""
    given = {k: v for k, v in (given or {}).items() if v is not None and v != "auto"}
    known = {"n_epochs", "batch_size", "learning_rate_multiplier", *(("beta",) if method == "dpo" else ())}
    unknown = set(given) - known
    if unknown:
        raise BadField(f"unknown hyperparameter {sorted(unknown)[0]!r}", f"hyperparameters.{sorted(unknown)[0]}")
    hp = {"n_epochs": given.get("n_epochs", Recipe.model_fields["epochs"].default),
          "batch_size": given.get("batch_size", Recipe.model_fields["batch_size"].default),
          "learning_rate_multiplier": given.get("learning_rate_multiplier", 1.0)}
    return hp | ({"beta": given.get("beta", Recipe.model_fields["dpo_beta"].default)} if method == "dpo" else {})


HP_FIELDS = {"epochs": "n_epochs", "batch_size": "batch_size", "learning_rate": "learning_rate_multiplier",
             "dpo_beta": "beta"}


def method_of(body: Any) -> tuple[str, dict[str, Any]]:
    """The job's method type and its hyperparameters, as OpenAI's request names them."""
    method = body.method or {"type": "supervised"}
    kind = method.get("type")
    if kind not in METHODS:
        raise BadField(f"method type {kind!r} is not supported (use {' or '.join(map(repr, METHODS))})",
                       "method.type")
    return kind, hyperparameters((method.get(kind) or {}).get("hyperparameters") or body.hyperparameters, kind)


def with_method(kind: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields with the method the job type trains: a dpo job is recipe method dpo."""
    asked = recipe.get("method")
    if kind == "dpo" and asked not in (None, "dpo"):
        raise BadField(f"recipe.method {asked!r} contradicts method type 'dpo'; leave recipe.method out",
                       "recipe.method")
    if kind != "dpo" and asked == "dpo":
        raise BadField("recipe.method dpo needs method type 'dpo' (and a file of preference pairs)", "recipe.method")
    return {**recipe, "method": "dpo"} if kind == "dpo" else recipe


def check_hyperparameters(hp: dict[str, Any], recipe: dict[str, Any]) -> None:
    """OpenAI's hyperparameters checked against the recipe's own bounds now, so a job never fails later
    (or runs for ever) on `n_epochs: "abc"` or `10**12`."""
    for name, value in hp.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadField(f"hyperparameters.{name} must be a number or \"auto\", not {value!r}"[:200],
                           f"hyperparameters.{name}")
    values = {"epochs": hp["n_epochs"], "batch_size": hp["batch_size"],
              "learning_rate": recipe.get("learning_rate", DEFAULT_LR) * hp["learning_rate_multiplier"],
              **({"dpo_beta": hp["beta"]} if "beta" in hp else {})}
    try:
        Recipe(**{**recipe, **values})
    except ValidationError as e:
        first = e.errors()[0]
        name = HP_FIELDS.get(str(first["loc"][0]) if first["loc"] else "", "")
        if not name:
            raise BadField(f"recipe: {first['msg']}", "recipe") from None
        raise BadField(f"hyperparameters.{name}: {first['msg']}", f"hyperparameters.{name}") from None


def check_recipe(fields: dict[str, Any] | None) -> dict[str, Any]:
    """The extension object's recipe fields, validated now (not when the job runs)."""
    fields = dict(fields or {})
    for name in fields:
        if name in SERVER_SET:
            raise BadField(f"recipe.{name} is set by the server (from the job's files, model and devices)",
                           f"recipe.{name}")
    start = fields.get("init_adapter")
    if start is not None and start not in registry.names():
        raise BadField(f"recipe.init_adapter must name an adapter of this server's library, not {str(start)[:200]!r}",
                       "recipe.init_adapter")
    template = fields.get("chat_template")
    if template is not None and template not in BUILTIN_TEMPLATES:
        raise BadField(f"recipe.chat_template must be one of {', '.join(BUILTIN_TEMPLATES)} over HTTP",
                       "recipe.chat_template")
    try:
        Recipe(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BadField(f"recipe.{field}: {first['msg']}", f"recipe.{field}") from None
    return fields


def trainable(base_id: str, base_ref: str) -> dict[str, str]:
    """The bases a client may name (id -> reference): the served base, builtin:tiny, and every model
    folder under INHOUSE_HOME/models (by its name: a client never names a path)."""
    found = {base_id: base_ref, BUILTIN: BUILTIN}
    root = paths.models()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / "config.json").is_file() and not folder.name.startswith("."):
            found.setdefault(f"models/{folder.name}", str(folder.resolve()))
    return found


@dataclass(frozen=True)
class Capabilities:
    """What this server lets a job use; clients read the same through GET /v1/fine_tuning/capabilities."""

    base_id: str
    base_ref: str
    model_paths: bool = False  # a job may name a model folder by its absolute path (--allow-model-paths)
    gpus: tuple[int, ...] = ()  # the GPUs jobs run on; none: the CPU
    max_devices: int = MAX_DEVICES

    def bases(self) -> dict[str, str]:
        """Listed afresh: a folder put under INHOUSE_HOME/models is offered without a restart."""
        return trainable(self.base_id, self.base_ref)


def base_for(model: str, caps: Capabilities) -> str:
    """The base a job trains: a name the server offers, or a model folder typed as a path where allowed."""
    bases = caps.bases()
    if model in bases or model == caps.base_ref:
        return bases.get(model, caps.base_ref)
    if model.startswith(("/", "~")) or Path(model).is_absolute() or (caps.model_paths and _pathlike(model)):
        return typed_folder(model, caps.model_paths, bases)
    raise NotFoundError(f"The model '{_shown(model)}' cannot be fine-tuned here; choose one of "
                        f"{', '.join(bases)} (model folders go under {paths.models()})")


def _shown(model: str) -> str:
    """A typed name as quoted back: a pasted page of text is not echoed whole."""
    return model if len(model) <= 200 else model[:200] + "..."


def _pathlike(model: str) -> bool:
    return "/" in model or "\\" in model or model.startswith(".")


def typed_folder(model: str, allowed: bool, bases: dict[str, str]) -> str:
    """The resolved folder a typed path names, refused unless the server allows typed paths and the
    folder is a Hugging Face model (its config.json): the lineage then records where it really is."""
    if not allowed:
        raise BadField(f"This server does not train on a folder named by its path ('{_shown(model)}'): start "
                       "it with --allow-model-paths (on by default only on loopback without an API key), or put "
                       f"the folder under {paths.models()} and name it models/NAME", "model")
    if not Path(model).is_absolute():
        raise BadField(f"'{_shown(model)}' is not an absolute path: type the model folder's full path "
                       f"(/...), or choose one of {', '.join(bases)}", "model")
    try:
        folder = Path(model).resolve()
        problem = _not_a_model(folder)
    except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a symlink loop, no permission
        problem = f"cannot be read ({type(e).__name__})"
    if problem:
        raise BadField(f"'{_shown(model)}' {problem}", "model")
    return str(folder)


def _not_a_model(folder: Path) -> str | None:
    if not folder.exists():
        return "does not exist on the server"
    if not folder.is_dir():
        return "is a file, not a model folder"
    return None if (folder / "config.json").is_file() else "is not a Hugging Face model folder (it has no config.json)"


def devices(asked: list[int] | str | None, gpus: tuple[int, ...]) -> list[int] | None:
    """The GPUs a job asked for (None: the first free one), refused now rather than queued forever."""
    if asked is None or asked == "auto":
        return None
    asked = sorted(set(asked))
    if len(asked) > MAX_DEVICES:
        raise BadField("Multi-GPU training is not built yet (issue #20): ask for one GPU, e.g. devices [0], "
                       "or \"auto\"", "devices")
    if asked[0] not in gpus:
        have = f"its GPUs are {', '.join(map(str, gpus))}" if gpus else "it has no GPU: jobs run on the CPU"
        raise BadField(f"GPU {asked[0]} is not on this server ({have})", "devices")
    return asked


def create_job(store: Store, body: Any, caps: Capabilities) -> dict[str, Any]:
    """Check a create request and record the job (status validating_files)."""
    base = base_for(body.model, caps)
    kind, hp = method_of(body)
    for param in ("training_file", "validation_file"):
        file_id = getattr(body, param)
        if file_id is not None:
            _fits_method(_uploaded(store, file_id, param), kind, param)
    recipe = check_recipe(with_method(kind, body.recipe or {}))
    check_hyperparameters(hp, recipe)
    gpus = devices(body.devices, caps.gpus)
    job_id = new_id("ftjob")
    row = {"id": job_id, "created_at": now(), "status": "validating_files", "model": body.model, "base": base,
           "training_file": body.training_file, "validation_file": body.validation_file, "suffix": body.suffix,
           "seed": body.seed if body.seed is not None else secrets.randbelow(2**31), "metadata": body.metadata,
           "hyperparameters": hp, "method": {"type": kind, kind: {"hyperparameters": hp}},
           "recipe": recipe, "output_name": f"{body.suffix or 'ft'}-{job_id[6:14]}", "devices": gpus}
    store.insert("jobs", row)
    store.add_event(job_id, f"Validating training file: {body.training_file}")
    return store.get("jobs", job_id, "fine-tuning job")


def _uploaded(store: Store, file_id: str, param: str) -> dict[str, Any]:
    try:
        return store.get("files", file_id, "file")
    except NotFoundError:
        raise BadField(f"invalid {param}: no uploaded file with id '{file_id}'", param) from None


def _fits_method(row: dict[str, Any], kind: str, param: str) -> None:
    """A dpo job trains on preference pairs, a supervised one on conversations: a mix-up is refused now."""
    pairs = is_pair_file(blob(row["sha256"]))
    if pairs != (kind == "dpo"):
        held = "preference pairs" if pairs else "conversations, not preference pairs"
        want = "method type 'dpo'" if pairs else "method type 'supervised'"
        raise BadField(f"invalid {param}: {row['id']} ({row['filename']}) holds {held}; train it with {want}", param)


def file_problem(store: Store, job: dict[str, Any]) -> dict[str, Any] | None:
    """The error of a job whose files cannot be trained on (OpenAI's error object), or None."""
    for param in ("training_file", "validation_file"):
        if job[param] is None:
            continue
        row = store.select("select * from files where id = ?", (job[param],))
        if not row:
            return {"code": f"invalid_{param}", "param": param, "message": f"{job[param]} no longer exists"}
        if row[0]["status"] != "processed":
            return {"code": f"invalid_{param}", "param": param,
                    "message": f"{job[param]} ({row[0]['filename']}) cannot be trained on: {row[0]['status_details']}"}
    return None


def recipe_for(job: dict[str, Any], store: Store) -> Recipe:
    """The training recipe of a job: its recipe fields, hyperparameters, files and name."""
    hp = job["hyperparameters"]
    files = {p: blob(store.get("files", job[p], "file")["sha256"]) if job[p] else None
             for p in ("training_file", "validation_file")}
    return Recipe(**{**job["recipe"], "base_model": job["base"], "train_file": files["training_file"],
                     "validation_file": files["validation_file"], "seed": job["seed"], "output_name": job["output_name"],
                     "epochs": hp["n_epochs"], "batch_size": hp["batch_size"],
                     "learning_rate": job["recipe"].get("learning_rate", DEFAULT_LR) * hp["learning_rate_multiplier"],
                     **({"dpo_beta": hp["beta"]} if "beta" in hp else {})})


def cancel(store: Store, job_id: str) -> dict[str, Any]:
    """Cancelled at once; a running job's process stops at its next step and publishes nothing."""
    job = store.get("jobs", job_id, "fine-tuning job")
    if job["status"] not in ACTIVE:
        raise ConflictError(f"Job {job_id} has already {job['status']}; only a queued or running job can be cancelled.")
    store.update("jobs", job_id, cancel_requested=1)
    if store.transition(job_id, ACTIVE, "cancelled", finished_at=now()):
        store.add_event(job_id, "Cancellation requested")
    return store.get("jobs", job_id, "fine-tuning job")

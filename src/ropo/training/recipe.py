"""Training recipes: a YAML file plus ``key=value`` overrides, parsed and checked key by key.

The first step of ``ropo train``: it imports nothing of training above it. ``ropo.training.spec``
resolves a parsed recipe into the run specification (PEFT config and ``DPOConfig``) that is trained.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import yaml

from ropo.errors import RoPOError
from ropo.methods import REGISTRY, find_method, get_method, known_names
from ropo.models.loading import DTYPES

MODEL_DTYPES = tuple(DTYPES)


class RecipeError(RoPOError, ValueError):
    """A recipe key or value that is wrong; the message names the key and the file."""


@dataclass
class ModelSection:
    #: A transformers folder or hub id, ``default`` (SmolLM2-135M-Instruct) or ``tiny:<arch>`` (random, for tests).
    name_or_path: str = "default"
    #: dtype of the frozen base weights; adapters keep their own dtype (fp32).
    dtype: str = "float32"
    #: Run Python code shipped with the model (transformers' ``trust_remote_code``). Off unless the
    #: recipe says so: never left to an interactive prompt that ``yes | ropo train`` would answer.
    trust_remote_code: bool = False


@dataclass
class DataSection:
    #: Preference data: a .jsonl/.json/.parquet/.csv file, a `datasets` folder, a hub name, or ``demo``.
    train: str = "demo"
    #: Optional held-out preference data (same forms as ``train``).
    eval: str | None = None
    #: Splits to read from a hub dataset or a DatasetDict folder, for ``train`` and ``eval``.
    split: str = "train"
    eval_split: str = "test"
    #: Use only the first N rows (None: all).
    max_rows: int | None = None


@dataclass
class Recipe:
    """Everything a run needs. ``training`` takes any field of TRL's ``DPOConfig`` (beta, loss_type,
    label_smoothing, ld_alpha, learning_rate, max_steps, save_steps, ...); ``adapter`` takes the
    fields of ``RoPOConfig`` for ``method: ropo`` or of the PEFT config for the baselines."""

    output_dir: str = "runs/default"
    method: str = "ropo"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    adapter: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    #: Every N steps: sample generations and log their mean token length (0: off).
    sample_every: int = 10
    sample_prompts: int = 4
    sample_max_new_tokens: int = 48
    #: Every N steps: orthogonality error and hyperspherical-energy change per layer (0: off).
    metrics_every: int = 10

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Most values a recipe may hold once its aliases are expanded. A few hundred bytes of nested
#: aliases expand to billions of values (and printing one in an error message exhausts memory).
MAX_RECIPE_VALUES = 100_000


class _RecipeLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping (YAML loaders keep the last,
    silently), naming both lines. YAML 1.1 reads ``5e-6`` (no dot) as a string; in a recipe it
    is always meant as a number."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_scalar(key_node)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice (lines {lines[key]} and {line}); write it once",
                    key_node.start_mark,
                )
            lines[key] = line
        return super().construct_mapping(node, deep)


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """The YAML value of ``text``, refused (``yaml.YAMLError``) when a mapping repeats a key or
    the aliases expand to more than ``MAX_RECIPE_VALUES`` values (checked before building any)."""
    loader = _RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the values ``root`` holds with every alias expanded, without expanding any: a shared
    node's count is computed once. A node that contains itself is refused too."""
    counts: dict[int, int] = {}
    open_nodes: set[int] = set()

    def count(node: yaml.Node) -> int:
        if id(node) in counts:
            return counts[id(node)]
        if id(node) in open_nodes:
            raise yaml.constructor.ConstructorError(None, None, "a value contains itself (a recursive alias)", node.start_mark)
        open_nodes.add(id(node))
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode) else []
        )
        total = 1 + sum(count(child) for child in children)
        if total > MAX_RECIPE_VALUES:
            raise yaml.constructor.ConstructorError(
                None, None, f"the recipe expands to more than {MAX_RECIPE_VALUES:,} values (nested aliases?)",
                node.start_mark,
            )
        open_nodes.discard(id(node))
        counts[id(node)] = total
        return total

    count(root)


_SECTIONS = {"model": ModelSection, "data": DataSection}
_FREE_FORM = ("adapter", "training")


def _check_type(key: str, value: Any, annotation: str, source: str) -> None:
    """Scalar recipe fields are ``int``, ``str`` or ``bool``, optionally ``| None``."""
    optional = annotation.endswith(" | None")
    kind = annotation.removesuffix(" | None")
    if value is None and optional:
        return
    if not isinstance(value, {"int": int, "str": str, "bool": bool}[kind]) or (kind != "bool" and isinstance(value, bool)):
        expected = f"{kind} or null" if optional else kind
        raise RecipeError(f"{source}: {key} must be {expected}, got {value!r}")


def _merge_section(cls: type, values: Any, prefix: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"{source}: {prefix} must be a mapping, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RecipeError(
            f"{source}: unknown key(s) {[f'{prefix}{k}' for k in unknown]}; known: {sorted(prefix + k for k in known)}"
        )
    result = {}
    for key, value in values.items():
        spec = known[key]
        if key in _SECTIONS and prefix == "":
            result[key] = _merge_section(_SECTIONS[key], value, f"{key}.", source)
        elif key in _FREE_FORM and prefix == "":
            if not isinstance(value, dict):
                raise RecipeError(f"{source}: {key} must be a mapping, got {value!r}")
            result[key] = dict(value)
        else:
            _check_type(prefix + key, value, spec.type, source)
            result[key] = value
    return cls(**result)


def _set(values: dict[str, Any], key: str, value: Any, item: str) -> None:
    """Set the dotted ``key`` of ``values``, creating sections as needed; ``item`` is what errors quote."""
    node = values
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {item!r}: {part!r} is not a section")
    node[leaf] = value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``["training.beta=0.2", "adapter={}"]`` to a recipe mapping (values parsed as YAML).

    A dotted key sets one value, creating sections as needed; a mapping value replaces the
    whole section.
    """
    values = copy.deepcopy(values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like key=value (e.g. training.beta=0.2)")
        _set(values, key, parse_yaml(raw) if raw else "", item)
    return values


def _read_values(path: str | Path) -> dict[str, Any]:
    from ropo.io import read_text_file

    text = read_text_file(Path(path), RecipeError, "recipe file")
    try:
        values = parse_yaml(text) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(values).__name__}")
    return values


def parse_recipe(path: str | Path | None, overrides: list[str] = (),
                 settings: Mapping[str, Any] | None = None) -> tuple[Recipe, str]:
    """Read, merge and check a recipe, and the source its errors name. ``settings`` (dotted keys and
    typed values, as a program sets them) apply before ``overrides`` (``key=value`` strings, as a
    user types them). Raises RecipeError naming the key and file."""
    source = str(path) if path else "<defaults>"
    values = _read_values(path) if path is not None else {}
    for key, value in (settings or {}).items():
        _set(values, key, copy.deepcopy(value), key)
    if overrides:
        values = apply_overrides(values, list(overrides))
        source += " + command-line overrides"
    recipe = _merge_section(Recipe, values, "", source)
    method = find_method(recipe.method)
    if method is not None:
        recipe.method = method.name
        recipe.adapter = adapter_options(recipe.adapter, recipe.method, source)
    validate_recipe(recipe, source)
    return recipe, source


def adapter_options(adapter: dict[str, Any], method: str, source: str) -> dict[str, Any]:
    """The ``adapter`` options of ``method``, so that one recipe trains any method (``method=lora``
    on a RoPO recipe): the shared options plus the method's own section (``adapter.<method>``,
    which wins). Sections of other methods, and shared options that only other methods take
    (RoPO's ``preset`` under ``method: lora``), are set aside with a warning naming them; an
    option no method takes is left in, to be refused with the method's list of keys.
    """
    own = adapter.get(method, {})
    if not isinstance(own, dict):
        raise RecipeError(f"{source}: adapter.{method} must be a mapping of {method}'s options, got {own!r}")
    shared = {key: value for key, value in adapter.items() if find_method(key) is None}
    takes = get_method(method).option_names()
    others = {other: entry.option_names() for other, entry in REGISTRY.items() if other != method}
    aside = {
        key: sorted(other for other, names in others.items() if key in names)
        for key in shared if key not in takes and key not in own
    }
    aside = {key: owners for key, owners in aside.items() if owners}
    if aside:
        listed = ", ".join(f"adapter.{key} (an option of {'/'.join(owners)})" for key, owners in aside.items())
        warnings.warn(f"{source}: method {method!r} does not take {listed}; set aside for this run", stacklevel=3)
    return {**{key: value for key, value in shared.items() if key not in aside}, **own}


def validate_recipe(recipe: Recipe, source: str) -> None:
    """Checks of the recipe's own keys (the adapter and TRL options are checked when it is resolved)."""
    if find_method(recipe.method) is None:
        raise RecipeError(f"{source}: method must be one of {known_names()}, got {recipe.method!r}")
    if recipe.model.dtype not in MODEL_DTYPES:
        raise RecipeError(f"{source}: model.dtype must be one of {MODEL_DTYPES}, got {recipe.model.dtype!r}")
    for key in ("sample_every", "sample_prompts", "sample_max_new_tokens", "metrics_every"):
        if getattr(recipe, key) < 0:
            raise RecipeError(f"{source}: {key} must be >= 0, got {getattr(recipe, key)}")
    if recipe.data.max_rows is not None and recipe.data.max_rows < 1:
        raise RecipeError(f"{source}: data.max_rows must be >= 1, got {recipe.data.max_rows}")
    if not recipe.output_dir.strip():
        raise RecipeError(f"{source}: output_dir is empty: name the run's folder (e.g. output_dir=runs/my-run)")
    _check_output_layer(recipe, source)
    _check_managed_training_keys(recipe, source)


#: ``training`` keys TRL takes but ropo does the job of: set there, they would be ignored.
_MANAGED_TRAINING_KEYS = {
    "resume_from_checkpoint": "continue a run with `ropo train RECIPE --resume` (it checks the recipe and the "
    "data against the run's); a checkpoint of another run is not a starting point ropo can check",
}


def _check_managed_training_keys(recipe: Recipe, source: str) -> None:
    for key, instead in _MANAGED_TRAINING_KEYS.items():
        if recipe.training.get(key) not in (None, False, ""):
            raise RecipeError(f"{source}: training.{key} is not taken: {instead}")
    if recipe.training.get("push_to_hub"):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise RecipeError(f"{source}: training.push_to_hub needs the Hugging Face Hub, but HF_HUB_OFFLINE is set; "
                              "unset it (and log in), or leave push_to_hub out and upload the adapter later")


#: Output layers TRL multiplies by directly (``lm_head.weight``): an adapter there is never used.
_OUTPUT_LAYERS = ("lm_head",)


def _check_output_layer(recipe: Recipe, source: str) -> None:
    targets = recipe.adapter.get("target_modules")
    if not get_method(recipe.method).has_adapter or targets is None:
        return
    if isinstance(targets, str):
        try:
            hit = [name for name in _OUTPUT_LAYERS if re.fullmatch(targets, name)]
        except re.error:
            return  # the adapter config names the bad regex
    else:
        hit = [name for name in _OUTPUT_LAYERS if name in list(targets)]
    if hit:
        raise RecipeError(
            f"{source}: adapter.target_modules includes {hit[0]}: TRL computes log-probs from {hit[0]}.weight "
            f"directly, so an adapter there would never train; leave {hit[0]} out of target_modules"
        )

"""The plugin manager: pluggy hooks, per-kind registries, entry points, blocking, failures.

sds-core's own plugins (the `image` generator, the SDS family of losses: `sds_core.core_plugin`)
come through its entry point `core` like every other package's.

Load order (docs/design.md): block the names in $SDS_BLOCK_PLUGINS, load the entry points of group
`sds`, `check_pending()`, then call the registration hooks. A duplicate
name is an error naming both providers; a plugin that fails to import is reported by name and the
others still load.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy

from sds_core import hookspecs
from sds_core.errors import PluginError

Kind = Literal["generator", "guidance", "loss"]
KINDS: tuple[Kind, ...] = ("generator", "guidance", "loss")
BLOCK_ENV = "SDS_BLOCK_PLUGINS"
ENTRY_POINT_GROUP = "sds"

# generator name -> preset name (or "default") -> config-tree patch (`PluginSpec.recipes`)
Recipes = Mapping[str, Mapping[str, Mapping[str, Any]]]

_HOOK_OF_KIND = {
    "generator": "sds_register_generators",
    "guidance": "sds_register_guidance",
    "loss": "sds_register_losses",
}


@dataclass(frozen=True)
class PluginSpec:
    """One registered component.

    factory: a callable, or "module:attr" imported only when the component is built; it is
        called as factory(config, context) with the validated config dataclass and a
        `sds_core.protocols.BuildContext`.
    config: the dataclass of the component's options (defaults follow the paper).
    presets: config-tree overrides by preset name ("paper", "paper-cpu", "draft"), plus "default" applied
        whatever the preset; they may touch any section (a generator sets its learning rate).
    retired: options the component no longer has -> what to do instead; a config that still sets
        one (a `--set`, a file, an older run's config.json) gets one deprecation line and the key
        is dropped, so that it keeps working.
    recipes: a guidance component's recommended settings for the other sections, by generator
        name, then preset name (or "default", whatever the preset): {generator: {preset: tree}}.
        They apply when this guidance is chosen with that generator, after every plugin's presets
        and before the config file and --set (`sds_core.resolve.resolve_config`).
    """

    name: str
    factory: Callable[..., Any] | str
    config: type
    description: str
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    retired: Mapping[str, str] = field(default_factory=dict)
    recipes: Recipes = field(default_factory=dict)
    provider: str = ""
    version: str = ""
    kind: Kind | None = None  # set by the registry it is added to

    def load_factory(self) -> Callable[..., Any]:
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{self.name!r} from {self.provider} cannot be loaded ({type(exc).__name__}: {exc})"
            ) from exc

    def build(self, config: Any, context: Any) -> Any:
        """factory(config, context), checked against the protocol of the spec's kind."""
        built = self.load_factory()(config, context)
        if self.kind is not None:
            from sds_core import protocols

            protocol = {"generator": protocols.Generator, "guidance": protocols.Guidance}.get(
                self.kind, protocols.DistillationLoss
            )
            if not isinstance(built, protocol):
                members = {*getattr(protocol, "__annotations__", {}), *vars(protocol)}
                missing = [m for m in members if not m.startswith("_") and not hasattr(built, m)]
                lacks, where = ", ".join(sorted(missing)), f"sds_core.protocols.{protocol.__name__}"
                raise PluginError(
                    f"{self.kind} {self.name!r} from {self.provider or 'an unnamed provider'} built a "
                    f"{type(built).__name__} that lacks {lacks} of {where}"
                )
        return built


@dataclass(frozen=True)
class DerivedSpec:
    """A component that is another package's component with other option defaults (`Registry.derive`)."""

    name: str
    base: str
    defaults: Mapping[str, Any]
    description: str
    presets: Mapping[str, Mapping[str, Any]]
    provider: str
    version: str
    recipes: Recipes = field(default_factory=dict)


def check_recipes(name: str, recipes: Recipes) -> None:
    """A recipe is {generator: {preset: {section: {...}}}}: each level a mapping."""
    for generator, by_preset in recipes.items():
        if not isinstance(by_preset, Mapping):
            raise PluginError(f"the recipe of {name!r} for {generator!r} is not a mapping of presets")
        for preset, patch in by_preset.items():
            if not isinstance(patch, Mapping) or not all(isinstance(v, Mapping) for v in patch.values()):
                raise PluginError(f"the recipe of {name!r} for {generator!r}, {preset!r} is not a mapping of sections")


def config_with_defaults(base: type, defaults: Mapping[str, Any], name: str, doc: str) -> type:
    """A subclass of the config dataclass `base` whose listed fields have other defaults."""
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(defaults) - fields)
    if unknown:
        raise PluginError(f"{name!r} sets {', '.join(unknown)}, which {base.__name__} does not have")
    hints = typing.get_type_hints(base)
    new = [(key, hints[key], field(default=value)) for key, value in defaults.items()]
    config = dataclasses.make_dataclass(name, new, bases=(base,))
    config.__doc__ = doc
    return config


class Registry:
    """The components of one kind, by name."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._specs: dict[str, PluginSpec] = {}
        self._derived: list[DerivedSpec] = []
        self._provider = ("", "")

    def _bind(self, provider: str, version: str) -> None:
        self._provider = (provider, version)

    def add(self, spec: PluginSpec) -> None:
        """Register `spec`; a name already taken is an error naming both providers."""
        provider, version = self._provider
        spec = dataclasses.replace(
            spec, provider=spec.provider or provider, version=spec.version or version, kind=self.kind
        )
        if spec.recipes and self.kind != "guidance":
            raise PluginError(f"{self.kind} {spec.name!r} ships recipes; only a guidance component may")
        check_recipes(spec.name, spec.recipes)
        existing = self._specs.get(spec.name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {spec.name!r} is registered twice: by {existing.provider} "
                f"and by {spec.provider}; uninstall one or block it with {BLOCK_ENV}"
            )
        self._specs[spec.name] = spec

    def derive(
        self,
        name: str,
        base: str,
        defaults: Mapping[str, Any],
        description: str,
        presets: Mapping[str, Mapping[str, Any]] | None = None,
        recipes: Recipes | None = None,
    ) -> None:
        """Register `name` as the component `base` (which any package may provide) with other
        option defaults and extra presets: its factory and options are the base's, so a package
        can offer a configuration of another package's component without importing it. Resolved
        once every package has registered (`resolve_derived`).

        recipes: as `PluginSpec.recipes`; the derived component's own only (a base's recipes are
        tuned to the base's defaults, e.g. its weights, so they are not inherited)."""
        provider, version = self._provider
        derived = DerivedSpec(name, base, dict(defaults), description, presets or {}, provider, version, recipes or {})
        self._derived.append(derived)

    def resolve_derived(self) -> list[PluginFailure]:
        """Add the derived components whose base is registered; the others are failures."""
        failures = []
        for derived in self._derived:
            base = self._specs.get(derived.base)
            if base is None:
                error = f"it is {self.kind} {derived.base!r} with other defaults, and {derived.base!r} is not installed"
                failures.append(PluginFailure(derived.name, derived.provider, error))
                continue
            title = "".join(part.title() for part in derived.name.replace("_", "-").split("-"))
            config = config_with_defaults(base.config, derived.defaults, f"{title}Config", derived.description)
            presets: dict[str, dict[str, Any]] = {key: dict(value) for key, value in base.presets.items()}
            for key, sections in derived.presets.items():
                preset = presets.setdefault(key, {})
                for section, options in sections.items():
                    preset[section] = {**preset.get(section, {}), **options}
            self._bind(derived.provider, derived.version)
            spec = PluginSpec(
                derived.name, base.factory, config, derived.description, presets, base.retired, derived.recipes
            )
            self.add(spec)
        self._derived.clear()
        return failures

    def get(self, name: str) -> PluginSpec:
        try:
            return self._specs[name]
        except KeyError:
            available = ", ".join(sorted(self._specs)) or "none installed"
            raise PluginError(f"unknown {self.kind} {name!r}; available: {available}") from None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[PluginSpec]:
        return iter(self._specs[n] for n in self.names())


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or could not register."""

    name: str
    provider: str
    error: str


@dataclass
class Catalog:
    """Everything the installed plugins provide."""

    registries: dict[Kind, Registry]
    failures: list[PluginFailure]
    manager: pluggy.PluginManager

    def registry(self, kind: Kind) -> Registry:
        return self.registries[kind]

    def get(self, kind: Kind, name: str) -> PluginSpec:
        try:
            return self.registries[kind].get(name)
        except PluginError as exc:
            if not self.failures:
                raise
            broken = "; ".join(f"{f.name} ({f.provider}): {f.error}" for f in self.failures)
            raise PluginError(f"{exc} (plugins that failed to load: {broken})") from None


def blocked_names(environ: Mapping[str, str] | None = None) -> set[str]:
    """Plugin (entry-point) names listed, comma- or space-separated, in $SDS_BLOCK_PLUGINS."""
    raw = (environ if environ is not None else os.environ).get(BLOCK_ENV, "")
    return {part.strip() for part in raw.replace(",", " ").split() if part.strip()}


def _distribution_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return (ep.value.split(":")[0].split(".")[0], "")
    return (dist.metadata["Name"], dist.version)


# name (also the module in sds_core.losses), class, prefix of <P>Config / <P>_PRESETS in family_config
def load_catalog(
    extra_plugins: Mapping[str, tuple[object, str, str]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Catalog:
    """Build the plugin manager and the registries.

    extra_plugins: name -> (plugin object, provider, version), registered like entry points
        (used by tests and by programs that embed sds).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = blocked_names(environ)
    for name in blocked:
        pm.set_blocked(name)

    providers: dict[str, tuple[str, str]] = {}
    failures: list[PluginFailure] = []

    def register(name: str, plugin: object, provider: str, version: str) -> None:
        if pm.is_blocked(name):
            return
        try:
            pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the others
            failures.append(PluginFailure(name, provider, f"{type(exc).__name__}: {exc}"))
            return
        providers[name] = (provider, version)

    seen: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen or pm.is_blocked(ep.name):
            continue  # the same distribution seen twice on sys.path
        seen.add(ep.name)
        provider, version = _distribution_of(ep)
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - report by name, keep loading the rest
            failures.append(PluginFailure(ep.name, provider, f"{type(exc).__name__}: {exc}"))
            continue
        register(ep.name, plugin, provider, version)
    for name, (plugin, provider, version) in (extra_plugins or {}).items():
        register(name, plugin, provider, version)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc

    registries: dict[Kind, Registry] = {kind: Registry(kind) for kind in KINDS}
    for kind in KINDS:
        hook = getattr(pm.hook, _HOOK_OF_KIND[kind])
        # Each implementation is called on its own so that the registry knows which
        # distribution provides what it adds (for `sds plugins` and duplicate errors).
        for impl in reversed(hook.get_hookimpls()):
            provider, version = providers.get(impl.plugin_name, (impl.plugin_name, ""))
            registry = registries[kind]
            registry._bind(provider, version)
            try:
                impl.function(registry=registry)
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                failures.append(PluginFailure(impl.plugin_name, provider, f"{type(exc).__name__}: {exc}"))
        failures.extend(registries[kind].resolve_derived())
    return Catalog(registries=registries, failures=failures, manager=pm)

"""Device profiles: a versioned, validated JSON document per device and dtype.

A profile holds a model family's parameters (per layer class and global),
the time scale, the per-call overhead, and where the numbers came from
(device, library versions, math mode, date, fit residuals). See
docs/profile-format.md.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import warnings
import zlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional

SCHEMA_VERSION = 5
# version 2 adds the optional 'ops', 'host', 'channels_last', 'power' and 'train' sections,
# version 3 the optional 'correction' (correction.py), version 4 the optional 'trees' (trees.py),
# version 5 trees of their own for each layer class ('trees.classes')
READABLE_VERSIONS = (1, 2, 3, 4, 5)
REQUIRED_PROVENANCE = ("device_name", "dtype", "date", "source")
DTYPES = ("float32", "float16", "bfloat16", "float64")


class ProfileError(ValueError):
    """A profile document is missing, malformed or inconsistent (names the field)."""


@dataclass(frozen=True)
class DeviceProfile:
    """Parameters of one model family fitted on one device, with provenance."""

    name: str
    family: str
    parameters: Mapping[str, Any]  # time_scale_ms_per_mmac, overhead_ms, [globals], classes
    provenance: Mapping[str, Any]
    fit_data: Optional[Mapping[str, Any]] = field(default=None, compare=False)
    schema_version: int = SCHEMA_VERSION
    # op cost classes beyond Conv2d/Linear (opcost.py), and eager-mode host costs (eager.py)
    ops: Optional[Mapping[str, Any]] = None
    host: Optional[Mapping[str, Any]] = None
    # the layer family's parameters fitted on channels-last (NHWC) convolutions
    channels_last: Optional[Mapping[str, Any]] = None
    # energy per call: static power, energy per FLOP and per byte, forward and training step
    # (energy.py); None: energy unavailable
    power: Optional[Mapping[str, Any]] = None
    # training-step (forward + backward) parameters of the layer family and op classes
    # (trainfit.py); None: training steps cannot be costed
    train: Optional[Mapping[str, Any]] = None
    # the neighbour correction's settings (correction.py); its points are ``fit_data``
    correction: Optional[Mapping[str, Any]] = None
    # the residual trees (trees.py): boosted trees of the formula's log residual, fitted on fit_data
    trees: Optional[Mapping[str, Any]] = None
    # what is computed from the profile once and kept (correction.from_profile, trees.of_profile)
    derived: Dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def time_scale_ms_per_mmac(self) -> float:
        return float(self.parameters["time_scale_ms_per_mmac"])

    @property
    def overhead_ms(self) -> float:
        return float(self.parameters["overhead_ms"])

    @property
    def device_name(self) -> str:
        return str(self.provenance["device_name"])

    @property
    def dtype(self) -> str:
        return str(self.provenance["dtype"])

    def to_dict(self) -> Dict[str, Any]:
        version = self.schema_version
        if isinstance(self.trees, Mapping) and "classes" in self.trees:
            version = max(version, 5)  # per-class trees need schema 5 (e.g. put into a schema-4 profile)
        doc = {
            "schema_version": version,
            "name": self.name,
            "family": self.family,
            "parameters": _plain(self.parameters),
            "provenance": _plain(self.provenance),
        }
        if self.ops is not None:
            doc["ops"] = _plain(self.ops)
        if self.host is not None:
            doc["host"] = _plain(self.host)
        if self.channels_last is not None:
            doc["channels_last"] = _plain(self.channels_last)
        if self.power is not None:
            doc["power"] = _plain(self.power)
        if self.train is not None:
            doc["train"] = _plain(self.train)
        if self.correction is not None:
            doc["correction"] = _plain(self.correction)
        if self.trees is not None:
            doc["trees"] = _plain(self.trees)
        if self.fit_data is not None:
            doc["fit_data"] = _plain(self.fit_data)
        return doc

    def to_json(self) -> str:
        return _dumps(self.to_dict(), "") + "\n"

    def save(self, path: str, overwrite: bool = False) -> None:
        """Write the profile as JSON, gzip-compressed where ``path`` ends in '.gz' (the same bytes
        each time: no time stamp); refuses to replace an existing file unless ``overwrite``."""
        path = os.fspath(path)
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
        data = self.to_json().encode("utf-8")
        if path.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        with open(path, "wb") as f:
            f.write(data)


def _dumps(obj, pad: str) -> str:
    """JSON with one key or list item a line, indented by one space a level, except that a
    list of scalars (a fit_data row, a tree's column) is written on one line."""
    inner = pad + " "
    if isinstance(obj, Mapping) and obj:
        return "{\n" + ",\n".join(f"{inner}{json.dumps(str(k))}: {_dumps(v, inner)}"
                                   for k, v in obj.items()) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and any(isinstance(v, (Mapping, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "))


def _plain(obj):
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    return obj


def _number(doc: Mapping, key: str, where: str) -> float:
    if key not in doc:
        raise ProfileError(f"{where}: missing field '{key}'")
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProfileError(f"{where}: field '{key}' must be a finite number, got {value!r}")
    return float(value)


def profile_from_dict(doc: Any, where: str = "profile") -> DeviceProfile:
    """Validate a parsed JSON document and build the profile; errors name the field."""
    from .families import FAMILIES

    if not isinstance(doc, Mapping):
        raise ProfileError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ProfileError(
            f"{where}: field 'schema_version' is {version!r}; this version reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}")
    for key in ("name", "family"):
        if not isinstance(doc.get(key), str) or not doc.get(key):
            raise ProfileError(f"{where}: field '{key}' must be a non-empty string")
    family = FAMILIES.get(doc["family"])
    if family is None:
        raise ProfileError(
            f"{where}: field 'family' is {doc['family']!r}; known: {', '.join(sorted(FAMILIES))}")
    params = doc.get("parameters")
    if not isinstance(params, Mapping):
        raise ProfileError(f"{where}: missing object field 'parameters'")
    _check_parameters(family, params, where)
    prov = doc.get("provenance")
    if not isinstance(prov, Mapping):
        raise ProfileError(f"{where}: missing object field 'provenance'")
    for key in REQUIRED_PROVENANCE:
        if key not in prov:
            raise ProfileError(f"{where}: missing field 'provenance.{key}'")
    for key in ("device_name", "dtype", "source"):
        if not isinstance(prov[key], str):
            raise ProfileError(f"{where}: field 'provenance.{key}' must be a string")
    if prov["dtype"] not in DTYPES:
        raise ProfileError(f"{where}: field 'provenance.dtype' is {prov['dtype']!r}; "
                           f"expected one of {', '.join(DTYPES)}")
    fit_data = doc.get("fit_data")
    if fit_data is not None and not isinstance(fit_data, Mapping):
        raise ProfileError(f"{where}: field 'fit_data' must be an object")
    ops, host, nhwc, power = doc.get("ops"), doc.get("host"), doc.get("channels_last"), doc.get("power")
    train = doc.get("train")
    if version < 2 and any(v is not None for v in (ops, host, nhwc, power, train)):
        raise ProfileError(f"{where}: fields 'ops', 'host', 'channels_last', 'power' and 'train' "
                           "need schema_version 2")
    if power is not None:
        _check_power(power, where)
    if train is not None:
        _check_train(family, train, where)
    if nhwc is not None:
        if not isinstance(nhwc, Mapping) or not isinstance(nhwc.get("parameters"), Mapping):
            raise ProfileError(f"{where}: field 'channels_last' must be an object with 'parameters'")
        _check_parameters(family, nhwc["parameters"], f"{where}: channels_last.parameters")
    if ops is not None:
        _check_ops(ops, where)
    if host is not None:
        _check_host(host, where)
    correction = doc.get("correction")
    if correction is not None:
        _check_correction(correction, fit_data, version, where)
    trees = doc.get("trees")
    if trees is not None:
        from .trees import check as check_trees

        if version < 4:
            raise ProfileError(f"{where}: field 'trees' needs schema_version 4")
        if version < 5 and isinstance(trees, Mapping) and "classes" in trees:
            raise ProfileError(f"{where}: field 'trees.classes' needs schema_version 5")
        check_trees(trees, where)
    return DeviceProfile(
        name=doc["name"], family=doc["family"], parameters=params,
        provenance=prov, fit_data=fit_data, schema_version=version, ops=ops, host=host,
        channels_last=nhwc, power=power, train=train, correction=correction, trees=trees,
    )


def _check_correction(correction, fit_data, version: int, where: str) -> None:
    """The 'correction' section: schema 3, valid settings, and the fit_data it corrects from."""
    from .correction import check

    if version < 3:
        raise ProfileError(f"{where}: field 'correction' needs schema_version 3")
    check(correction, where)
    if fit_data is None or not isinstance(fit_data.get("header"), list) or not isinstance(fit_data.get("rows"), list):
        raise ProfileError(f"{where}: field 'correction' needs 'fit_data' (header and rows): "
                           "its points are the calibration's layers")
    if "time_ms" not in fit_data["header"]:
        raise ProfileError(f"{where}: field 'correction' needs a 'time_ms' column in 'fit_data'")


def _check_parameters(family, params: Mapping, where: str) -> None:
    """A family's parameter object: every global and class parameter, each inside its box."""
    for key in family.global_params:
        _number(params, key, f"{where}: parameters")
    classes = params.get("classes")
    if not isinstance(classes, Mapping):
        raise ProfileError(f"{where}: missing object field 'parameters.classes'")
    for cls in family.classes:
        if not isinstance(classes.get(cls), Mapping):
            raise ProfileError(f"{where}: missing object field 'parameters.classes.{cls}'")
        _class_numbers(family, classes[cls], f"{where}: parameters.classes.{cls}")
    _check_ranges(family, params, where)


def _check_ops(ops, where: str) -> None:
    """The 'ops' section: stream classes and the matmul/attention axes parameters."""
    from .opcost import MATRIX, STREAM_BOUNDS, STREAM_PARAMS
    from .ops import STREAM_CLASSES

    if not isinstance(ops, Mapping):
        raise ProfileError(f"{where}: field 'ops' must be an object")
    for group in ("stream", "operators"):
        table = ops.get(group, {})
        if not isinstance(table, Mapping):
            raise ProfileError(f"{where}: field 'ops.{group}' must be an object")
        for name, p in table.items():
            field = f"ops.{group}.{name}"
            if group == "stream" and name not in STREAM_CLASSES:
                raise ProfileError(f"{where}: field '{field}' is not a stream class ({', '.join(STREAM_CLASSES)})")
            if not isinstance(p, Mapping):
                raise ProfileError(f"{where}: field '{field}' must be an object")
            for key in STREAM_PARAMS:
                if key in ("h_outer", "g_outer") and key not in p:
                    continue  # written before the outer axis existed: costed as STREAM_NEUTRAL
                v = _number(p, key, f"{where}: {field}")
                box = STREAM_BOUNDS[key]
                if not _inside(box, v):
                    raise ProfileError(f"{where}: field '{field}.{key}' is {v!r}, outside its "
                                       f"valid range [{box.lo:g}, {box.hi:g}]")
    if "l2_bytes" in ops and _number(ops, "l2_bytes", f"{where}: ops") <= 0:
        raise ProfileError(f"{where}: field 'ops.l2_bytes' must be positive")
    for cls in ("matmul", "attention"):
        if cls not in ops:
            continue
        p = ops[cls]
        sub = f"{where}: ops.{cls}"
        if not isinstance(p, Mapping) or not isinstance(p.get("classes"), Mapping) \
                or not isinstance(p["classes"].get("all"), Mapping):
            raise ProfileError(f"{where}: field 'ops.{cls}' must be an object with 'classes.all'")
        for key in MATRIX.global_params:
            _number(p, key, sub)
        _class_numbers(MATRIX, p["classes"]["all"], sub + ".classes.all")
        _check_ranges(MATRIX, p, sub)
    unknown = set(ops) - {"stream", "operators", "l2_bytes", "matmul", "attention", "fit"}
    if unknown:
        raise ProfileError(f"{where}: unknown field 'ops.{sorted(unknown)[0]}'")


def _check_power(power, where: str) -> None:
    """The 'power' section: per phase, static watts, joules per byte and per FLOP of each class."""
    from .energy import FLOP_CLASSES, PHASES

    if not isinstance(power, Mapping) or not isinstance(power.get("forward"), Mapping):
        raise ProfileError(f"{where}: field 'power' must be an object with 'forward'")
    for phase in PHASES:
        coeffs = power.get(phase)
        if coeffs is None and phase != "forward":
            continue
        if not isinstance(coeffs, Mapping):
            raise ProfileError(f"{where}: field 'power.{phase}' must be an object")
        for key in ("static_w", "j_per_byte"):
            if _number(coeffs, key, f"{where}: power.{phase}") < 0:
                raise ProfileError(f"{where}: field 'power.{phase}.{key}' must not be negative")
        per_flop = coeffs.get("j_per_flop", {})
        if not isinstance(per_flop, Mapping):
            raise ProfileError(f"{where}: field 'power.{phase}.j_per_flop' must be an object")
        for cls in per_flop:
            if cls not in FLOP_CLASSES:
                raise ProfileError(f"{where}: field 'power.{phase}.j_per_flop.{cls}' is not a class with "
                                   f"FLOPs ({', '.join(FLOP_CLASSES)})")
            if _number(per_flop, cls, f"{where}: power.{phase}.j_per_flop") < 0:
                raise ProfileError(f"{where}: field 'power.{phase}.j_per_flop.{cls}' must not be negative")


def _check_train(family, train, where: str) -> None:
    """The 'train' section: the layer family's and the op classes' parameters for training steps."""
    if not isinstance(train, Mapping) or not isinstance(train.get("parameters"), Mapping):
        raise ProfileError(f"{where}: field 'train' must be an object with 'parameters'")
    _check_parameters(family, train["parameters"], f"{where}: train.parameters")
    ratio = _number(train, "no_input_grad_ratio", f"{where}: train")
    if not 0 < ratio <= 1:
        raise ProfileError(f"{where}: field 'train.no_input_grad_ratio' is {ratio!r}; expected (0, 1]")
    if train.get("ops") is not None:
        _check_ops(train["ops"], f"{where}: train")
    nhwc = train.get("channels_last")
    if nhwc is not None:
        if not isinstance(nhwc, Mapping) or not isinstance(nhwc.get("parameters"), Mapping):
            raise ProfileError(f"{where}: field 'train.channels_last' must be an object with 'parameters'")
        _check_parameters(family, nhwc["parameters"], f"{where}: train.channels_last.parameters")


def _check_host(host, where: str) -> None:
    """The 'host' section: per-launch CPU cost of each host class, per-module-call cost (us)."""
    from .ops import HOST_CLASSES

    if not isinstance(host, Mapping) or not isinstance(host.get("launch_us"), Mapping):
        raise ProfileError(f"{where}: field 'host' must be an object with 'launch_us'")
    for cls in HOST_CLASSES:
        v = _number(host["launch_us"], cls, f"{where}: host.launch_us")
        if v < 0:
            raise ProfileError(f"{where}: field 'host.launch_us.{cls}' must not be negative")
    _number(host, "module_us", f"{where}: host")
    for key in ("module_us", "view_us"):
        if key in host and _number(host, key, f"{where}: host") < 0:
            raise ProfileError(f"{where}: field 'host.{key}' must not be negative")


def _class_numbers(family, values: Mapping, where: str) -> None:
    """Each class parameter of ``family`` a number in ``values``; an optional one may be absent."""
    for name in family.class_params:
        if name not in family.optional_params or name in values:
            _number(values, name, where)


def _inside(box, v: float) -> bool:
    """Whether ``v`` lies in the box, a fitted value on a bound (to rounding) included."""
    slack = 1e-9 * max(abs(box.lo), abs(box.hi))
    return box.lo - slack <= v <= box.hi + slack


def _check_ranges(family, params: Mapping, where: str) -> None:
    """Every parameter inside the box its family fits it in (so predictions stay meaningful)."""
    for key, box in family.bounds().items():
        v = family.parameter(params, key)
        if not _inside(box, v):
            field = f"parameters.classes.{key}" if "." in key else f"parameters.{key}"
            raise ProfileError(f"{where}: field '{field}' is {v!r}, outside its valid range "
                               f"[{box.lo:g}, {box.hi:g}]")
    for key in family.global_params:
        if key != "overhead_ms" and params[key] <= 0:
            raise ProfileError(f"{where}: field 'parameters.{key}' must be positive, got {params[key]!r}")
    if params["overhead_ms"] < 0:
        raise ProfileError(f"{where}: field 'parameters.overhead_ms' must not be negative")


# the files a profile may be stored in: JSON, or gzip-compressed JSON (the large h100 profiles)
SUFFIXES = (".json", ".json.gz")


def _builtin_files() -> Dict[str, Any]:
    """Built-in profile name -> its file inside the package."""
    return profile_files(resources.files("torch_alpha_profiler").joinpath("data").iterdir())


def profile_files(paths) -> Dict[str, Any]:
    """Profile name -> file, for the files of ``paths`` that end in a profile suffix (SUFFIXES);
    two files of one name (a stale 'NAME.json' beside 'NAME.json.gz') are a ProfileError."""
    found: Dict[str, Any] = {}
    for p in sorted(paths, key=lambda p: p.name):
        for suffix in SUFFIXES:
            if p.name.endswith(suffix):
                name = p.name[:-len(suffix)]
                if name in found:
                    raise ProfileError(f"two files for the built-in profile {name!r}: {found[name].name} and "
                                       f"{p.name}; remove the stale one (reinstall the package)")
                found[name] = p
    return found


def builtin_names() -> List[str]:
    """Names of the profiles shipped inside the package."""
    return sorted(_builtin_files())


def _read_json(data: bytes, where: str, compressed: bool):
    try:
        if compressed:
            data = gzip.decompress(data)
        return json.loads(data.decode("utf-8"))
    except (OSError, EOFError, zlib.error) as e:  # gzip's errors
        raise ProfileError(f"{where}: not a readable gzip file ({e})") from None
    except UnicodeDecodeError as e:
        raise ProfileError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ProfileError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_profile(name_or_path, warn_device: bool = True) -> DeviceProfile:
    """A built-in profile by name, a JSON file by path, or a DeviceProfile as is.

    ``"auto"`` picks the built-in profile matching the current CUDA device and
    float32. Warns when the profile was made on another GPU than the current one.
    """
    if isinstance(name_or_path, DeviceProfile):
        profile = name_or_path
    elif name_or_path == "auto":
        return auto_profile()
    elif isinstance(name_or_path, (str, os.PathLike)):
        name = os.fspath(name_or_path)
        builtin = _builtin_files()
        if name in builtin:
            where = f"built-in profile {name!r}"
            doc = _read_json(builtin[name].read_bytes(), where, builtin[name].name.endswith(".gz"))
            profile = profile_from_dict(doc, where)
            profile.derived["builtin"] = name  # its fit_data is the package's (correction.from_profile)
        elif os.path.exists(name):
            with open(name, "rb") as f:
                profile = profile_from_dict(_read_json(f.read(), name, name.endswith(".gz")), name)
        else:
            raise ProfileError(
                f"no profile {name!r}: not a file, and not a built-in profile "
                f"({', '.join(builtin_names())})")
    else:
        raise TypeError(f"profile must be a name, a path or a DeviceProfile, not {type(name_or_path).__name__}")
    if warn_device:
        _warn_if_other_device(profile)
    return profile


def current_device_name() -> Optional[str]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return None


def _warn_if_other_device(profile: DeviceProfile) -> None:
    current = current_device_name()
    if current is not None and current != profile.device_name:
        warnings.warn(
            f"profile {profile.name!r} was made on {profile.device_name!r}, "
            f"but the current GPU is {current!r}: predictions describe the profile's device",
            stacklevel=3,
        )


def auto_profile(dtype: str = "float32") -> DeviceProfile:
    """The built-in profile for the current GPU and ``dtype``, else a clear error."""
    current = current_device_name()
    available = []
    for name in builtin_names():
        p = load_profile(name, warn_device=False)
        available.append(f"{name} ({p.device_name}, {p.dtype})")
        if current is not None and p.device_name == current and p.dtype == dtype:
            return p
    raise ProfileError(
        f"no built-in profile for device {current or 'none (no CUDA device)'} and dtype {dtype}; "
        f"available: {'; '.join(available)}. Run 'alpha-profiler calibrate' to make one.")

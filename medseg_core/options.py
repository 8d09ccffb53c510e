"""The one parser for ``key=value`` options on the command lines (train, evaluate, cohort).

Values are read as YAML scalars or flow collections, so ``epochs=5``, ``lr=1e-4``,
``flip=false``, ``postprocessing=largest_2d``, ``postprocessing=[largest_2d, raovseg]``,
``input_size=[96, 96]`` and ``label_map={prostate: expert}`` all mean what they say. Several pairs
may share one argument separated by commas (``side_masking=oracle,threshold=0.4``); commas inside
brackets or braces belong to the value.

:func:`predict_options` turns parsed pairs into :class:`~medseg_core.inference.PredictOptions`,
coercing lists to tuples and a single post-processing name to a one-step tuple, and refusing an
unknown field with a sentence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import yaml

from .io.errors import InputError

if TYPE_CHECKING:
    from .inference import PredictOptions


def parse_value(text: str) -> Any:
    """A value as YAML reads it (numbers, booleans, null, lists, mappings); plain text otherwise."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as text; a number is meant
        try:
            return float(v) if v.strip().lower() not in ("nan", "inf", "-inf", "infinity") else v
        except ValueError:
            return v
    return v


def split_pairs(text: str) -> list[str]:
    """``a=1,b=[x, y],c={k: v}`` -> ``["a=1", "b=[x, y]", "c={k: v}"]`` (commas inside brackets stay)."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


def parse_pairs(items: Iterable[str] | str | None) -> dict[str, Any]:
    """``["k=v", "a=1,b=2"]`` -> ``{"k": v, "a": 1, "b": 2}`` (values through :func:`parse_value`)."""
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items:
        for pair in split_pairs(item):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise InputError(f"'{pair}' is not key=value; write options as name=value, e.g. threshold=0.4.")
            out[key.strip()] = parse_value(value.strip())
    return out


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """``cfg["train"]["epochs"] = value`` for ``key="train.epochs"`` (intermediate dicts created)."""
    parts = key.split(".")
    d = cfg
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def predict_options(kw: dict[str, Any] | Iterable[str] | str | None = None, **more: Any) -> PredictOptions:
    """:class:`~medseg_core.inference.PredictOptions` from parsed pairs (or raw ``k=v`` strings)."""
    from .inference import PredictOptions

    pairs = kw if isinstance(kw, dict) else parse_pairs(kw)
    kw = {**pairs, **more}
    names = {f.name for f in fields(PredictOptions)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise InputError(f"Unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(names))}.")
    out = {}
    for k, v in kw.items():
        if k == "postprocessing" and v is not None:
            v = (v,) if isinstance(v, str) else tuple(v)
        elif isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return PredictOptions(**out)


def parse_option_set(text: str) -> tuple[str, dict]:
    """A cohort option set ``NAME:key=value,key=value`` -> (name, PredictOptions keyword arguments)."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise InputError(
            f"'{text}' has no name; write an option set as NAME:key=value,... e.g. masked:side_masking=oracle."
        )
    kw = parse_pairs(rest) if rest.strip() else {}
    predict_options(kw)  # refuse unknown fields now, not halfway through a run
    return name.strip(), kw

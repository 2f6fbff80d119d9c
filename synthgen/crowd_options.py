"""The crowd's command-line options of ``synthgen generate``, parsed into a ``Crowd``.

    --attribute glasses=none                            every image has it (repeatable)
    --distribution skin_color=light:0.5,black:0.5       exact shares of the images (repeatable; 50% works too)
    --identities 100 --per-identity 20 [--variation 0.35]

They mean what the same fields of ``POST /v1/jobs`` mean (API.md), in-process and with ``--server``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from synthgen.core.crowd import DEFAULT_VARIATION, Crowd


def _name_and_rest(text: str, flag: str, example: str) -> tuple[str, str]:
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise argparse.ArgumentTypeError(f"{flag} expects {example}, got {text!r}")
    return name.strip(), rest.strip()


def parse_attribute(text: str) -> tuple[str, str]:
    """``name=value``."""
    return _name_and_rest(text, "--attribute", "NAME=VALUE (e.g. glasses=none)")


def _share(text: str) -> float:
    text = text.strip()
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def parse_distribution(text: str) -> tuple[str, dict[str, float]]:
    """``name=value:share,value:share`` (a share is a fraction, or a percentage with %)."""
    example = "NAME=VALUE:SHARE,VALUE:SHARE (e.g. skin_color=light:0.5,black:0.5)"
    name, rest = _name_and_rest(text, "--distribution", example)
    shares: dict[str, float] = {}
    for part in rest.split(","):
        value, sep, share = part.partition(":")
        if not sep or not value.strip():
            raise argparse.ArgumentTypeError(f"--distribution expects {example}, got {text!r}")
        try:
            shares[value.strip()] = _share(share)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--distribution: {share.strip()!r} is not a share (0.25 or 25%)") from None
    return name, shares


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def add_crowd_arguments(parser: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    g = parser.add_argument_group("who is in the crowd (a conditional model; --identities works on any)")
    g.add_argument(
        "--attribute", type=parse_attribute, action="append", default=[], metavar="NAME=VALUE",
        help="every image has this value (repeatable); GET /v1/models lists the names and values",
    )  # fmt: skip
    g.add_argument(
        "--distribution", type=parse_distribution, action="append", default=[], metavar="NAME=VALUE:SHARE,...",
        help="each value gets exactly its share of the images (shares sum to 1; repeatable)",
    )  # fmt: skip
    g.add_argument("--identities", type=positive_int, default=None, metavar="N", help="N identities (with --per-identity)")
    g.add_argument("--per-identity", type=positive_int, default=None, metavar="M", help="M images of each identity")
    g.add_argument(
        "--variation", type=_unit_float, default=None,
        help=f"how far an identity's images stray from its code, 0..1 (default {DEFAULT_VARIATION})",
    )  # fmt: skip


def crowd_from_args(args: argparse.Namespace) -> Crowd:
    attributes: dict[str, str] = {}
    for name, value in args.attribute:
        if name in attributes and attributes[name] != value:
            raise ValueError(f"--attribute {name} is given twice ({attributes[name]!r} and {value!r})")
        attributes[name] = value
    distribution: dict[str, dict[str, float]] = {}
    for name, shares in args.distribution:
        if name in distribution:
            raise ValueError(f"--distribution {name} is given twice; list all its values in one")
        distribution[name] = shares
    if args.variation is not None and args.identities is None:
        raise ValueError("--variation goes with --identities and --per-identity")
    variation = DEFAULT_VARIATION if args.variation is None else args.variation
    return Crowd(attributes, distribution, args.identities, args.per_identity, variation)


def requested_count(args: argparse.Namespace, crowd: Crowd) -> int:
    """--count, or identities x per_identity when --count is omitted (the server or Crowd.validated checks both)."""
    if args.count is not None:
        return int(args.count)
    if crowd.identities is not None and crowd.per_identity is not None:
        return crowd.identities * crowd.per_identity
    raise ValueError("--count is required (it may be omitted with --identities and --per-identity)")

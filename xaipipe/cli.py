"""Shared command-line plumbing for ``workflow_scripts/*.py``.

Every stage script is called the same way by Snakemake, DVC and people::

    python workflow_scripts/<stage>.py --config config.yaml [config/demo.yaml ...] [--variant V ...]

``--config`` takes one or more YAML files merged in order (as Snakemake merges
``--configfile``). Output paths come from :mod:`xaipipe.paths`, never from arguments, so the
three runners cannot disagree about where things are.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from xaipipe import io_audit, registry
from xaipipe.forkserver import unwind_on_termination
from xaipipe.config import load_config
from xaipipe.errors import ConfigError, XaipipeError

log = logging.getLogger("xaipipe")


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", nargs="+", default=["config.yaml"], metavar="YAML",
        help="config file(s), merged in order; later files override earlier ones "
             "(default: config.yaml)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, metavar="N",
        help="CPU threads torch may use in this job (0 = torch's default, all cores); "
             "Snakemake passes the rule's threads so parallel jobs do not oversubscribe",
    )
    return parser


def add_variant_argument(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """``--variant NAME`` (``many``: one or more): a registered training variant. The name is
    checked against :mod:`xaipipe.registry` once the config (and its plug-ins) is loaded."""
    builtins = ", ".join(registry.BUILTIN_VARIANTS)
    parser.add_argument("--variant", required=True, nargs="+" if many else None, metavar="NAME",
                        help=f"training variant: {builtins}, or a plugins.variants name")


def add_method_argument(parser: argparse.ArgumentParser) -> None:
    """``--method NAME``: a registered attribution method (checked like ``--variant``)."""
    builtins = ", ".join(registry.BUILTIN_METHODS)
    parser.add_argument("--method", required=True, metavar="NAME",
                        help=f"attribution method: {builtins}, or a plugins.methods name")


def add_replicate_argument(parser: argparse.ArgumentParser) -> None:
    """``--replicate R``: which of the variant's independently seeded models (0 ..
    ``replicates`` - 1)."""
    parser.add_argument("--replicate", required=True, type=int, metavar="R",
                        help="replicate index 0 .. replicates-1: one of the variant's "
                             "independently seeded models")


def check_registered(args: argparse.Namespace, config: dict) -> None:
    """A :class:`ConfigError` when ``--variant`` / ``--method`` name nothing registered, or
    ``--replicate`` is not one of the configured replicates."""
    replicate = getattr(args, "replicate", None)
    if replicate is not None and not 0 <= replicate < config["replicates"]:
        raise ConfigError(f"--replicate {replicate} is not one of the configured replicates "
                          f"0 .. {config['replicates'] - 1} (config key replicates)")
    for flag, known in (("variant", registry.variants(config)), ("method", registry.methods(config))):
        given = getattr(args, flag, None)
        for name in ([] if given is None else given if isinstance(given, list) else [given]):
            if name not in known:
                raise ConfigError(f"--{flag} {name!r} is not registered; known: "
                                  f"{', '.join(known)} (plug-ins go under plugins.{flag}s)")


def run_stage(main: Callable[[argparse.Namespace, dict], None], parser: argparse.ArgumentParser,
              argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load + validate the config, run ``main(args, config)``.

    A :class:`XaipipeError` (bad config, bad input file) is printed as one clear line and
    exits with status 1, without a traceback: the message already names the file and fix.
    With ``XAIPIPE_AUDIT_DIR`` set, the run is recorded for :mod:`xaipipe.io_audit`. SIGTERM
    and SIGHUP unwind the stage (:func:`xaipipe.forkserver.unwind_on_termination`), so a
    cancelled job leaves no temporary or partial output.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    unwind_on_termination()
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    logging.getLogger("xaipipe").info("%s started: %s", parser.prog, " ".join(argv or sys.argv[1:]))
    audit = None
    try:
        config = load_config(args.config)
        check_registered(args, config)
        audit = io_audit.start(config)
        main(args, audit[1] if audit else config)
    except XaipipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if audit:
            io_audit.finish(audit[0], sys.argv[0], _wildcards(args))
    return 0


def _wildcards(args: argparse.Namespace) -> dict:
    """The stage's wildcard arguments (everything but --config and --threads); a one-element
    list (``--variant`` of the variant stage takes several) as its element."""
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v
            for k, v in vars(args).items() if k not in ("config", "threads")}

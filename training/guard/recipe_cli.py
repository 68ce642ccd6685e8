"""The command line every recipe-driven guard job shares (train-guard, finetune-guard, real answers).

``recipe_parser(config_cls)``: TRL's parser for one recipe dataclass (``--config R.yaml`` plus flags).
``recipe_main(config_cls, run, prog, summary, argv)``: parse ``argv`` (default ``sys.argv[1:]``), call
``run(cfg, argv)``, print ``summary(result)`` as JSON and return 0; a bad recipe, flag or data file
(``OSError``/``ValueError``) is one clear line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def recipe_parser(config_cls: type) -> Any:
    from trl import TrlParser  # heavy: only when a job really parses

    return TrlParser(config_cls)


def recipe_main(config_cls: type, run: Callable[[Any, list[str]], Any], prog: str,
                summary: Callable[[Any], Any], argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        (cfg,) = recipe_parser(config_cls).parse_args_and_config(args)
        result = run(cfg, args)
    except (OSError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary(result), indent=2))
    return 0

"""``fedml-prr`` command line: run an algorithm from a FedML YAML and print per-client results
(``run``), compare several algorithms over seeds (``compare``), launch MPI (``mpirun``), run a FedML
main script with the plugin installed (``exec``), or decode a dataset on disk once into a
memory-mapped cache (``prepare``).

Modules: :mod:`.parser` (options), :mod:`.commands` (commands of this process), :mod:`.launchers`
(distributed parties, mpirun, exec), :mod:`.tables` (the run table).
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--cf":  # `mpirun -np K+1 python -m fedml_prr --cf CONFIG`
        argv.insert(0, "run")
    if argv and argv[0] == "mpirun":
        from .launchers import mpirun_command

        return mpirun_command(argv[1:])
    if argv and argv[0] == "exec":
        from .launchers import exec_command

        return exec_command(argv[1:])
    from .commands import COMMANDS
    from .parser import build_parser

    args = build_parser(layout_names=argv[:1] == ["prepare"]).parse_args(argv)
    # fedml pins old packages; requests warns about their versions at import time (harmless)
    warnings.filterwarnings("ignore", message=r"urllib3 .* doesn't match a supported version")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())

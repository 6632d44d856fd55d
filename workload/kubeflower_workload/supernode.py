"""`flower-supernode`, made to end when its connection to the SuperLink has ended.

Run as `python -m kubeflower_workload.supernode <flower-supernode's arguments>` by the client entry
point. Flower 1.42's SuperNode keeps one connection to the SuperLink for its life. When an error
ends it after the node joined (a retry that gives up: an abrupt TLS close while the server
restarts counts as a "TLS handshake error", which Flower never retries; a status that is not
retried), Flower logs the error and its connection loop returns -- but the process stays: the
SuperNode's Runtime API runs in a non-daemon thread that only Flower's exit handlers stop, and
those run only on a signal or a fatal error. The SuperNode then idles for ever, joined to nothing,
and a job whose server pod restarted waits for clients that never come back.

Here, Flower's entry function returning means exactly that (its loop never ends otherwise):
the exit handlers run, as on any Flower exit, and the process ends with CONNECTION_LOST, which
tells the client entry point to start a SuperNode again at once.
"""

from __future__ import annotations

import sys
from logging import WARNING

from flwr.supercore.exit.exit_handler import trigger_exit_handlers
from flwr.supercore.logger import log
from flwr.supernode.cli.flower_supernode import flower_supernode

CONNECTION_LOST = 75
"""This process's exit code when the SuperNode's connection ended on an error (EX_TEMPFAIL)."""

COMMAND = [sys.executable, "-m", __name__]
"""What runs in place of `flower-supernode` (same arguments): this module, in this interpreter."""


def main() -> int:
    flower_supernode()
    log(WARNING, "The connection to the SuperLink ended (the error is above): this SuperNode stops.")
    trigger_exit_handlers(run_before_force_exit=True)
    trigger_exit_handlers(run_before_force_exit=False)
    return CONNECTION_LOST


if __name__ == "__main__":
    sys.exit(main())

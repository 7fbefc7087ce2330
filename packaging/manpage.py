"""Write the manual page kubectl-csi-migrate(1) from the command line's own parser.

    python packaging/manpage.py OUTPUT            (scripts/build-binary runs it in .venv-build)

argparse-manpage renders every command of `kubectl_csi_migrate.cli.main:build_parser` with its
flags, so the page cannot drift from `--help`. Around that this adds a synopsis per command, the
exit status, the environment, how to turn on completion, and two fixes to argparse-manpage's
output (its title is the parser's `prog` with the space; a help text that starts with a quote
becomes a roff request and vanishes) and no hyphenation. The date is SOURCE_DATE_EPOCH's when set.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from argparse_manpage.manpage import Manpage

from kubectl_csi_migrate import __version__
from kubectl_csi_migrate.cli.main import build_parser

NAME = "kubectl-csi-migrate"
HOMEPAGE = "https://github.com/kubectl-csi-migrate/kubectl-csi-migrate"

SYNOPSIS = r"""
.B kubectl csi\-migrate preflight
.RI [ STS_NAME ]
.RI [ options ]
.br
.B kubectl csi\-migrate sts
.I STS_NAME
.B \-\-csi\-storageclass
.I CLASS
.RI [ options ]
.br
.B kubectl csi\-migrate rollback
.I STS_NAME
.RI [ options ]
.br
.B kubectl csi\-migrate status
.RI [ STS_NAME ]
.RI [ options ]
.br
.B kubectl csi\-migrate rolling\-migration all
.RI [ options ]
.br
.B kubectl csi\-migrate migration\-with\-downtime
.RI [ options ]
.br
.B kubectl csi\-migrate
.RB [ \-\-version | \-\-help ]
"""

EXIT_STATUS = r"""
.TP
.B 0
success
.TP
.B 1
the operation failed, or preflight found a blocking problem (a line starting with
.B error:
on standard error says which)
.TP
.B 2
usage error
"""

ENVIRONMENT = r"""
.TP
.B KUBECONFIG
the kubeconfig files, as for
.BR kubectl (1)
.TP
.BR GOVC_URL ", " GOVC_USERNAME ", " GOVC_PASSWORD ", " GOVC_INSECURE ", " GOVC_DATACENTER
vCenter access when no
.B \-\-vsphere\-*
flag or
.B \-\-vsphere\-config
file gives it; without any of them the vSphere CSI driver's Secret
.I vmware\-system\-csi/vsphere\-config\-secret
is read from the cluster
"""

COMPLETION = r"""
kubectl completes a plugin's arguments through an executable named
.B \%kubectl_complete\-csi_migrate
on
.BR PATH .
.B pip install
provides it. With krew, link it beside the plugin:
.PP
.RS
.nf
ln \-s kubectl\-csi_migrate ~/.krew/bin/kubectl_complete\-csi_migrate
.fi
.RE
.PP
Then
.B kubectl csi\-migrate <TAB>
completes commands, flags and their fixed values, once kubectl's own completion is set up
(\fBkubectl completion \-\-help\fR).
"""

SEE_ALSO = r"""
.BR kubectl (1),
.B kubectl krew
"""


def short_usage(parser: argparse.ArgumentParser) -> str:
    """`%(prog)s REQUIRED-FLAGS [options] POSITIONALS`: argparse's own usage lists all thirty
    flags in a column 50 characters to the right; each flag is described below it anyway."""
    words = ["%(prog)s"]
    for action in parser._actions:
        if action.option_strings and action.required:
            words += [action.option_strings[-1], str(action.metavar or action.dest.upper())]
    words.append("[options]")
    for action in parser._actions:
        if action.option_strings or action.help == argparse.SUPPRESS:
            continue
        name = action.metavar or (
            "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
        )
        words.append(f"[{name}]" if action.nargs == argparse.OPTIONAL else str(name))
    return " ".join(words)


def render() -> str:
    # argparse wraps text at the terminal's width: fix it, so that every build writes the same
    # page and the lines fit man's default 80 columns (less its 7-column indent).
    os.environ["COLUMNS"] = "74"
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.usage = short_usage(command)
    page = Manpage(
        parser,
        _data={
            "project_name": NAME,
            "version": __version__,
            "description": "move StatefulSet volumes from the in-tree vSphere plugin to the vSphere CSI driver",
            "manual_title": "kubectl plugins",
            "url": HOMEPAGE,
        },
    )
    page.prog = NAME  # the title and NAME line; the usage lines keep `kubectl csi-migrate`
    page.add_section("synopsis", "=", SYNOPSIS.strip())
    page.add_section("exit status", "=", EXIT_STATUS.strip())
    page.add_section("environment", "=", ENVIRONMENT.strip())
    page.add_section("shell completion", "=", COMPLETION.strip())
    page.add_section("see also", "=", SEE_ALSO.strip())
    text = str(page)
    # argparse-manpage copies help texts as they are: a line that starts with ' or . would be
    # read as a roff request (rolling-migration's "'all': every replica" disappeared).
    text = re.sub(r"^(?=')", r"\\&", text, flags=re.M)
    # Flags and paths read better unhyphenated and left-aligned than stretched across the line.
    return re.sub(r"^(\.TH .*\n)", r"\1.nh\n.ad l\n", text, count=1)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python packaging/manpage.py OUTPUT", file=sys.stderr)
        return 2
    Path(argv[0]).write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

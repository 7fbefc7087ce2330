"""Shell completion for `kubectl csi-migrate`, as kubectl asks plugins for it.

kubectl (1.26+) completes a plugin's arguments by running an executable named
`kubectl_complete-<plugin>` from PATH, here `kubectl_complete-csi_migrate`, with the words typed
after the plugin name; the last one is the word being completed ("" after a space). It reads
cobra's `__complete` answer: one candidate per line (`candidate<TAB>description`; cobra drops
the description where the shell cannot show it), then `:<directive>` (see k8s.io/kubectl
pkg/cmd/plugin/plugin_completion.go). The candidates come from the same parser as the commands,
so they cannot drift; nothing here talks to a cluster or imports an API client: a TAB must be
instant and must not need a network.

The standalone binary answers too when it is called by that name (a symlink), or as
`kubectl-csi-migrate __complete WORDS...`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable, Sequence

# cobra's ShellCompDirective bits
DEFAULT, ERROR, NO_SPACE, NO_FILE_COMP, FILTER_FILE_EXT, FILTER_DIRS, KEEP_ORDER = 0, 1, 2, 4, 8, 16, 32

Candidates = list[tuple[str, str]]  # (word, description)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        candidates, directive = complete(words)
    except Exception:  # a TAB must never print a traceback into the user's command line
        candidates, directive = [], ERROR
    out = [f"{word}\t{desc}" if desc else word for word, desc in candidates]
    sys.stdout.write("".join(line + "\n" for line in out) + f":{directive}\n")
    return 0


def complete(words: Sequence[str]) -> tuple[Candidates, int]:
    """The candidates for the last of `words` (the words after `kubectl csi-migrate`)."""
    from kubectl_csi_migrate.cli.main import build_parser

    *done, current = list(words) or [""]
    parser: argparse.ArgumentParser = build_parser()
    command: str | None = None
    expecting: argparse.Action | None = None  # an option still waiting for its value
    positionals = 0
    only_positionals = False
    given: dict[str, str] = {}  # dest -> value, for what the value completions depend on

    for word in done:
        if expecting is not None:
            waiting, expecting = expecting, None
            if not (waiting.nargs == argparse.OPTIONAL and word.startswith("-")):  # `--dry-run --yes`
                given[waiting.dest] = word
                continue
        if word == "--" and not only_positionals:
            only_positionals = True
            continue
        if word.startswith("-") and word != "-" and not only_positionals:
            option, value = _split_option(parser, word)
            if option is None:
                continue
            if value is not None:
                given[option.dest] = value
            elif _takes_value(option):
                expecting = option
            continue
        subcommands = _subcommands(parser)
        if command is None and subcommands is not None:
            chosen = subcommands.choices.get(word)
            if chosen is None:
                return [], NO_FILE_COMP  # not a command of ours
            parser, command = chosen, word
            continue
        positionals += 1

    if expecting is not None and not (expecting.nargs == argparse.OPTIONAL and current.startswith("-")):
        return _values(expecting, current, "", given)
    if current.startswith("-") and not only_positionals:
        if current.startswith("--") and "=" in current:
            option, value = _split_option(parser, current)
            if option is None or not _takes_value(option):
                return [], NO_FILE_COMP
            return _values(option, value or "", current.split("=", 1)[0] + "=", given)
        return _flags(parser, current, given), NO_FILE_COMP
    subcommands = _subcommands(parser)
    if command is None and subcommands is not None:
        helps = {a.dest: a.help or "" for a in subcommands._choices_actions}
        return [(name, helps.get(name, "")) for name in subcommands.choices if name.startswith(current)], NO_FILE_COMP
    wanted = [a for a in parser._actions if not a.option_strings and a.help != argparse.SUPPRESS]
    choices = wanted[positionals].choices if positionals < len(wanted) else None
    if choices:
        return [(str(c), "") for c in choices if str(c).startswith(current)], NO_FILE_COMP
    # STS_NAME: naming StatefulSets would need the API server; a TAB offers no file names either.
    return [], NO_FILE_COMP


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _split_option(parser: argparse.ArgumentParser, word: str) -> tuple[argparse.Action | None, str | None]:
    """The option a word names and the value written into it (`--output=json`, `-njobs`)."""
    options = parser._option_string_actions
    if word in options:
        return options[word], None
    if word.startswith("--") and "=" in word:
        name, value = word.split("=", 1)
        return options.get(name), value
    if not word.startswith("--") and word[:2] in options:  # a short option with its value attached
        action = options[word[:2]]
        if _takes_value(action):
            return action, word[2:].removeprefix("=")
        return action, None
    return None, None


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _flags(parser: argparse.ArgumentParser, current: str, given: dict[str, str]) -> Candidates:
    out: Candidates = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        repeatable = isinstance(action, argparse._AppendAction | argparse._CountAction)
        if action.dest in given and not repeatable:
            continue
        description = _description(action)
        for option in action.option_strings:
            if option.startswith(current):
                out.append((option, description))
    return out


def _values(action: argparse.Action, current: str, prefix: str, given: dict[str, str]) -> tuple[Candidates, int]:
    """Values for an option: its choices, kubeconfig contexts, or file/folder names."""
    if action.choices:
        return [(prefix + str(c), "") for c in action.choices if str(c).startswith(current)], NO_FILE_COMP
    if action.dest == "context":
        contexts = _kubeconfig_contexts(given.get("kubeconfig"))
        return [(prefix + c, "") for c in contexts if c.startswith(current)], NO_FILE_COMP
    kind = str(action.metavar or action.dest).upper()
    if kind == "DIR" or action.dest.endswith("directory"):
        return [], FILTER_DIRS
    if kind in ("FILE", "KUBECONFIG") or action.dest.endswith("file"):
        return [], DEFAULT  # the shell completes file names
    return [], NO_FILE_COMP


def _kubeconfig_contexts(path: str | None) -> list[str]:
    """Context names from the kubeconfig files kubectl would read (local files only)."""
    if path:
        files: Iterable[str] = [path]
    elif os.environ.get("KUBECONFIG"):
        files = [f for f in os.environ["KUBECONFIG"].split(os.pathsep) if f]
    else:
        files = [os.path.join(os.path.expanduser("~"), ".kube", "config")]
    import yaml

    names: list[str] = []
    for file in files:
        try:
            with open(os.path.expanduser(file), encoding="utf-8") as handle:
                config = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError):
            continue
        for context in config.get("contexts") or []:
            name = context.get("name") if isinstance(context, dict) else None
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


def _description(action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text = text % {**vars(action), "default": action.default}
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())

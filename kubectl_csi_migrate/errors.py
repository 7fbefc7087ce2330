"""The tool's exceptions. Only the command-line layer turns them into `error:` lines and exit
codes; below it, code raises these (chaining the original with `from`) and never exits.

PermanentError: a person must act (wrong name, missing object, bad credentials, no permission).
TemporaryError: may pass if tried again (unreachable server, timeout).
"""

from __future__ import annotations


class CsiMigrateError(Exception):
    """Base class; the message is written for the user."""


class PermanentError(CsiMigrateError):
    """Stop: a person must act."""


class TemporaryError(CsiMigrateError):
    """Transient: retrying (or re-running the command) may succeed."""


class NotFoundError(PermanentError):
    """The object does not exist."""


class ConflictError(PermanentError):
    """The object exists already, or changed under us."""


class VCenterError(CsiMigrateError):
    """A vCenter call failed."""


class KeyClash(PermanentError):
    """What a command found under the key of the owner it names (a working directory, a record,
    a Lease) is another owner's run: refused before anything changed (one `error:` line)."""


class OutOfDate(KeyClash):
    """The working directory is older than the run's record in the cluster: a later run of the
    owner was recorded there (its own or another's) by a command the folder never saw. Refused
    before anything changed (one `error:` line)."""


class RecordTooNew(KeyClash):
    """A run's record (its working directory's or the cluster's) was written by a later release in
    a format this one does not read: refused before anything changed (one `error:` line, as a
    KeyClash)."""


class PreflightFailed(PermanentError):
    """Preflight found at least one blocking problem."""


class CredentialsError(PermanentError):
    """No usable vCenter address or credentials (flags, file, GOVC_* environment, Secret)."""


class VCenterUnreachable(TemporaryError, VCenterError):
    """vCenter did not answer: connection refused, name not resolved, timeout, connection lost."""


class VCenterSessionEnded(VCenterUnreachable):
    """vCenter ended the session (idle timeout, a restart): logging in again is the remedy."""


class VCenterLoginFailed(PermanentError, VCenterError):
    """vCenter refused the user name or password."""


class VCenterTLSError(PermanentError, VCenterError):
    """vCenter's certificate is not trusted (or does not match the configured thumbprint)."""


class VCenterPermissionDenied(PermanentError, VCenterError):
    """The vCenter user lacks a privilege the operation needs."""


class VCenterNotFound(NotFoundError, VCenterError):
    """A datacenter, datastore or disk does not exist in vCenter."""


class TooManyRequestsError(TemporaryError):
    """429: for an eviction, a PodDisruptionBudget does not allow it yet."""


class Stopping(CsiMigrateError):
    """Raised in a worker thread of a run that is stopping (Ctrl-C, SIGTERM, SIGHUP in the main
    thread, or another volume failed): before its next change, or out of a wait."""


class UsageError(CsiMigrateError):
    """The command line contradicts itself (exit 2, as argparse's own errors)."""


class NothingChanged(CsiMigrateError):
    """A run stopped before its first change (it waited its `--timeout` for a disruption
    budget's Lease another run holds): one `error:` line, nothing recorded, nothing to resume."""

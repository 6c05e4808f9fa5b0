"""The library's exceptions. The CLI maps each to one line on stderr and an exit code."""


class CfgdiffError(Exception):
    """Base class: an error the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(CfgdiffError):
    """An invalid option, preset or value (a usage error: exit 2)."""

    exit_code = 2


class OutputError(ConfigError):
    """An output the command refuses to write: it exists and is not ours (or not this job's), it is an
    input or another output of the command, or it is a folder. A runtime refusal, so exit 1 in every
    command, unlike the other ConfigErrors (a bad value: exit 2). Raised by `cfgdiff.files.check_outputs`
    and the commands' own "finished earlier?" checks; the one place the "output exists" rule lives."""

    exit_code = 1


class DataError(CfgdiffError):
    """A data source or dataset file that cannot be used."""


class CheckpointError(CfgdiffError):
    """A checkpoint that is missing, truncated or for another architecture."""


class MetricsError(CfgdiffError):
    """Bad input to a metric: wrong shapes or dtypes, too few images, non-finite statistics."""


class WeightsError(CfgdiffError):
    """Network weights (e.g. Inception) that cannot be found, downloaded or verified."""


class NumericalError(CfgdiffError):
    """A non-finite loss or sample."""


class Interrupted(CfgdiffError):
    """Stopped by SIGINT/SIGTERM after saving the completed work; rerunning resumes. The exit code is
    the shell's 128 + signal number: 130 for SIGINT, 143 for SIGTERM."""

    exit_code = 130

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.exit_code = 128 + int(signum)

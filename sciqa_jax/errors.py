"""The project's user errors: problems the person running a script fixes (a setting, a file, a
record, a split, a checkpoint that belongs to another run), as opposed to bugs.

Every such error subclasses `UserError`, and its message names the thing at fault and what to do in
one line. The scripts (`cli.run`) print it as `<script>: error: <message>` and exit with status 2;
a traceback is shown only with `--verbosity=1`. Anything else is a bug and keeps its traceback.

The subclasses also derive from the builtin a caller would expect (ValueError for bad values,
FileNotFoundError for a missing file), so library users can catch either.
"""

from __future__ import annotations


class UserError(Exception):
  """A problem the user fixes; the message says which setting or file, and what to do."""


class ConfigError(UserError, ValueError):
  """A config setting that is missing, out of range or inconsistent with another one."""


class DataError(UserError, ValueError):
  """A dataset file, split or record that cannot be used as it is."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or directory the run needs is not there."""


class CorruptFileError(UserError, ValueError):
  """A file the project wrote earlier is damaged (truncated, overwritten, not valid JSON)."""


class RunMismatchError(UserError, ValueError):
  """A cache, checkpoint or output directory that belongs to another task, model or config."""

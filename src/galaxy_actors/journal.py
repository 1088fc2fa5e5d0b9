"""The task journal: tasks that survive a restart of the supervisor process.

`SqliteJournal` is the journal of ``open_supervisor(journal=...)``; `Journal` is the
interface it implements. The errors say why a journal file cannot be used.
"""

from ._actors._journal import Journal as Journal
from ._actors._journal_sqlite import SqliteJournal as SqliteJournal
from ._public import fixup_module_metadata
from ._sansio._errors import JournalCorrupt as JournalCorrupt
from ._sansio._errors import JournalError as JournalError
from ._sansio._errors import JournalInUse as JournalInUse
from ._sansio._errors import JournalUnavailable as JournalUnavailable
from ._sansio._errors import JournalVersion as JournalVersion
from ._sansio._errors import OutcomeUnknown as OutcomeUnknown

__all__ = [
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalInUse",
    "JournalUnavailable",
    "JournalVersion",
    "OutcomeUnknown",
    "SqliteJournal",
]

fixup_module_metadata(__name__, globals(), __all__)
del fixup_module_metadata

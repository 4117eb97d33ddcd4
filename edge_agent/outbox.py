"""Durable outbox: every sample for people is committed to SQLite (WAL, synchronous=FULL) before it is sent,
and deleted only when the hub's reply for it arrives. It survives agent restarts, power loss and hours offline.

Exactly-once results across a crash: a reply's final result is journalled (`settle`: the sample leaves the outbox
and its result enters `settled` in one transaction) before the sinks see it, and the journal entry is dropped
(`emitted`) after. A restart re-offers journalled results to the sinks, and a sink that can tell whether it
already holds a result (the JSONL file) skips it; a patience timeout is marked (`mark_timed_out`) before its
result is emitted, so a restarted agent reports the later reply as `late`, never as a second final answer.

Bounded by `max_samples` and by `max_bytes` (what the samples hold: an SD card fills long before 100,000 full-frame
images); the overflow policy drops the oldest stored samples or refuses the new one, each drop is added to a
persistent counter so an operator sees how much was lost, and `put` names the samples it dropped so the agent stops
waiting for them. The bytes are counted in memory (recounted at every open, so a crash cannot skew them).

Space goes back to the card: new files use `auto_vacuum=INCREMENTAL`, and once most of the file is free (a backlog
drained) the free pages are released. A file made by an older agent (no auto_vacuum) is converted at open while it
holds little (a VACUUM copies only what is stored); until then it keeps working and reuses its free pages, so it
never grows past its largest backlog. The resend scan reads a narrow covering index (ids in send order), and
restoring reads no image: neither touches the image pages.

Every failure of the file (disk full, locked by another process past the busy timeout, I/O error) is an
`OutboxError` naming it, so the agent can treat it as a refused write and keep serving. A file that is not a
database any more (a damaged card) is an `OutboxDamagedError`; `open_outbox` moves it aside and starts a fresh
one, so the device keeps serving frames instead of failing at every restart.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hgen.edge_agent.errors import OutboxDamagedError, OutboxError
from hgen.edge_agent.outbox_file import Transaction, error_type, lenient_text, move_aside, owner_error

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id TEXT NOT NULL UNIQUE,
    batch_id TEXT NOT NULL,
    created REAL NOT NULL,
    frame_index INTEGER NOT NULL,
    m INTEGER NOT NULL,
    deadline REAL NOT NULL,
    timed_out INTEGER NOT NULL DEFAULT 0,
    logits BLOB NOT NULL,
    meta TEXT NOT NULL,
    payload BLOB NOT NULL  -- last: the other columns are read without walking the image's overflow pages
);
CREATE INDEX IF NOT EXISTS samples_scan ON samples (seq, sample_id, batch_id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settled (sample_id TEXT PRIMARY KEY, result TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owner (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
MIGRATIONS = {"timed_out": "ALTER TABLE samples ADD COLUMN timed_out INTEGER NOT NULL DEFAULT 0"}
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: about 1,900 full-frame (560 KB) samples, a small share of an SD card
ROW_BYTES = "length(payload) + length(logits) + length(meta)"  # a sample's bytes (a blob's from its row header)
GIVE_BACK_MIN_BYTES = 2 << 20  # free pages are given back to the card once they are most of the file and this much
CONVERT_MAX_BYTES = 16 << 20  # an older file is converted to auto_vacuum at open while it holds at most this


def open_outbox(path: Path, max_samples: int, overflow: str = "drop_oldest", *, device_id: str,
                on_problem: Callable[[str], None], busy_timeout_s: float = 30.0,
                max_bytes: int = DEFAULT_MAX_BYTES) -> Outbox:
    """The device's outbox; a damaged file (not a database any more) is moved aside and a fresh outbox started, as
    failing here would stop the device serving frames at every restart. Its samples are lost to the agent, so it
    is logged and reported through `on_problem` with the name it was moved to. Every other refusal (locked by
    another process, another device's file, a folder that cannot be made) propagates as before."""
    opened: Outbox | None = None
    try:
        opened = Outbox(path, max_samples, overflow, busy_timeout_s=busy_timeout_s, device_id=device_id,
                        max_bytes=max_bytes)
        opened.check_intact()  # a damaged page behind an intact header fails the first read, not the open
        return opened
    except OutboxDamagedError as exc:
        if opened is not None:
            opened.close()
        aside = move_aside(Path(path))
        log.error("%s; moved it aside to %s and started a fresh outbox (its unreplied samples are not restored)",
                  exc, aside)
        on_problem(f"damaged outbox moved aside to {aside} ({exc}); started a fresh outbox")
    return Outbox(path, max_samples, overflow, busy_timeout_s=busy_timeout_s, device_id=device_id,
                  max_bytes=max_bytes)


@dataclass(frozen=True)
class OutboxRow:
    """One stored sample: the serialised hub_pb2.Sample plus what fusion needs after a restart."""

    sample_id: str
    batch_id: str
    created: float
    frame_index: int
    m: int
    deadline: float
    payload: bytes
    logits: bytes
    meta: str
    timed_out: int = 0  # patience ran out and the model's answer was reported final

    def size(self) -> int:
        """Its bytes as the outbox counts them (ROW_BYTES; the metadata is ASCII JSON, one byte a character)."""
        return len(self.payload) + len(self.logits) + len(self.meta)


@dataclass(frozen=True)
class StoredSample:
    """What a restart needs of a stored sample to wait for its reply again: everything but the image, so restoring
    a backlog takes memory for its model outputs only, however large the images."""

    sample_id: str
    created: float
    m: int
    logits: bytes
    meta: str
    timed_out: int


@dataclass(frozen=True)
class Stored:
    """What `put` did: the ids it stored, and those of older samples it dropped to make room (the overflow policy),
    which nobody will answer now: the agent stops waiting for them."""

    stored: tuple[str, ...]
    dropped: tuple[str, ...] = ()


class Outbox:
    """Thread-safe; one connection guarded by a lock (SQLite serialises writers anyway)."""

    def __init__(self, path: Path, max_samples: int, overflow: str = "drop_oldest", *,
                 busy_timeout_s: float = 30.0, device_id: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """`device_id`: the device whose samples this file holds (recorded on first use). Another device's file
        is refused (OutboxOwnerError), not restored: two agents configured in one folder shared the default
        `outbox.sqlite`, and the second restored, timed out and reported the first one's samples as its own."""
        self.path = Path(path)
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.overflow = overflow
        self._count = self._bytes = 0  # stored samples and their bytes (ROW_BYTES), kept with every write
        self._incremental = False  # auto_vacuum=INCREMENTAL: free pages can be given back
        self._lock = threading.Lock()
        self._closed: tuple[int, int] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"outbox.path: cannot create the folder of {self.path} ({exc.filename}: "
                              f"{exc.strerror})") from None
        with self._failing("open"):
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=busy_timeout_s)
        self._db.text_factory = lenient_text
        try:
            with self._failing("open"):
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes on a new file (before its tables)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(SCHEMA)
                self._migrate()
                owner = self._claim(device_id) if device_id is not None else None
                if owner is None:  # another device's file is left as it is
                    self._convert()
                    self._recount()
                    self._incremental = int(self._db.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2
        except OutboxError:
            self._db.close()  # released, so a damaged file can be moved aside
            raise
        if owner is not None:
            self._db.close()
            raise owner_error(self.path, owner, str(device_id))

    def _claim(self, device_id: str) -> str | None:
        """Record `device_id` as the file's owner (a file from an older agent is adopted); the other owner if it
        is not this device's."""
        self._db.execute("INSERT OR IGNORE INTO owner (key, value) VALUES ('device_id', ?)", (device_id,))
        (owner,) = self._db.execute("SELECT value FROM owner WHERE key = 'device_id'").fetchone()
        return None if owner == device_id else str(owner)

    @contextmanager
    def _failing(self, doing: str) -> Iterator[None]:
        """sqlite3 errors as OutboxError naming the file and what was being done (callers catch one type);
        OutboxDamagedError when the file itself is damaged."""
        try:
            yield
        except sqlite3.Error as exc:
            raise error_type(exc)(f"outbox {self.path}: cannot {doing}: {exc}") from None

    def _migrate(self) -> None:
        """Outboxes written by older agents gain the columns added since (their rows keep working)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}
        for column, statement in MIGRATIONS.items():
            if column not in have:
                self._db.execute(statement)

    def _convert(self) -> None:
        """A file from an older agent (auto_vacuum off) gives no space back: converted now if it holds little (a
        VACUUM copies only the stored pages: seconds at most), else left as it is, reusing its free pages, until an
        open finds it drained. Best effort: a VACUUM refused (no room for its copy, a reader) changes nothing."""
        if int(self._db.execute("PRAGMA auto_vacuum").fetchone()[0]) != 0:
            return
        page_size, pages, free = (int(self._db.execute(f"PRAGMA {name}").fetchone()[0])
                                  for name in ("page_size", "page_count", "freelist_count"))
        if (pages - free) * page_size > CONVERT_MAX_BYTES:
            log.info("outbox %s predates auto_vacuum and holds %d MB: it is converted at an open that finds it "
                     "drained", self.path, (pages - free) * page_size >> 20)
            return
        try:
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # the copy leaves the log for the file
        except sqlite3.Error as exc:
            if error_type(exc) is OutboxDamagedError:
                raise
            log.warning("outbox %s: not converted to auto_vacuum (%s); it keeps working as it is", self.path, exc)

    def _recount(self) -> None:
        """Count the stored samples and their bytes (at open: whatever a crash left, the file is the truth)."""
        count, size = self._db.execute(f"SELECT COUNT(*), COALESCE(SUM({ROW_BYTES}), 0) FROM samples").fetchone()
        self._count, self._bytes = int(count), int(size)

    def put(self, rows: Sequence[OutboxRow]) -> Stored:
        """Store `rows` in one transaction; what was stored (overflow may refuse some) and dropped to make room."""
        stored: list[str] = []
        dropped: list[str] = []
        with self._lock, self._failing("store samples"), self._counted(), self._transaction():
            for row in rows:
                room = self._make_room(row.size())
                if room is None:
                    continue
                dropped.extend(room)
                self._insert(row)
                stored.append(row.sample_id)
        gone = set(dropped)
        return Stored(tuple(s for s in stored if s not in gone), tuple(dropped))

    def _insert(self, row: OutboxRow) -> None:
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO samples (sample_id, batch_id, created, frame_index, m, deadline, payload, logits,"
            f" meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {ROW_BYTES}",
            (row.sample_id, row.batch_id, row.created, row.frame_index, row.m, row.deadline, row.payload,
             row.logits, row.meta)).fetchall()
        if inserted:  # nothing returned: already stored
            self._count += 1
            self._bytes += int(inserted[0][0])

    def _make_room(self, size: int) -> list[str] | None:
        """Room for a sample of `size` bytes within both bounds: the ids of the oldest samples dropped for it, or
        None when it is refused (drop_newest, or larger than max_bytes on its own); either counted."""
        if size > self.max_bytes:
            self._bump("dropped_oversize")
            return None
        dropped: list[str] = []
        while self._count >= self.max_samples or self._bytes + size > self.max_bytes:
            if self.overflow == "drop_newest":
                self._bump("dropped_newest")
                return None
            oldest = self._db.execute(f"DELETE FROM samples WHERE seq = (SELECT MIN(seq) FROM samples) "
                                      f"RETURNING sample_id, {ROW_BYTES}").fetchall()
            if not oldest:  # nothing left to drop: the counts were off, the file is the truth
                self._recount()
                break
            sample_id, size_dropped = oldest[0]
            self._count, self._bytes = self._count - 1, self._bytes - int(size_dropped)
            self._bump("dropped_oldest")
            dropped.append(str(sample_id))
        return dropped

    def _delete(self, sample_ids: Iterable[str]) -> int:
        """Delete stored samples (inside a transaction), keeping the counts; how many were stored."""
        deleted = 0
        for sample_id in sample_ids:
            gone = self._db.execute(f"DELETE FROM samples WHERE sample_id = ? RETURNING {ROW_BYTES}",
                                    (sample_id,)).fetchall()
            if gone:
                deleted += 1
                self._count, self._bytes = self._count - 1, self._bytes - int(gone[0][0])
        return deleted

    @contextmanager
    def _counted(self) -> Iterator[None]:
        """The counts roll back with a write that fails (its transaction rolled back)."""
        saved = self._count, self._bytes
        try:
            yield
        except BaseException:
            self._count, self._bytes = saved
            raise

    def _give_back(self) -> None:
        """Return free pages to the card once they are most of the file and worth it (a drained backlog), and
        never while a steady stream would reuse them at once: releasing moves the pages still in use from the
        file's end, a write the card pays for. Best effort, after the deletes committed: a failure here costs only
        the space. A file without auto_vacuum cannot (see `_convert`)."""
        if not self._incremental:
            return
        try:
            page_size, pages, free = (int(self._db.execute(f"PRAGMA {name}").fetchone()[0])
                                      for name in ("page_size", "page_count", "freelist_count"))
            if free * page_size < GIVE_BACK_MIN_BYTES or free * 2 < pages:
                return
            self._db.executescript("PRAGMA incremental_vacuum;")  # steps to the end (`execute` frees one page)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # shrinks the file now, not later
        except sqlite3.Error as exc:
            log.warning("outbox %s: free space not given back (%s)", self.path, exc)

    def _bump(self, name: str, by: int = 1) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def ack(self, sample_ids: Iterable[str]) -> int:
        """Delete acknowledged samples; returns how many were still stored."""
        with self._lock:
            with self._failing("delete acknowledged samples"), self._counted(), self._transaction():
                deleted = self._delete(sample_ids)
            self._give_back()
        return deleted

    def settle(self, sample_id: str, result_json: str) -> bool:
        """The reply's final result replaces the sample, in one transaction; False if it was not stored (then
        nothing is journalled: a duplicate reply for a settled sample)."""
        with self._lock:
            with self._failing("settle a sample"), self._counted(), self._transaction():
                if not self._delete([sample_id]):
                    return False
                self._db.execute("INSERT OR REPLACE INTO settled (sample_id, result) VALUES (?, ?)",
                                 (sample_id, result_json))
            self._give_back()
        return True

    def emitted(self, sample_id: str) -> None:
        """Every sink has the settled result: drop it from the journal."""
        with self._lock, self._failing("drop an emitted result"):
            self._db.execute("DELETE FROM settled WHERE sample_id = ?", (sample_id,))

    def unemitted(self) -> list[tuple[str, str]]:
        """(sample id, result JSON) settled but maybe not emitted before a crash."""
        with self._lock, self._failing("read settled results"):
            return [(str(a), str(b)) for a, b in self._db.execute("SELECT sample_id, result FROM settled")]

    def drop_damaged(self, sample_ids: Sequence[str]) -> int:
        """Delete stored samples that cannot be decoded (no result can come of them, and kept they would be asked
        about for ever); counted with the other drops. Returns how many were deleted."""
        with self._lock:
            with self._failing("drop damaged samples"), self._counted(), self._transaction():
                deleted = self._delete(sample_ids)
                self._bump("dropped_damaged", deleted)
            self._give_back()
        return deleted

    def mark_timed_out(self, sample_ids: Sequence[str]) -> None:
        with self._lock, self._failing("mark samples timed out"), self._transaction():
            self._db.executemany("UPDATE samples SET timed_out = 1 WHERE sample_id = ?", [(i,) for i in sample_ids])

    def get(self, sample_id: str) -> OutboxRow | None:
        with self._lock, self._failing("read a sample"):
            row = self._db.execute(f"SELECT {self._columns()} FROM samples WHERE sample_id = ?",
                                   (sample_id,)).fetchone()
        return OutboxRow(*row) if row else None

    def pending(self, limit: int | None = None) -> list[OutboxRow]:
        """Stored samples, oldest first."""
        query = f"SELECT {self._columns()} FROM samples ORDER BY seq"
        with self._lock, self._failing("read samples"):
            rows = self._db.execute(query + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
        return [OutboxRow(*row) for row in rows]

    def restorable(self, chunk: int = 1000) -> Iterator[StoredSample]:
        """Every stored sample without its image, oldest first, read `chunk` at a time (the lock is not held
        between chunks): what a restart restores, in memory independent of the images' size."""
        after = 0
        while True:
            with self._lock, self._failing("read samples"):
                found = self._db.execute(
                    "SELECT seq, sample_id, created, m, logits, meta, timed_out FROM samples WHERE seq > ? "
                    "ORDER BY seq LIMIT ?", (after, chunk)).fetchall()
            for seq, *fields in found:
                after = seq
                yield StoredSample(*fields)
            if len(found) < chunk:
                return

    def index(self) -> list[tuple[str, str]]:
        """(sample id, batch id) of every stored sample, oldest first: a resend scan without the payloads, read
        from the narrow `samples_scan` index, so no image page (nor the leaf beside it) is read."""
        with self._lock, self._failing("read the sample index"):
            return [(str(a), str(b)) for a, b in
                    self._db.execute("SELECT sample_id, batch_id FROM samples ORDER BY seq").fetchall()]

    def rows(self, sample_ids: Sequence[str]) -> list[OutboxRow]:
        """The stored rows among `sample_ids`, oldest first (acknowledged ones are gone)."""
        if not sample_ids:
            return []
        marks = ", ".join("?" * len(sample_ids))
        with self._lock, self._failing("read samples"):
            found = self._db.execute(f"SELECT {self._columns()} FROM samples WHERE sample_id IN ({marks}) "
                                     "ORDER BY seq", tuple(sample_ids)).fetchall()
        return [OutboxRow(*row) for row in found]

    def check_intact(self) -> None:
        """SQLite's quick check (every page read once; an outbox is bounded, a few MB on a card): raises
        OutboxDamagedError on the first fault it names."""
        with self._lock, self._failing("check the file"):
            verdict = str(self._db.execute("PRAGMA quick_check(1)").fetchone()[0])
        if verdict != "ok":
            raise OutboxDamagedError(f"outbox {self.path}: damaged: {verdict}")

    def depth(self) -> int:
        with self._lock, self._failing("count samples"):
            if self._closed is not None:
                return self._closed[0]
            return self._depth()

    def _depth(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def stored_bytes(self) -> int:
        """The stored samples' bytes, as bounded by `max_bytes` (the file adds page overhead and its log)."""
        return self._bytes

    def dropped(self) -> int:
        with self._lock, self._failing("read the drop counters"):
            if self._closed is not None:
                return self._closed[1]
            return self._dropped()

    def _dropped(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(value), 0) FROM counters WHERE name LIKE 'dropped_%'")
        return int(row.fetchone()[0])

    def close(self) -> None:
        """Close the file; depth and drop counts stay readable (final telemetry after `Agent.stop`)."""
        with self._lock:
            if self._closed is None:
                try:
                    self._closed = (self._depth(), self._dropped())
                except sqlite3.Error:  # a broken file still gets closed; its counts are unknown
                    self._closed = (0, 0)
                self._db.close()

    @staticmethod
    def _columns() -> str:
        return "sample_id, batch_id, created, frame_index, m, deadline, payload, logits, meta, timed_out"

    def _transaction(self) -> Transaction:
        return Transaction(self._db)

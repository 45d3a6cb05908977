"""Debounce windows on the in-memory adapters: bursts, repeats, windows after windows, failures, races.

A fake clock drives everything; the fire queue keeps each message with its delivery time and the
tests deliver them (in order, twice, late) as SQS might.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pennflow.triggers.debounce import (
    OVERDUE_AFTER_SECONDS,
    UNOPENED_GRACE_SECONDS,
    Debouncer,
    FireMessage,
    FireOutcome,
    FireStatus,
    WindowNotStoredYet,
)
from pennflow.triggers.intake import IntakeResult, IntakeStatus, TriggerIntake
from pennflow.triggers.memory import MemoryFireQueue, MemoryTriggerStore, RecordingRunStarter
from pennflow.triggers.models import DatasetEvent, TriggerRule, TriggerRuleRequest, WindowStatus
from pennflow.triggers.store import MAX_WINDOW_PATHS

DATASET = "N:dataset:6f1c0a52-3d3b-4a4e-9a57-0d9d3f7a1c11"
OTHER_DATASET = "N:dataset:0b5e3d6e-9d7c-4f4b-8f0e-5f6a7b8c9d0e"
T0 = 1_750_000_000.0


def package(path: str) -> str:
    return f"N:package:{uuid.uuid5(uuid.NAMESPACE_URL, path)}"


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Node:
    """The trigger side of a node on in-memory adapters, with SQS played by ``deliver``."""

    clock: Clock = field(default_factory=Clock)
    store: MemoryTriggerStore = field(default_factory=MemoryTriggerStore)
    starter: RecordingRunStarter = field(default_factory=RecordingRunStarter)
    delivered: int = 0  # messages of queue.sent already delivered

    def __post_init__(self) -> None:
        self.queue = MemoryFireQueue(clock=self.clock)
        self.debouncer = Debouncer(self.store, self.queue, clock=self.clock)
        self.intake = TriggerIntake(self.store, self.debouncer, clock=self.clock)

    def rule(self, dataset: str = DATASET, **fields) -> TriggerRule:
        request = TriggerRuleRequest(
            dataset_id=dataset, workflow=fields.pop("workflow", "eeg-quality"), **fields
        )
        rule = TriggerRule.create(request, now=datetime.now(UTC), created_by="test")
        self.store.create_rule(rule)
        return rule

    def upload(
        self, event_id: str, *paths: str, dataset: str = DATASET, event_type: str = "files.uploaded"
    ) -> IntakeResult:
        event = DatasetEvent(
            event_id=event_id,
            event_type=event_type,
            dataset_id=dataset,
            files=[{"path": p, "package_id": package(p)} for p in paths],
        )
        return self.intake.accept(event)

    def deliver(self, message: FireMessage) -> FireOutcome:
        return self.debouncer.fire(message, self.starter)

    def deliver_due(self) -> list[FireOutcome]:
        """Deliver the messages whose delivery time has come (SQS between two uploads)."""
        outcomes = []
        while self.delivered < len(self.queue.sent):
            waiting = sorted(self.queue.sent[self.delivered :], key=lambda s: s.deliver_at)
            self.queue.sent[self.delivered :] = waiting
            if waiting[0].deliver_at > self.clock.now:
                break
            self.delivered += 1
            outcomes.append(self.deliver(waiting[0].message))
        return outcomes

    def run_until_quiet(self) -> list[FireOutcome]:
        """Advance the clock to each message's delivery time and deliver it, until none is left."""
        outcomes = []
        while self.delivered < len(self.queue.sent):
            waiting = sorted(self.queue.sent[self.delivered :], key=lambda s: s.deliver_at)
            self.queue.sent[self.delivered :] = waiting
            scheduled = self.queue.sent[self.delivered]
            self.clock.now = max(self.clock.now, scheduled.deliver_at)
            self.delivered += 1
            outcomes.append(self.deliver(scheduled.message))
        return outcomes


@pytest.fixture
def node() -> Node:
    return Node()


def run_paths(node: Node, index: int) -> set[str]:
    fired = [
        w for w in node.store.fired.values() if w.run_id == node.starter.by_key[node.starter.runs[index].key]
    ]
    return set(fired[0].paths)


# ------------------------------------------------------------------ bursts


def test_a_burst_of_twenty_uploads_opens_one_window_sends_one_message_and_starts_one_run(node: Node):
    rule = node.rule(debounce_seconds=60)
    results = []
    for i in range(20):
        results.append(node.upload(f"evt-{i}", f"sub-{i:02d}/eeg.edf"))
        node.clock.advance(2)
    assert [r.status for r in results] == [IntakeStatus.ACCEPTED] * 20
    assert [r.matched[0].opened_window for r in results] == [True] + [False] * 19
    assert len(node.store.pending) == 1 and len(node.queue.sent) == 1
    assert node.queue.sent[0].delay_seconds == 60
    window = node.store.pending[rule.rule_id]
    assert (window.event_count, window.file_count, len(window.paths)) == (20, 20, 20)

    outcomes = node.run_until_quiet()

    assert [o.status for o in outcomes] == [FireStatus.RESCHEDULED, FireStatus.STARTED]
    assert len(node.starter.runs) == 1
    run = node.starter.runs[0]
    assert run.workflow == "eeg-quality" and run.dataset_id == DATASET
    assert sorted(run.package_ids) == sorted(package(f"sub-{i:02d}/eeg.edf") for i in range(20))
    assert "20 file(s) in 20 upload event(s)" in run.reason
    assert node.store.pending == {}
    fired = node.store.fired[outcomes[-1].window_id]
    assert fired.status is WindowStatus.STARTED and fired.run_id == outcomes[-1].run_id


def test_the_run_starts_once_uploads_have_been_quiet_for_the_debounce(node: Node):
    node.rule(debounce_seconds=30)
    node.upload("a", "a.edf")
    node.clock.advance(25)
    node.upload("b", "b.edf")
    node.clock.advance(5)  # the message of the first event arrives: b came 5 s ago
    first = node.deliver(node.queue.sent[0].message)
    assert first.status is FireStatus.RESCHEDULED and node.queue.sent[-1].delay_seconds == 25
    assert node.starter.runs == []
    node.clock.advance(25)
    assert node.deliver(node.queue.sent[-1].message).status is FireStatus.STARTED
    assert len(node.starter.runs) == 1


def test_max_wait_bounds_a_window_that_never_goes_quiet(node: Node):
    node.rule(debounce_seconds=60, max_wait_seconds=300)
    for i in range(40):  # an upload every 30 s for 20 minutes
        node.upload(f"e{i}", f"f{i}.edf")
        node.clock.advance(30)
        node.deliver_due()
    node.run_until_quiet()
    fired = sorted(node.store.fired.values(), key=lambda w: w.opened_at)
    assert len(fired) == len(node.starter.runs) == 4  # 20 minutes of uploads, at most 5 minutes each
    assert all(w.fired_at - w.opened_at <= 300 + 1 for w in fired)
    assert sum(w.file_count for w in fired) == 40


def test_the_same_delivery_ten_times_starts_one_run(node: Node):
    node.rule()
    statuses = [node.upload("evt-same", "sub-01/eeg.edf").status for _ in range(10)]
    assert statuses == [IntakeStatus.ACCEPTED] + [IntakeStatus.DUPLICATE] * 9
    assert len(node.queue.sent) == 1
    node.run_until_quiet()
    assert len(node.starter.runs) == 1
    assert node.store.fired[node.queue.sent[0].message.window_id].event_count == 1


def test_a_burst_after_the_window_fired_starts_a_second_run(node: Node):
    node.rule(debounce_seconds=10)
    node.upload("a1", "first/a.edf")
    node.upload("a2", "first/b.edf")
    node.run_until_quiet()
    node.clock.advance(600)
    node.upload("b1", "second/a.edf")
    node.run_until_quiet()
    assert len(node.starter.runs) == 2
    assert run_paths(node, 0) == {"first/a.edf", "first/b.edf"}
    assert run_paths(node, 1) == {"second/a.edf"}
    assert node.starter.runs[0].key != node.starter.runs[1].key


def test_an_upload_while_the_window_closes_goes_to_the_next_window_not_lost(node: Node):
    node.rule(debounce_seconds=10)
    node.upload("a", "a.edf")
    node.clock.advance(10)
    node.run_until_quiet()
    node.upload("b", "b.edf")  # right after the close
    node.run_until_quiet()
    assert [run_paths(node, i) for i in range(2)] == [{"a.edf"}, {"b.edf"}]


# ------------------------------------------------------------------ matching


def test_glob_filtering_only_matching_files_count_and_no_match_starts_nothing(node: Node):
    rule = node.rule(file_glob="*.edf")
    ignored = node.upload("json-only", "sub-01/participants.json", "README.md")
    assert ignored.status is IntakeStatus.IGNORED and "no enabled trigger" in ignored.detail
    assert node.store.pending == {} and node.queue.sent == []

    mixed = node.upload("mixed", "sub-01/eeg/run-1.edf", "sub-01/eeg/run-1.json", "sub-02/RUN.EDF")
    assert mixed.matched[0].files == 1  # fnmatchcase: *.edf does not match .EDF
    node.run_until_quiet()
    assert node.starter.runs[0].package_ids == [package("sub-01/eeg/run-1.edf")]
    assert node.store.fired[mixed.matched[0].window_id].rule_id == rule.rule_id


def test_each_rule_of_the_dataset_gets_its_own_run_and_other_datasets_none(node: Node):
    edf = node.rule(file_glob="*.edf", workflow="eeg-quality")
    everything = node.rule(workflow="inventory", scope="dataset")
    node.rule(dataset=OTHER_DATASET, workflow="other")
    node.rule(enabled=False, workflow="disabled")
    result = node.upload("e", "x.edf", "y.csv")
    assert sorted(m.rule_id for m in result.matched) == sorted([edf.rule_id, everything.rule_id])
    node.run_until_quiet()
    runs = {r.workflow: r for r in node.starter.runs}
    assert set(runs) == {"eeg-quality", "inventory"}
    assert runs["eeg-quality"].package_ids == [package("x.edf")]
    assert runs["inventory"].package_ids == []  # scope dataset: the whole dataset


def test_other_event_types_start_nothing_and_claim_nothing(node: Node):
    node.rule()
    result = node.upload("evt-1", "a.edf", event_type="files.deleted")
    assert result.status is IntakeStatus.IGNORED and "files.deleted" in result.detail
    assert node.store.deliveries == {}


def test_an_upload_too_large_to_list_runs_on_the_whole_dataset(node: Node):
    node.rule()
    result = node.upload("big", *(f"f{i}.edf" for i in range(MAX_WINDOW_PATHS + 50)))
    node.upload("small", "late.edf")
    window = node.store.pending[result.matched[0].rule_id]
    assert window.truncated and window.file_count == MAX_WINDOW_PATHS + 51
    node.run_until_quiet()
    run = node.starter.runs[0]
    assert run.package_ids == [] and f"{MAX_WINDOW_PATHS + 51} file(s)" in run.reason


def test_a_full_window_keeps_counting_and_marks_itself_truncated(node: Node):
    node.rule()
    for i in range(MAX_WINDOW_PATHS // 50 + 1):
        node.upload(f"e{i}", *(f"batch{i}/f{j}.edf" for j in range(50)))
    window = next(iter(node.store.pending.values()))
    assert len(window.paths) == MAX_WINDOW_PATHS and window.truncated
    assert window.file_count == (MAX_WINDOW_PATHS // 50 + 1) * 50


# ------------------------------------------------------------------ repeated and failed firing


def test_a_duplicated_fire_message_starts_no_second_run(node: Node):
    node.rule(debounce_seconds=5)
    node.upload("e", "a.edf")
    message = node.queue.sent[0].message
    node.clock.advance(5)
    assert node.deliver(message).status is FireStatus.STARTED
    again = node.deliver(message)
    assert (
        again.status is FireStatus.ALREADY_FIRED
        and again.run_id == node.starter.by_key[node.starter.runs[0].key]
    )
    assert len(node.starter.runs) == 1


def test_a_failed_start_is_resumed_by_the_retried_message_with_the_same_key(node: Node):
    node.rule(debounce_seconds=5)
    node.upload("e", "a.edf")
    message = node.queue.sent[0].message
    node.clock.advance(5)
    node.starter.fail_with = RuntimeError("the node is unavailable")
    with pytest.raises(RuntimeError):
        node.deliver(message)
    fired = node.store.fired[message.window_id]
    assert fired.status is WindowStatus.FIRING and node.store.pending == {}
    node.upload("f", "b.edf")  # a new upload meanwhile opens a new window
    node.starter.fail_with = None
    resumed = node.deliver(message)
    assert resumed.status is FireStatus.RESUMED
    assert node.store.fired[message.window_id].status is WindowStatus.STARTED
    assert node.starter.runs[0].key.endswith(message.window_id)
    node.run_until_quiet()
    assert len(node.starter.runs) == 2


def test_a_refused_run_is_recorded_and_not_retried(node: Node):
    node.rule(debounce_seconds=5)
    node.upload("e", "a.edf")
    node.starter.refuse_with = "not_found: no workflow named 'eeg-quality'"
    outcomes = node.run_until_quiet()
    assert outcomes[-1].status is FireStatus.REFUSED
    fired = node.store.fired[outcomes[-1].window_id]
    assert fired.status is WindowStatus.REFUSED and "no workflow" in fired.reason
    assert node.deliver(node.queue.sent[0].message).status is FireStatus.ALREADY_FIRED
    assert node.starter.runs == []


def test_a_rule_deleted_or_disabled_before_the_window_closes_starts_nothing(node: Node):
    rule = node.rule(debounce_seconds=5)
    node.upload("e", "a.edf")
    node.store.delete_rule(rule.rule_id)
    outcomes = node.run_until_quiet()
    assert outcomes[-1].status is FireStatus.SKIPPED and node.starter.runs == []
    assert node.store.fired[outcomes[-1].window_id].reason == "the rule was deleted"


def test_an_upload_between_reading_and_closing_the_window_is_in_its_run(node: Node):
    node.rule(debounce_seconds=5)
    node.upload("e1", "a.edf")
    node.clock.advance(5)
    real_get = node.store.get_pending
    calls = []

    def get_then_race(rule_id):
        window = real_get(rule_id)
        if not calls:  # another Lambda adds a file after this one read the window
            calls.append(1)
            node.store.add_to_window(rule_id, _addition("e2", "late.edf"), now=window.last_event_at)
        return window

    node.store.get_pending = get_then_race
    outcome = node.deliver(node.queue.sent[0].message)
    assert outcome.status is FireStatus.STARTED
    assert node.store.fired[outcome.window_id].paths == {"a.edf", "late.edf"}


def test_a_message_of_a_window_that_lost_the_open_race_fires_nothing(node: Node):
    rule = node.rule(debounce_seconds=5)
    real_open = node.store.open_window

    def competitor_first(window):
        # Another event opened the rule's window between our add (none) and our open.
        competitor = window.model_copy(update={"window_id": "f" * 32, "first_event_id": "other"})
        real_open(competitor)
        return real_open(window)

    node.store.open_window = competitor_first
    result = node.upload("mine", "a.edf")
    assert result.matched[0].window_id == "f" * 32 and not result.matched[0].opened_window
    stray = node.queue.sent[0].message
    assert stray.window_id != "f" * 32 and node.store.pending[rule.rule_id].event_count == 2
    node.clock.advance(5)
    with pytest.raises(WindowNotStoredYet):  # within the grace it may still be being stored
        node.deliver(stray)
    node.clock.advance(UNOPENED_GRACE_SECONDS)
    assert node.deliver(stray).status is FireStatus.STRAY
    assert node.starter.runs == []


def test_a_window_whose_fire_message_was_lost_is_fired_by_the_next_event(node: Node):
    node.rule(debounce_seconds=10, max_wait_seconds=60)
    node.upload("e1", "a.edf")
    node.queue.sent.clear()  # its message went to the dead-letter queue
    node.clock.advance(60 + OVERDUE_AFTER_SECONDS + 1)
    node.upload("e2", "b.edf")
    assert [s.delay_seconds for s in node.queue.sent] == [0]
    node.run_until_quiet()
    assert len(node.starter.runs) == 1 and run_paths(node, 0) == {"a.edf", "b.edf"}


def test_a_failed_event_releases_its_claim_so_its_retry_is_not_a_duplicate(node: Node):
    node.rule()
    node.queue.fail_with = ConnectionError("sqs unreachable")
    with pytest.raises(ConnectionError):
        node.upload("evt", "a.edf")
    assert node.store.deliveries == {} and node.store.pending == {}
    node.queue.fail_with = None
    assert node.upload("evt", "a.edf").status is IntakeStatus.ACCEPTED


def test_a_claim_expires_after_its_ttl(node: Node):
    node.rule()
    node.upload("evt", "a.edf")
    node.clock.advance(node.intake.delivery_ttl_seconds + 1)
    assert node.upload("evt", "a.edf").status is IntakeStatus.ACCEPTED


def _addition(event_id: str, *paths: str):
    from pennflow.triggers.models import FileRef, WindowAddition

    return WindowAddition.of(event_id, [FileRef(path=p, package_id=package(p)) for p in paths])


# ------------------------------------------------------------------ any interleaving


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("upload"), st.integers(0, 1), st.integers(1, 3), st.booleans()
        ),  # dataset, files, repeat
        st.tuples(st.just("wait"), st.integers(1, 200)),
        st.tuples(st.just("deliver"), st.integers(0, 50), st.booleans()),  # which due message, twice?
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, debounce=st.integers(1, 120))
def test_every_uploaded_file_reaches_exactly_one_run_and_each_window_one_run(ops, debounce):
    node = Node()
    rules = [
        node.rule(DATASET, debounce_seconds=debounce),
        node.rule(OTHER_DATASET, debounce_seconds=debounce),
    ]
    expected: dict[str, set[str]] = {rule.rule_id: set() for rule in rules}
    windows_opened = 0
    for n, op in enumerate(ops):
        if op[0] == "upload":
            _, which, count, repeat = op
            paths = [f"e{n}/f{i}.edf" for i in range(count)]
            for _ in range(2 if repeat else 1):
                result = node.upload(f"evt-{n}", *paths, dataset=(DATASET, OTHER_DATASET)[which])
                windows_opened += sum(m.opened_window for m in result.matched)
            expected[rules[which].rule_id].update(paths)
        elif op[0] == "wait":
            node.clock.advance(op[1])
        else:
            due = [s for s in node.queue.sent if s.deliver_at <= node.clock.now]
            if due:
                message = due[op[1] % len(due)].message
                for _ in range(2 if op[2] else 1):
                    node.deliver(message)
    node.clock.advance(10_000)
    for scheduled in list(node.queue.sent):  # every message is delivered at least once, in the end
        node.deliver(scheduled.message)
    node.run_until_quiet()

    assert node.store.pending == {}
    assert len(node.starter.runs) == len(node.store.fired) == windows_opened
    got: dict[str, list[str]] = {rule.rule_id: [] for rule in rules}
    for fired in node.store.fired.values():
        assert fired.status is WindowStatus.STARTED
        got[fired.rule_id].extend(fired.paths)
    for rule_id, paths in got.items():
        assert sorted(paths) == sorted(expected[rule_id])  # each file in exactly one run

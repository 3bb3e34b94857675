"""The in-memory revocation state: jtis, the rule index, freshness and digests, without I/O."""

from __future__ import annotations

from typing import Any

from m1lib.revocation.state import RevocationState, RuleEntry, jti_hash


def test_rules_match_by_tool_subject_and_issue_time() -> None:
    state = RevocationState(max_staleness_s=10)
    cut = 1_000_000.0
    state.add_rules(
        [
            (1, RuleEntry("send_email", None, cut, 0)),
            (2, RuleEntry(None, "agent-7", cut, 0)),
            (3, RuleEntry("run_sql", "agent-8", cut, 0)),
        ]
    )

    def denied(tool: str, sub: str, iat: Any = cut - 1) -> bool:
        return state.denied_by_rule({"toolName": tool, "sub": sub, "iat": iat})

    assert denied("send_email", "anyone")
    assert not denied("send_email", "anyone", iat=cut)  # issued at the cut: not before it
    assert denied("web_search", "agent-7")
    assert denied("run_sql", "agent-8")
    assert not denied("run_sql", "agent-9")
    assert not denied("web_search", "agent-8")
    assert denied("send_email", "anyone", iat=None)  # cannot prove it is newer
    assert denied("send_email", "anyone", iat="yesterday")
    assert not denied("web_search", "anyone", iat=None)  # no rule could match


def test_the_latest_rule_for_a_key_wins_and_no_rules_deny_nothing() -> None:
    state = RevocationState(max_staleness_s=10)
    assert not state.denied_by_rule({"toolName": "send_email", "sub": "a", "iat": 0})
    assert state.add_rules([(1, RuleEntry("send_email", None, 100.0, 0))]) == 1
    assert state.add_rules([(1, RuleEntry("send_email", None, 999.0, 0))]) == 0  # id known: kept
    assert state.add_rules([(2, RuleEntry("send_email", None, 200.0, 0))]) == 1
    assert state.rule_count == 2
    assert state.denied_by_rule({"toolName": "send_email", "sub": "a", "iat": 150})
    assert not state.denied_by_rule({"toolName": "send_email", "sub": "a", "iat": 200})
    assert state.denied_by_rule({"toolName": "send_email", "sub": "a", "iat": True})  # not a time


def test_adding_jtis_reports_what_was_new() -> None:
    state = RevocationState(max_staleness_s=10)
    assert state.add_jti("a", 1)
    assert not state.add_jti("a", 2)
    assert state.jtis == {"a": 1}  # the first record's time is kept
    assert state.add_jtis([("a", 3), ("b", 4), ("c", 5), ("b", 6)]) == 2
    assert state.jtis == {"a": 1, "b": 4, "c": 5}


def test_replace_swaps_in_the_database_view_but_keeps_recent_local_entries() -> None:
    state = RevocationState(max_staleness_s=10)
    state.add_jtis([("purged", 100), ("recent", 500)])
    state.add_rules([(1, RuleEntry("t", None, 1.0, 100)), (2, RuleEntry(None, "s", 1.0, 500))])
    before = state.jtis
    removed, added = state.replace({"db-only": 50}, {}, keep_since_us=400)
    assert (removed, added) == (1, 1)
    assert state.jtis == {"db-only": 50, "recent": 500}
    assert before == {"purged": 100, "recent": 500}  # a reader's old reference is left intact
    assert state.rule_count == 1
    assert state.denied_by_rule({"toolName": "x", "sub": "s", "iat": 0})
    assert not state.denied_by_rule({"toolName": "t", "sub": "x", "iat": 0})
    assert state.replace({}, {}, keep_since_us=None) == (2, 0)
    assert (state.jtis, state.rule_count) == ({}, 0)


def test_freshness_runs_from_the_last_sync_for_the_staleness_bound() -> None:
    state = RevocationState(max_staleness_s=10)
    assert (state.loaded, state.is_fresh(), state.sync_age_s()) == (False, False, None)
    state.mark_synced()
    assert state.loaded
    assert state.is_fresh()
    assert state.last_sync is not None
    assert state.sync_age_s(now=state.last_sync + 4) == 4
    assert state.sync_age_s(now=state.last_sync - 1) == 0.0  # never negative
    state.mark_synced(at=state.last_sync - 11)  # a sync older than the bound
    assert not state.is_fresh()


def test_digest_covers_only_entries_written_before_the_bound() -> None:
    state = RevocationState(max_staleness_s=10)
    state.add_jtis([("a", 10), ("b", 20), ("c", 30)])
    state.add_rules([(4, RuleEntry("t", None, 1.0, 15)), (9, RuleEntry("u", None, 1.0, 30))])
    assert state.digest(30) == (2, jti_hash("a") + jti_hash("b"), 1, 4)
    assert state.digest(31) == (3, sum(map(jti_hash, "abc")), 2, 13)
    assert state.digest(0) == (0, 0, 0, 0)
    assert jti_hash("a") == jti_hash("a") < 2**60

"""FallbackPolicy: switching on latency/queue depth, probing, recovery with hysteresis, no flapping;
partial windows (live traces) on their own track under the same rules."""
from __future__ import annotations

import itertools

import pytest

from realtime.policy import (FALLBACK, PARTIAL, PRIMARY, UTTERANCE, FallbackPolicy, FallbackPolicyConfig,
                             LatencyObservation)

CFG = FallbackPolicyConfig(budget_ms=300, partial_budget_ms=200, window_size=10, min_samples=5, max_queue_depth=8,
                           probe_every_n=4, recover_after_n=3, recover_fraction=0.7)


def run(policy: FallbackPolicy, latency_of_primary, utterances: int, fallback_ms: float = 20.0, depth=0,
        kind: str = UTTERANCE):
    """Drive the policy like the engine does; returns the model used per item and the switches."""
    used, switches = [], []
    for i in range(utterances):
        route = policy.route(kind)
        latency = latency_of_primary(i) if route.model == PRIMARY else fallback_ms
        used.append(route.model)
        switches += policy.push(LatencyObservation(route.model, latency, depth(i) if callable(depth) else depth,
                                                   kind))
    return used, switches


def test_stays_on_primary_within_budget():
    policy = FallbackPolicy(CFG)
    used, switches = run(policy, lambda i: 250.0, 50)
    assert used == [PRIMARY] * 50 and switches == []


def test_switches_to_fallback_when_p95_exceeds_budget_and_back_after_recovery():
    policy = FallbackPolicy(CFG)
    slow_until = 8
    used, switches = run(policy, lambda i: 500.0 if i < slow_until else 100.0, 40)
    assert used[:5] == [PRIMARY] * 5
    assert switches[0].to_model == FALLBACK and "p95" in switches[0].reason and switches[0].p95_ms > 300
    assert used[5:8] == [FALLBACK] * 3          # fallback right after the 5th slow sample
    # Probes every 4th utterance while in fallback (from utterance 8 on the primary is fast
    # again): three fast probes bring the primary back.
    assert switches[1].to_model == PRIMARY and "recovered" in switches[1].reason
    assert len(switches) == 2
    assert used[-10:] == [PRIMARY] * 10
    probes = [i for i, model in enumerate(used) if model == PRIMARY and i >= 5]
    assert probes[:3] == [8, 12, 16]


def test_queue_depth_alone_triggers_the_fallback():
    policy = FallbackPolicy(CFG)
    used, switches = run(policy, lambda i: 50.0, 10, depth=lambda i: 12 if i == 2 else 0)
    assert switches[0].to_model == FALLBACK and "queue depth 12" in switches[0].reason
    assert used[3] == FALLBACK


def test_recovery_needs_latency_well_below_budget():
    """Probes between 0.7 x budget and the budget are not enough to come back (hysteresis)."""
    policy = FallbackPolicy(CFG)
    used, switches = run(policy, lambda i: 500.0 if i < 5 else 250.0, 200)
    assert [s.to_model for s in switches] == [FALLBACK]
    assert used.count(PRIMARY) == 5 + (200 - 5) // 4


def alternating(*values):
    """Latency per *primary call* cycling through values (probes see the alternation too)."""
    cycle = itertools.cycle(values)
    return lambda i: next(cycle)


def test_no_flapping_on_alternating_latencies():
    policy = FallbackPolicy(CFG)
    used, switches = run(policy, alternating(100.0, 500.0), 400)
    assert [s.to_model for s in switches] == [FALLBACK]
    assert used.count(FALLBACK) == 400 - 5 - (400 - 5) // 4   # only probes ran on the primary
    # Mostly fast with over-budget spikes: it leaves the primary at most a few times in 400
    # utterances instead of bouncing every few items.
    _, switches2 = run(FallbackPolicy(CFG), alternating(150.0, 150.0, 320.0), 400)
    assert len(switches2) <= 3


def test_partial_windows_follow_the_same_rules_against_their_own_budget():
    """Live windows at 250 ms: over the 200 ms partial budget (not the 300 ms utterance one), so
    the partial track falls back after min_samples, probes every 4th window and recovers on
    fast probes, while the utterances stay on the primary throughout."""
    policy = FallbackPolicy(CFG)
    used, switches = run(policy, lambda i: 250.0 if i < 8 else 100.0, 40, kind=PARTIAL)
    assert used[:5] == [PRIMARY] * 5 and used[5:8] == [FALLBACK] * 3
    assert [(s.kind, s.to_model) for s in switches] == [(PARTIAL, FALLBACK), (PARTIAL, PRIMARY)]
    assert "live windows" in switches[0].reason and "budget 200 ms" in switches[0].reason
    assert [i for i, m in enumerate(used) if m == PRIMARY and 5 <= i <= 16] == [8, 12, 16]
    assert used[-10:] == [PRIMARY] * 10
    assert policy.use_primary(UTTERANCE) and policy.route(UTTERANCE).model == PRIMARY
    # The same latencies on utterances stay within their 300 ms budget.
    assert run(FallbackPolicy(CFG), lambda i: 250.0, 40)[1] == []


def test_partial_windows_leave_the_primary_with_the_utterances():
    """A primary too slow for final results gets no live windows either, and its fallback
    period does not count towards the partial track's probes."""
    policy = FallbackPolicy(CFG)
    _, switches = run(policy, lambda i: 500.0, 5)
    assert [(s.kind, s.to_model) for s in switches] == [(UTTERANCE, FALLBACK)]
    assert not policy.use_primary(PARTIAL) and policy.peek(PARTIAL) == FALLBACK
    used, switches = run(policy, lambda i: 10.0, 20, kind=PARTIAL)
    assert used == [FALLBACK] * 20 and switches == []
    run(policy, lambda i: 10.0, 12)                       # fast probes: utterances recover
    assert policy.use_primary(UTTERANCE) and policy.use_primary(PARTIAL)
    assert policy.route(PARTIAL).model == PRIMARY


def test_disabled_primary_is_never_used_again():
    policy = FallbackPolicy(CFG)
    assert [(s.kind, s.to_model) for s in policy.disable_primary("crashed")] == [(UTTERANCE, FALLBACK),
                                                                                 (PARTIAL, FALLBACK)]
    used, switches = run(policy, lambda i: 10.0, 50)
    assert used == [FALLBACK] * 50 and switches == []
    assert run(policy, lambda i: 10.0, 50, kind=PARTIAL) == ([FALLBACK] * 50, [])
    assert FallbackPolicy(CFG, primary_available=False).route().model == FALLBACK
    with pytest.raises(ValueError, match="unknown item kind"):
        FallbackPolicy(CFG).route("sentence")


def test_deterministic_and_reset():
    sequence = [500.0 if i % 7 < 3 else 90.0 for i in range(120)]
    first = run(FallbackPolicy(CFG), lambda i: sequence[i], 120)
    policy = FallbackPolicy(CFG)
    run(policy, lambda i: 900.0, 30)
    policy.reset()
    assert policy.use_primary()
    assert run(policy, lambda i: sequence[i], 120) == first


@pytest.mark.parametrize("kwargs", [{"budget_ms": 0}, {"partial_budget_ms": float("nan")}, {"min_samples": 30}, {"recover_fraction": 1.0},
                                    {"probe_every_n": 0}, {"max_queue_depth": 0}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        FallbackPolicyConfig(**kwargs)


def test_a_deep_queue_blocks_recovery_even_with_fast_probes():
    """Fast probes alone must not bring the primary back while utterances pile up: recovery needs
    the queue at most half the depth limit (8 // 2 = 4)."""
    policy = FallbackPolicy(CFG)
    used, switches = run(policy, lambda i: 500.0, 5)
    assert [s.to_model for s in switches] == [FALLBACK]
    used, switches = run(policy, lambda i: 50.0, 40, depth=5)          # fast probes, deep queue
    assert switches == [] and used.count(PRIMARY) == 10                 # only the probes ran on the primary
    used, switches = run(policy, lambda i: 50.0, 12, depth=4)           # the queue drained to the limit
    assert [s.to_model for s in switches] == [PRIMARY] and "recovered" in switches[0].reason

"""Rollback that sticks: the lists go back, and so does the policy that the next night scores with.

Moving the live pointer alone is undone by the next night: it scores with the registry's champion, which
still names the policy that made the rolled-back lists. So a rollback also makes the target snapshot's
policy the champion again (its ``nightrec-policy`` version, and a learned pair's model aliases), and marks
the rolled-back policy's lists as rejected, so the gate cannot make them live again
(``scoring.policies.reject``): a new model still replaces the champion when it wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nightrec import registry
from nightrec.io.store import open_store
from nightrec.publish import pointer, snapshot
from nightrec.publish.channels import DEFAULT_CHANNEL, open_channel
from nightrec.scoring import policies
from nightrec.settings import Settings
from schemas.manifest import LivePointer


@dataclass(frozen=True)
class RollbackResult:
    live: LivePointer
    restored: str | None  # "ease (nightrec-policy v3)": the policy made champion again; None: none recorded
    rejected: list[str] = field(default_factory=list)  # what was marked rejected ("nightrec-policy v5 ...")
    note: str = ""  # why nothing was rejected, where nothing was


def rollback(settings: Settings, to: str | None = None, channel: str = DEFAULT_CHANNEL) -> RollbackResult:
    """Move the live pointer back (to ``to``, or the live pointer's ``previous``), then the champion with it.

    The pointer moves first, with its conditional write: if it fails nothing else changes. A target or a
    rolled-back snapshot from before policies were recorded has no policy version: the pointer still moves,
    and the result says the registry was left as it was. On another ``channel`` (an A/B variant's lists) only
    that channel's pointer moves: the champion is the default channel's.
    """
    if channel != DEFAULT_CHANNEL:
        live = pointer.rollback(open_channel(settings.store, channel), to)
        return RollbackResult(
            live, None, [], f"channel {channel}: the champion policy is the default channel's"
        )
    store = open_store(settings.store)
    current = pointer.read_live(store)
    rolled_back = snapshot.load_manifest(store, current[0].manifest_key) if current else None
    live = pointer.rollback(store, to)
    target = snapshot.load_manifest(store, live.manifest_key)
    registry.connect(settings)
    target_version = (target.policy or {}).get("version")
    restored = None
    if target_version:
        policies.promote(str(target_version))
        restored = f"{target.policy.get('name')} ({policies.POLICY_MODEL} v{target_version})"
    old_version = ((rolled_back.policy if rolled_back else None) or {}).get("version")
    if not old_version:
        return RollbackResult(live, restored, [], "the rolled-back snapshot records no policy version")
    if _same_models(rolled_back.policy, target.policy or {}):
        # The same models made both lists: rejecting them would reject what is live now.
        return RollbackResult(live, restored, [], "the same learned models made both snapshots")
    reason = (
        f"rolled back: snapshot {rolled_back.ds} generation {rolled_back.generation} replaced by "
        f"{target.ds} generation {target.generation}"
    )
    rejected = policies.reject(str(old_version), rolled_back.ds.isoformat(), reason)
    return RollbackResult(live, restored, rejected)


def _same_models(a: dict, b: dict) -> bool:
    if a.get("kind") != "learned" or b.get("kind") != "learned":
        return False
    pa_, pb = a.get("params") or {}, b.get("params") or {}
    return all(str(pa_.get(k)) == str(pb.get(k)) for k in ("retrieval", "ranking"))

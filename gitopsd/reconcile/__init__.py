"""The reconcile pass: source → manifest → diff → rollouts → report, written once.

Modules, one job each:

- `pipeline`: the pass as an ordered list of steps with one signature (`STEPS`), its
  context (`Pass`) and the ports its callers differ in (`PassPorts`).
- `policy`: every decision about a function (holds, dependsOn, drift and selfHeal, approval
  drafts, unreachable nodes, superseded and stalled rollouts), as pure functions.
- `reconciler`: `Reconciler`, the settings a pass runs with and what it does to one
  function (roll out, prune, retire).
- `targets`: the nodes a rollout goes to and the RolloutSpec of a desired function.
- `outcomes`: the notes a pass publishes (refused commit, pending, final) and the last
  applied commit.
- `summary`: a rollout's row and journal read back as a FunctionResult.
- `results`: ReadResult, FunctionResult, SyncReport.
- `keys`: the store keys the pass writes for `gitopsd status`.

`Reconciler.read` answers "what would change" (`gitopsd diff`); `Reconciler.sync` runs the
pass (`gitopsd sync`, the Python API); the daemon runs the same steps with its own ports. A
bad commit is an outcome, not a crash: it gets a failure note and nothing of it is applied.
"""

from gitopsd.reconcile.keys import retry_key, waiting_key
from gitopsd.reconcile.pipeline import STEPS, Pass, PassPorts, run_steps
from gitopsd.reconcile.policy import dependency_order, waiting_for
from gitopsd.reconcile.reconciler import Reconciler
from gitopsd.reconcile.results import FunctionResult, ReadResult, SyncReport
from gitopsd.reconcile.summary import ended_paused, summarize_rollout
from gitopsd.reconcile.targets import build_spec, limits_only_nodes, previous_version

__all__ = [
    "STEPS",
    "FunctionResult",
    "Pass",
    "PassPorts",
    "ReadResult",
    "Reconciler",
    "SyncReport",
    "build_spec",
    "dependency_order",
    "ended_paused",
    "limits_only_nodes",
    "previous_version",
    "retry_key",
    "run_steps",
    "summarize_rollout",
    "waiting_for",
    "waiting_key",
]

"""Proposal mode (``retrain.mode: pull-request``): refreshed data as a pull request.

Instead of training and promoting, a retrain of a repository in proposal mode
hands the DVC pointer files its refresh step updated (``dvc update`` of each
import, see ``data/imports.py``) to a :class:`Proposer`, which commits them to
one standing branch and opens (or updates) a pull request. That pull request
is evaluated like any other, and merging it delivers the new data. The
GitHub side is ``service/proposals.py``; nothing here talks to GitHub, so the
CLI, which has no GitHub App, gets a clear error instead of a proposal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modelci.data.changes import pointer_outs
from modelci.data.imports import import_pointer
from modelci.errors import ConfigError, DataFetchError

if TYPE_CHECKING:
    from modelci.retrain.result import RetrainResult
    from modelci.runner.checkout import Mirror

__all__ = [
    "NOTHING_TO_PROPOSE",
    "PROPOSAL_TITLE",
    "Proposal",
    "Proposer",
    "import_source",
    "no_proposer_error",
    "proposal_body",
    "propose_refreshed",
]

PROPOSAL_TITLE = "Retrain: data refreshed"
NOTHING_TO_PROPOSE = "nothing to propose: no import's source changed"
MAX_LISTED = 50  # imports listed in the body; a longer list ends with a count


@dataclass(frozen=True)
class Proposal:
    """The pull request a proposal opened or updated.

    ``updated``: an open pull request from the branch existed and was reused
    (its branch moved to ``commit_sha``, or stayed when the content was the same).
    """

    number: int
    url: str
    branch: str
    commit_sha: str
    updated: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "url": self.url,
            "branch": self.branch,
            "commit_sha": self.commit_sha,
            "updated": self.updated,
        }


class Proposer(Protocol):
    """Commits ``files`` (repository path → new content) on top of ``base_sha`` and
    proposes them as a pull request into ``base_branch``."""

    def propose(
        self,
        repo: str,
        *,
        base_sha: str,
        base_branch: str,
        files: Mapping[str, bytes],
        title: str,
        body: str,
    ) -> Proposal: ...


def no_proposer_error() -> ConfigError:
    """Proposal mode where no GitHub App can open the pull request (the CLI)."""
    return ConfigError(
        "retrain.mode is pull-request in modelci.yaml: this retrain would commit the "
        "refreshed DVC pointers and open a pull request, which needs the server's GitHub App",
        hint="queue the retrain on the server (POST /api/repositories/{owner}/{name}/retrain), "
        "or run `modelci retrain --promote` to train and promote here instead",
    )


def import_source(text: bytes) -> str | None:
    """Where an import's data comes from, as its ``.dvc`` file says (read as
    ``data.imports`` reads it): the URL of ``dvc import-url``, or ``<repo url>:<path>`` of
    ``dvc import``; None if it is not an import or cannot be read."""
    try:
        pointer = import_pointer("import.dvc", text)
    except DataFetchError:
        return None
    return pointer.source if pointer is not None else None


def _hashes(path: str, text: bytes | None) -> dict[str, str | None]:
    try:
        return {out.path: out.md5 for out in pointer_outs(path, text)} if text else {}
    except ValueError:
        return {}


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def proposal_body(
    files: Mapping[str, bytes],
    before: Mapping[str, bytes | None],
    *,
    base_sha: str,
    sources: Mapping[str, str] | None = None,
) -> str:
    """The pull request's description: each refreshed import, its source and its
    output's hash before → after. ``before`` holds each file as the base commit has it;
    ``sources`` (from the refresh) wins over the source read from the file."""
    lines = [
        f"modelci refreshed the DVC imports of `{base_sha[:12]}`: their sources changed. "
        "This pull request updates the pointers; it is evaluated like any other, and "
        "merging it delivers a model trained on the new data.",
        "",
        "| pointer | source | output | before | after |",
        "| --- | --- | --- | --- | --- |",
    ]
    for path in sorted(files)[:MAX_LISTED]:
        source = (sources or {}).get(path) or import_source(files[path]) or "?"
        old, new = _hashes(path, before.get(path)), _hashes(path, files[path])
        for out in sorted({*old, *new}) or [""]:
            was, now = old.get(out), new.get(out)
            lines.append(
                f"| {_code(path)} | {_code(source)} | {_code(out) if out else '-'} | "
                f"{_code((was or 'none')[:12])} | {_code((now or 'none')[:12])} |"
            )
    if len(files) > MAX_LISTED:
        lines.append(f"\n…and {len(files) - MAX_LISTED} more pointer files.")
    return "\n".join(lines) + "\n"


def propose_refreshed(
    result: RetrainResult, mirror: Mirror, proposer: Proposer, say: Callable[[str], None]
) -> None:
    """Proposal mode for a resolved retrain: the pointers the refresh step updated
    (``result.refreshed``) as a pull request into the retrained branch; decision
    "proposed", or "skipped" when no import changed. Nothing trains either way."""
    sha = result.sha
    assert sha is not None
    if not result.refreshed:
        result.decision = "skipped"
        result.reasons.append(NOTHING_TO_PROPOSE)
        say(f"skipped: {NOTHING_TO_PROPOSE}")
        return
    before = {path: mirror.read_file(sha, path) for path in result.refreshed}
    say("proposing the refreshed data as a pull request")
    proposal = proposer.propose(
        result.repo,
        base_sha=sha,
        base_branch=result.ref,
        files=dict(result.refreshed),
        title=PROPOSAL_TITLE,
        body=proposal_body(
            result.refreshed,
            before,
            base_sha=sha,
            sources={path: found[0] for path, found in result.refreshed_from.items()},
        ),
    )
    result.proposal, result.decision = proposal, "proposed"
    verb = "updated" if proposal.updated else "opened"
    result.reasons.append(
        f"retrain.mode is pull-request: the refreshed data was proposed in pull request "
        f"#{proposal.number} ({verb}, branch {proposal.branch}) instead of training; "
        "merging it delivers the model"
    )
    say(f"proposed: pull request #{proposal.number}")

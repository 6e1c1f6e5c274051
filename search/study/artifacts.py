"""Each finished trial's weights as an Optuna artifact, so export never has to retrain.

The store is a FileSystemArtifactStore next to the database (``studies/fmnist.db`` ->
``studies/fmnist-artifacts/``), which optuna-dashboard also serves with ``--artifact-dir``.
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.trial import FrozenTrial

from fmnist.errors import UsageError, first_line

from search.study import optuna_api, record

if TYPE_CHECKING:  # torch loads where weights are written or read: the dashboard starts without it
    import torch


def artifact_dir(storage_url: str, explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if storage_url.startswith("sqlite:///") and storage_url not in ("sqlite:///", "sqlite:///:memory:"):
        db = Path(storage_url[len("sqlite:///"):])
        return db.with_name(db.stem + "-artifacts")
    return Path("studies") / "artifacts"


class WeightsStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, knowing its folder (to tidy up after a failed write)."""

    def __init__(self, folder: Path):
        super().__init__(str(folder))
        self.folder = Path(folder)


def check_folder(folder: Path) -> None:
    """Refuse an --artifact-dir that cannot be a folder, before anything is created."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--artifact-dir {folder}: is a file, not a folder")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--artifact-dir {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"--artifact-dir {folder}: {probe} is not writable")


def open_store(folder: Path) -> WeightsStore:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--artifact-dir {folder}: cannot create ({e.strerror or e})") from None
    return WeightsStore(folder)


def check_shared(study: optuna.Study, folder: Path) -> None:
    """Every worker of a study writes weights to one folder, where export-best finds them all.

    The first worker leaves a token in the study and a file of that name in its folder
    (``mark_shared``); a worker whose folder lacks the file is refused (on another machine without
    the shared mount, say) before it writes or trains anything."""
    known = record.WeightsFolder.from_dict(optuna_api.study_system_attrs(study).get(record.WEIGHTS_FOLDER))
    if known is not None and not (folder / known.file_name()).exists():
        raise UsageError(f"--artifact-dir {folder}: study {study.study_name!r} keeps its weights in "
                         f"{known.where} (where its first worker wrote them), not here; give every "
                         f"worker that folder (a mount shared by all machines) so that export-best finds "
                         f"all of them")


def mark_shared(study: optuna.Study, store: WeightsStore) -> None:
    if record.WEIGHTS_FOLDER in optuna_api.study_system_attrs(study):
        return
    mine = record.WeightsFolder(uuid.uuid4().hex, f"{socket.gethostname()}:{store.folder.resolve()}")
    try:
        (store.folder / mine.file_name()).touch()
    except OSError as e:
        raise UsageError(f"--artifact-dir {store.folder}: cannot write ({e.strerror or e})") from None
    optuna_api.set_study_system_attr(study, record.WEIGHTS_FOLDER, mine.to_dict())
    check_shared(study, store.folder)  # two first workers at once: the last token written is the study's


def store_weights(model: torch.nn.Module, store: WeightsStore, trial: optuna.Trial | FrozenTrial,
                  storage=None) -> str:
    """The model's weights as an artifact listed under ``trial`` (a FrozenTrial needs its ``storage``)."""
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial-{trial.number}-weights.pt"
        try:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        except (OSError, RuntimeError) as e:  # a full disk: torch's writer says basic_ios::clear
            raise UsageError(f"trial {trial.number}: cannot write its weights ({first_line(e)}); "
                              f"is the disk full?") from None
        # A PyTorch state_dict (a zip archive); Python's mimetypes would call .pt a SNES page table.
        before = set(store.folder.iterdir())
        try:
            return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                   storage=storage, mimetype="application/octet-stream")
        except OSError as e:
            for partial in set(store.folder.iterdir()) - before:  # only what this upload began to write
                partial.unlink(missing_ok=True)
            raise UsageError(f"trial {trial.number}: cannot store its weights in the artifact folder "
                              f"({first_line(e)})") from None


def read_state_dict(path: Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """A state_dict file, loaded safely; a corrupt or foreign file, or one larger than
    ``max_bytes`` (what the model it is for can hold), is one line naming it."""
    import torch
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise UsageError(f"{path}: {size:,} bytes, more than the weights of its model can take "
                             f"({max_bytes:,}); not this model's weights")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise UsageError(f"{path}: not a readable weights file ({first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: not a state_dict of tensors")
    return state


def load_weights(trial: optuna.trial.FrozenTrial, store: FileSystemArtifactStore) -> dict[str, torch.Tensor]:
    artifact_id = trial.user_attrs.get(record.WEIGHTS)
    if artifact_id is None:
        raise UsageError(f"trial {trial.number} has no stored weights (run with --retrain to train it again)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except Exception as e:  # a missing artifact folder or file: say which trial, where, and who wrote it
            where = getattr(store, "folder", "the artifact store")
            host = record.worker_of(trial)[0] or "another worker"
            raise UsageError(f"trial {trial.number}: its weights (artifact {artifact_id}) are not in {where} "
                             f"({type(e).__name__}); {host} trained it: point --artifact-dir at the folder its "
                             f"worker wrote to (a folder shared by all workers), or use --retrain") from None
        return read_state_dict(path)

